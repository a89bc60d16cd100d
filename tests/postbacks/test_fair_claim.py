"""The fair claim (issue 20): a host at its in-flight cap, hanging, or held by its breaker has
none of its rows claimed; rows are taken round robin across hosts with room, oldest due first
within each. Real PostgreSQL, Redis and HTTP receivers on 127.0.0.1."""

import math
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from postbacks import dispatch, fairness
from postbacks.dispatch import Lane, rows
from postbacks.dispatch.rows import DispatchConfig
from postbacks.models import Postback, PostbackAttempt
from publishers.models import CallbackTemplate
from tests.api.conftest import client_for
from tests.postbacks.test_dispatch import answer_when, make_postbacks, own_redis_keys

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def redis_keys(settings, request):
    with own_redis_keys(settings, request.node.name) as prefix:
        yield prefix


def host_rows(template, link, host: str, count: int, *, due_at) -> list[Postback]:
    """`count` due rows whose URL points at `host` (nothing is sent in the claim tests)."""
    made = make_postbacks(
        template, link, count, url=lambda n, event_id: f"http://{host}/cb?n={n}&e={event_id}"
    )
    for n, row in enumerate(made):
        row.next_attempt_at = due_at + timedelta(milliseconds=n)
    Postback.objects.bulk_update(made, ["next_attempt_at"])
    return made


def claim(limit: int = 100, lane: Lane = Lane.FIRST) -> list[rows.Claimed]:
    """One claim as a dispatch task makes it: the gate's view of the hosts, then the lease."""
    conf = DispatchConfig.from_settings()
    now = timezone.now()
    limits = dispatch.claim_limits(fairness.get_gate().rooms(), conf, lane, now)
    return rows.claim_batch(
        lane=lane,
        limit=limit,
        now=now,
        lease=60,
        quotas=limits.quotas,
        default_quota=limits.default,
    )


def hosts_of(claimed: list[rows.Claimed]) -> list[str]:
    return [c.url.split("/")[2] for c in claimed]


def test_a_claim_never_leases_a_row_of_a_host_at_its_cap_or_held_by_its_breaker(
    template, link, settings
):
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT = 4
    settings.POSTBACKS_BREAKER_FAILURES = 3
    long_ago = timezone.now() - timedelta(hours=1)
    # The three troubled hosts' rows are the oldest: an oldest-first claim would take them.
    for host in ("full.example:80", "broken.example:80", "hanging.example:80"):
        host_rows(template, link, host, 30, due_at=long_ago)
    healthy = host_rows(template, link, "ok.example:80", 5, due_at=timezone.now())
    gate = fairness.get_gate()
    # At its cap for a second already: not answering within moments.
    full = gate.admit({"full.example:80": 4}, cap=4, now=time.time() - 1)
    assert full["full.example:80"].granted == 4
    gate.settle({"broken.example:80": fairness.HostTally(failed=3)})
    # One request out for longer than POSTBACKS_HOST_SLOW_SECONDS: the host hangs.
    gate.admit({"hanging.example:80": 1}, cap=4, now=time.time() - 3)
    assert gate.states() == {"broken.example:80": "open"}

    claimed = claim()
    assert sorted(c.pk for c in claimed) == sorted(p.pk for p in healthy)
    # The held rows stay pending, due as they were, with no attempt counted.
    held = Postback.objects.exclude(pk__in=[p.pk for p in healthy])
    assert set(held.values_list("status", "attempts", "leased_until")) == {("pending", 0, None)}
    assert held.filter(next_attempt_at__gt=long_ago + timedelta(seconds=1)).count() == 0


def test_a_host_with_some_room_gets_rows_for_its_free_slots_only(template, link, settings):
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT = 4
    settings.POSTBACKS_HOST_CLAIM_PER_SLOT = 1
    made = host_rows(template, link, "busy.example:80", 10, due_at=timezone.now())
    fairness.get_gate().admit({"busy.example:80": 3}, cap=4)
    claimed = claim()
    assert [c.pk for c in claimed] == [made[0].pk], "one free slot: its oldest row"


def test_a_host_at_its_cap_that_answers_within_moments_still_gets_rows(template, link):
    """Its slots come back within milliseconds: rows claimed now wait in the worker for them
    (handed over from its finishing requests), which keeps a busy endpoint's throughput."""
    made = host_rows(template, link, "quick.example:80", 5, due_at=timezone.now())
    fairness.get_gate().admit({"quick.example:80": 4}, cap=4)
    assert sorted(c.pk for c in claim()) == sorted(p.pk for p in made)


def test_an_open_breaker_past_its_cool_down_lets_exactly_one_probe_row_be_claimed(
    template, link, settings
):
    settings.POSTBACKS_BREAKER_FAILURES = 1
    settings.POSTBACKS_BREAKER_COOLDOWN_SECONDS = 1
    made = host_rows(template, link, "down.example:80", 10, due_at=timezone.now())
    fairness.get_gate().settle(
        {"down.example:80": fairness.HostTally(failed=1)}, now=time.time() - 2
    )
    assert [c.pk for c in claim()] == [made[0].pk]


def test_the_claim_is_round_robin_across_hosts_oldest_first_within_each(template, link):
    start = timezone.now() - timedelta(minutes=10)
    # a's rows are all older than b's, b's older than c's.
    made = {
        host: host_rows(template, link, host, 10, due_at=start + timedelta(minutes=n))
        for n, host in enumerate(("a.example:80", "b.example:80", "c.example:80"))
    }
    claimed = claim(limit=7)
    by_host = {host: [c.pk for c in claimed if hosts_of([c])[0] == host] for host in made}
    # Each host's turn comes round: 3, 2, 2 (the oldest head goes first), never 7 of a.
    assert {h: len(v) for h, v in by_host.items()} == {
        "a.example:80": 3,
        "b.example:80": 2,
        "c.example:80": 2,
    }
    for host, pks in by_host.items():
        assert pks == [p.pk for p in made[host][: len(pks)]], "oldest due first within a host"


def test_one_hosts_thousand_due_rows_cost_another_host_nothing(template, link, settings):
    settings.POSTBACKS_HOST_CLAIM_PER_SLOT = 8
    host_rows(template, link, "flood.example:80", 1000, due_at=timezone.now() - timedelta(hours=1))
    late = host_rows(template, link, "late.example:80", 3, due_at=timezone.now())
    claimed = claim(limit=200)
    assert {p.pk for p in late} <= {c.pk for c in claimed}
    # The flood's quota: its cap's worth of slots, a few rows each.
    assert hosts_of(claimed).count("flood.example:80") == 4 * 8


def test_concurrent_claims_share_hosts_without_passing_any_hosts_quota(template, link, settings):
    from django.db import connections

    settings.POSTBACKS_HOST_CLAIM_PER_SLOT = 1
    hosts = [f"h{n}.example:80" for n in range(30)]
    for host in hosts:
        host_rows(template, link, host, 10, due_at=timezone.now())
    claims: list[list[rows.Claimed]] = []
    barrier = threading.Barrier(3)

    def claimer() -> None:
        try:
            barrier.wait()
            claims.append(claim(limit=50))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    everything = [c.pk for mine in claims for c in mine]
    assert len(everything) == len(set(everything)), "no row leased twice"
    per_host = [hosts_of([c])[0] for mine in claims for c in mine]
    # Three claims racing may each take a host's quota (the gate's count is read before the
    # lease), never more than that each.
    assert max(per_host.count(h) for h in hosts) <= 3 * 4


@pytest.mark.django_db(transaction=True)
def test_a_hanging_endpoints_rows_are_all_delivered_once_it_answers_again(link, receiver, settings):
    settings.POSTBACKS_TOTAL_TIMEOUT = 0.5
    settings.POSTBACKS_CONNECT_TIMEOUT = 0.5
    settings.POSTBACKS_BREAKER_COOLDOWN_SECONDS = 0.3
    settings.POSTBACKS_BREAKER_MAX_COOLDOWN_SECONDS = 0.3
    settings.POSTBACKS_HOST_SLOW_SECONDS = 0.2
    # A time-out's retry comes a second later, so a row probed while the host hung is due again
    # soon after it answers (the default's 5 s and then 5 min outlast this test when a loaded
    # machine stretches the hanging phase past a row's first retry).
    settings.POSTBACKS_RETRY_SCHEDULE = [1] * 9
    fairness.reset_gate()
    hanging = threading.Event()
    hanging.set()
    answered: list[str] = []

    def respond(handler) -> None:
        if hanging.is_set():
            time.sleep(1.5)  # past the deadline: the client has gone
            return
        answered.append(handler.headers["Roundtrip-Event-Id"])
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    receiver.responder = respond
    template = CallbackTemplate.objects.create(
        publisher=link.publisher, url_template=f"{receiver.base_url}/cb?e=[event_id]"
    )
    made = make_postbacks(template, link, 40)
    # Hanging: time-outs, then the breaker holds the host to one probe at a time.
    started = timezone.now()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        dispatch.drain(Lane.RETRY, wait=math.inf, kicks=False)
        time.sleep(0.05)
    assert fairness.get_gate().states().get(f"127.0.0.1:{receiver.port}") in ("open", "half")
    # Counted over the phase's first 3 s: a drain that a loaded machine slows runs past them.
    tried = PostbackAttempt.objects.filter(
        error_kind="timeout", started_at__lt=started + timedelta(seconds=3)
    ).count()
    assert 1 <= tried < 40, "time-outs cut it down to probes: most rows were never sent"
    assert not Postback.objects.filter(status="failed").exists()

    hanging.clear()
    # Answering again, and well within our deadline even when the machine is loaded: a time-out
    # now would be a request the receiver answered after we gave up (counted twice below).
    settings.POSTBACKS_TOTAL_TIMEOUT = 5
    deadline = time.monotonic() + 30
    while Postback.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        dispatch.drain(Lane.RETRY, wait=math.inf, kicks=False)
        time.sleep(0.05)
    assert dispatch.get_recorder().wait_idle(10)
    assert set(Postback.objects.values_list("status", flat=True)) == {"succeeded"}
    # Each delivered exactly once: one answered request and one success per postback.
    assert sorted(answered) == sorted(p.event_id for p in made)
    assert PostbackAttempt.objects.filter(outcome="success").count() == 40


def test_the_deliveries_page_says_when_the_publishers_endpoint_is_slow(
    owner_client, template, link, settings
):
    from django.urls import reverse

    settings.POSTBACKS_BREAKER_FAILURES = 1
    waiting = host_rows(template, link, "slow.example:80", 2, due_at=timezone.now())
    fairness.get_gate().settle({"slow.example:80": fairness.HostTally(failed=1, hung=1)})
    # Another tenant's endpoint, held too, is none of this publisher's business.
    fairness.get_gate().settle({"elsewhere.example:80": fairness.HostTally(failed=1, hung=1)})
    page = owner_client.get(reverse("deliveries"), {"state": "pending"}).content.decode()
    assert 'id="slow-endpoints"' in page
    assert "slow.example:80</code> is not answering" in page
    assert "2 postbacks wait" in page
    assert "elsewhere.example" not in page
    assert page.count("waiting: endpoint breaker") == len(waiting)

    Postback.objects.all().delete()
    page = owner_client.get(reverse("deliveries"), {"state": "pending"}).content.decode()
    assert 'id="slow-endpoints"' not in page


def test_the_api_says_which_pending_postbacks_wait_for_their_endpoint(
    template, link, publisher_key, settings
):
    settings.POSTBACKS_BREAKER_FAILURES = 1
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT = 2
    broken = host_rows(template, link, "slow.example:80", 2, due_at=timezone.now())
    full = host_rows(template, link, "full.example:80", 1, due_at=timezone.now())
    idle = host_rows(template, link, "idle.example:80", 1, due_at=timezone.now())
    gate = fairness.get_gate()
    gate.settle({"slow.example:80": fairness.HostTally(failed=1, hung=1)})
    gate.admit({"full.example:80": 2}, cap=2)
    Postback.objects.filter(pk=broken[1].pk).update(status=Postback.Status.FAILED)
    api = client_for(publisher_key)

    listed = {
        p["event_id"]: p["waiting_for_endpoint"]
        for p in api.get("/api/v1/postbacks").json()["results"]
    }
    assert listed == {
        broken[0].event_id: "breaker",
        broken[1].event_id: None,  # given up: it waits for nothing
        full[0].event_id: "busy",
        idle[0].event_id: None,
    }
    detail = api.get(f"/api/v1/postbacks/{broken[0].event_id}").json()
    assert detail["waiting_for_endpoint"] == "breaker"
    # A held postback waits for its callback's resume, whatever its endpoint does.
    template.paused_at, template.paused_reason = timezone.now(), "manual"
    template.is_active = False
    template.save(update_fields=["paused_at", "paused_reason", "is_active"])
    assert api.get(f"/api/v1/postbacks/{broken[0].event_id}").json()["waiting_for_endpoint"] is None


@pytest.mark.django_db(transaction=True)
def test_requests_that_hang_stop_counting_toward_the_processs_concurrency(
    template, link, receiver, settings
):
    settings.POSTBACKS_HOST_SLOW_SECONDS = 2
    release = threading.Event()
    receiver.responder = answer_when(release, within=10)
    make_postbacks(template, link, 3)
    sender = dispatch.Sender(concurrency=10, slow_max=5)
    try:
        report = dispatch.postbacks_dispatch(Lane.FIRST, wait=0.1, kicks=False, sender=sender)
        assert report.handed_off == 3
        assert (sender.in_flight, sender.busy(2)) == (3, 3)
        time.sleep(2.2)
        # Still open, but no longer taking room from other endpoints' postbacks.
        assert (sender.in_flight, sender.busy(2)) == (3, 0)
        release.set()
        assert dispatch.get_recorder().wait_idle(10)
        assert set(Postback.objects.values_list("status", flat=True)) == {"succeeded"}
    finally:
        release.set()
        sender.close()
