"""Recovery (issue 16): a healed host's held-back rows are due at once, a breaker probes on its
cool-down (capped at a few seconds), and a live worker renews the short leases of the rows it
holds while a dead one's rows go again within one lease. Real PostgreSQL, Redis and HTTP
receivers on 127.0.0.1; the timings on real processes are in
tests/postbacks/test_recovery_processes.py."""

import math
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from postbacks import dispatch, fairness
from postbacks.dispatch import Lane, kicks, leases, rows
from postbacks.dispatch.recorder import breaker_follow_ups
from postbacks.models import Postback
from publishers.models import CallbackTemplate
from tests.postbacks.test_dispatch import make_postbacks, own_redis_keys

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def redis_keys(settings, request):
    with own_redis_keys(settings, request.node.name) as prefix:
        yield prefix


def gates(settings):
    config = fairness.GateConfig.from_settings()
    return [fairness.get_gate(), fairness.LocalGate(config=config)]


@pytest.mark.parametrize("which", ["redis", "local"])
def test_settling_says_which_hosts_healed_and_when_an_open_breaker_probes(settings, which):
    settings.POSTBACKS_BREAKER_FAILURES = 2
    settings.POSTBACKS_BREAKER_COOLDOWN_SECONDS = 1
    settings.POSTBACKS_BREAKER_MAX_COOLDOWN_SECONDS = 3
    fairness.reset_gate()
    gate = gates(settings)[0 if which == "redis" else 1]
    now = 1_000_000.0
    host = "down.example:80"

    # One failure: below the threshold, nothing to say.
    assert gate.settle({host: fairness.HostTally(failed=1)}, now=now) == fairness.Settled()
    # The second opens it: the first probe comes after the first cool-down.
    settled = gate.settle({host: fairness.HostTally(failed=1)}, now=now)
    assert settled.reopened == {host: now + 1} and not settled.healed
    # Failed probes double the cool-down, up to the maximum: a dead host gets one request each.
    pauses = []
    for step in range(4):
        at = now + 10 * (step + 1)
        [admission] = gate.admit({host: 5}, cap=4, now=at).values()
        assert admission.probe and admission.granted == 1  # one request, never more
        settled = gate.settle(
            {host: fairness.HostTally(failed=1, tokens=[*admission.tokens])}, now=at
        )
        pauses.append(settled.reopened[host] - at)
    assert pauses == [2, 3, 3, 3]
    # The probe that succeeds heals it.
    [admission] = gate.admit({host: 5}, cap=4, now=now + 100).values()
    ok = fairness.HostTally(ok=1, tokens=[*admission.tokens])
    assert gate.settle({host: ok}, now=now + 100) == fairness.Settled(healed=frozenset({host}))
    # A host that never opened does not "heal" on each success.
    assert gate.settle({"fine.example:80": fairness.HostTally(ok=3)}, now=now) == fairness.Settled()


def test_a_healed_hosts_rows_that_failed_for_it_being_down_are_due_at_once(template, link):
    now = timezone.now()
    later = now + timedelta(minutes=30)
    made = make_postbacks(template, link, 7)
    failures = [(None, "connection refused"), (500, "HTTP 500"), (408, "HTTP 408"),
                (429, "HTTP 429"), (404, "HTTP 404")]  # fmt: skip
    for row, (code, error) in zip(made, failures, strict=False):
        row.attempts, row.next_attempt_at = 2, later
        row.last_status_code, row.last_error = code, error
    made[5].next_attempt_at = now - timedelta(seconds=1)  # due already (held by the breaker)
    made[6].attempts, made[6].next_attempt_at, made[6].host = 1, later, "elsewhere.example:80"
    Postback.objects.bulk_update(
        made, ["attempts", "next_attempt_at", "last_status_code", "last_error", "host"]
    )
    paused = CallbackTemplate.objects.create(
        publisher=link.publisher, url_template=template.url_template, paused_at=now, is_active=False
    )
    [held] = make_postbacks(paused, link, 1)
    Postback.objects.filter(pk=held.pk).update(attempts=1, next_attempt_at=later)

    assert rows.host_backlog_release([made[0].host], now) == 3
    due = {p.pk for p in Postback.objects.filter(next_attempt_at__lte=now)}
    # Down (no answer, 5xx, 408): due now. 429 asked for time and 404 was about the postback:
    # they keep theirs; so do the other host's row and the paused template's.
    assert due == {made[0].pk, made[1].pk, made[2].pk, made[5].pk}


def test_breaker_follow_ups_wake_both_lanes_now_for_a_healed_host_and_at_the_next_probe(
    template, link
):
    [row] = make_postbacks(template, link, 1)
    later = timezone.now() + timedelta(minutes=5)
    Postback.objects.filter(pk=row.pk).update(attempts=1, next_attempt_at=later)
    wakeups = breaker_follow_ups(fairness.Settled(healed=frozenset({row.host})))
    assert {w.lane for w in wakeups} == set(Lane)
    assert all((w.at - timezone.now()).total_seconds() <= 0 for w in wakeups)
    assert Postback.objects.get(pk=row.pk).next_attempt_at < later

    probe_at = time.time() + 2
    wakeups = breaker_follow_ups(fairness.Settled(reopened={"down.example:80": probe_at}))
    assert {w.lane for w in wakeups} == set(Lane)
    assert {round(w.at.timestamp(), 3) for w in wakeups} == {round(probe_at, 3)}


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_answered_500_gets_its_whole_backlog_once_a_probe_succeeds(
    link, receiver, settings
):
    # Failed rows would wait five minutes: only the release after the probe brings them back.
    settings.POSTBACKS_RETRY_SCHEDULE = [300] * 9
    settings.POSTBACKS_BREAKER_FAILURES = 2
    settings.POSTBACKS_BREAKER_COOLDOWN_SECONDS = 0.2
    settings.POSTBACKS_BREAKER_MAX_COOLDOWN_SECONDS = 0.5
    fairness.reset_gate()
    template = CallbackTemplate.objects.create(
        publisher=link.publisher, url_template=f"{receiver.base_url}/cb?e=[event_id]"
    )
    made = make_postbacks(template, link, 120)
    host = made[0].host
    receiver.status = 500
    outage = 3.0
    deadline = time.monotonic() + outage
    opened = None  # (when, requests so far) once the breaker is seen open
    while time.monotonic() < deadline:
        dispatch.drain(Lane.RETRY, wait=math.inf, kicks=False)
        if opened is None and fairness.get_gate().states().get(host) in ("open", "half"):
            opened = (time.monotonic(), len(receiver.requests))
        time.sleep(0.05)
    during = len(receiver.requests)
    assert opened is not None
    # Before it opened, the batches claimed while the host still answered fast went out (the
    # breaker hears of them when their group ends); after, one probe per cool-down (0.2 s,
    # 0.4 s, then 0.5 s): a dead endpoint gets almost nothing.
    probes = during - opened[1]
    assert probes <= (deadline - opened[0]) / 0.2 + 1, probes
    assert during < len(made) / 2, during
    failed_early = Postback.objects.filter(attempts__gt=0).count()
    assert failed_early >= 2

    receiver.status = 200
    healed_at = time.monotonic()
    while Postback.objects.filter(status="pending").exists():
        assert time.monotonic() - healed_at < 10, "the backlog flows as soon as a probe succeeds"
        dispatch.drain(Lane.RETRY, wait=math.inf, kicks=False)
        time.sleep(0.05)
    assert dispatch.get_recorder().wait_idle(10)
    assert set(Postback.objects.values_list("status", flat=True)) == {"succeeded"}
    answered = [r.headers["Roundtrip-Event-Id"] for r in receiver.requests[during:]]
    assert sorted(answered) == sorted(p.event_id for p in made)  # each once after the heal


# --- Leases -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_live_process_keeps_its_rows_leased_and_a_dead_ones_go_again_within_a_lease(
    template, link
):
    make_postbacks(template, link, 3)
    lease = 2.0
    claimed = rows.claim_batch(lane=Lane.FIRST, limit=10, now=timezone.now(), lease=lease)
    assert len(claimed) == 3
    keeper = leases.LeaseKeeper(lease)
    try:
        keeper.hold(claimed[:2], seconds=60)
        time.sleep(2 * lease)
        # Held rows are renewed by their (live) process; the third's process "died" with it.
        again = rows.claim_batch(lane=Lane.RETRY, limit=10, now=timezone.now(), lease=60)
        assert [(c.pk, c.attempt) for c in again] == [(claimed[2].pk, 2)]
        assert all(
            p.leased_until > timezone.now()
            for p in Postback.objects.filter(pk__in=[c.pk for c in claimed[:2]])
        )
        # Released (its outcome recorded elsewhere): no longer renewed, claimable again.
        keeper.release(claimed[:1])
        time.sleep(1.5 * lease)
        again = rows.claim_batch(lane=Lane.RETRY, limit=10, now=timezone.now(), lease=60)
        assert [c.pk for c in again] == [claimed[0].pk]
    finally:
        keeper.release(claimed)


@pytest.mark.django_db(transaction=True)
def test_a_lease_is_renewed_only_until_its_requests_deadline(template, link):
    make_postbacks(template, link, 1)
    lease = 2.0
    [claimed] = rows.claim_batch(lane=Lane.FIRST, limit=1, now=timezone.now(), lease=lease)
    keeper = leases.LeaseKeeper(lease)
    try:
        keeper.hold([claimed], seconds=1.0)  # a request that should have ended by then
        time.sleep(1.0 + 1.5 * lease)
        assert keeper.held == 0
        [again] = rows.claim_batch(lane=Lane.RETRY, limit=1, now=timezone.now(), lease=60)
        assert again.pk == claimed.pk
    finally:
        keeper.release([claimed])


def test_renewal_is_fenced_by_the_attempt_number_and_skips_recorded_rows(template, link):
    make_postbacks(template, link, 2)
    first, second = rows.claim_batch(lane=Lane.FIRST, limit=2, now=timezone.now(), lease=5)
    # The first was recorded (lease cleared); the second was claimed again by another worker.
    Postback.objects.filter(pk=first.pk).update(leased_until=None, status="succeeded")
    Postback.objects.filter(pk=second.pk).update(attempts=2)
    assert leases.leases_renew([(first.pk, 1), (second.pk, 1)], lease=60) == 0
    assert Postback.objects.get(pk=first.pk).leased_until is None
    assert leases.leases_renew([(second.pk, 2)], lease=60) == 1


@pytest.mark.django_db(transaction=True)
def test_a_dispatch_holds_its_rows_until_their_outcomes_are_recorded(template, link, receiver):
    made = make_postbacks(template, link, 5)
    keeper = leases.get_keeper(8)
    seen_held: list[bool] = []

    def respond(handler) -> None:
        # While its request is out, the row is one the process keeps leased.
        event = handler.headers["Roundtrip-Event-Id"]
        seen_held.append(next(p.pk for p in made if p.event_id == event) in keeper.held_ids())
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    receiver.responder = respond
    report = dispatch.postbacks_dispatch(Lane.FIRST, wait=math.inf, kicks=False)
    assert report.claimed == report.recorded == 5
    assert seen_held == [True] * 5
    assert not keeper.held_ids() & {p.pk for p in made}  # released once recorded
    assert set(Postback.objects.values_list("status", "leased_until")) == {("succeeded", None)}


def test_a_dead_processs_slots_and_probe_are_freed_when_its_heartbeat_stops(settings, redis_keys):
    settings.POSTBACKS_BREAKER_FAILURES = 1
    fairness.reset_gate()
    gate = fairness.get_gate()
    client = gate.redis_gate.client
    busy, down = "busy.example:80", "down.example:80"
    gate.admit({busy: 4}, cap=4)
    gate.settle({down: fairness.HostTally(failed=1)}, now=time.time() - 60)  # opened long ago
    [probe] = gate.admit({down: 3}, cap=4).values()
    assert probe.probe and probe.granted == 1
    rooms = gate.rooms()
    assert rooms[busy].in_flight == 4 and rooms[down].held_until is not None
    gate.heartbeat()  # a live process keeps them
    assert gate.rooms()[busy].in_flight == 4

    # The process is SIGKILLed: its liveness key expires (here: is deleted) with its lease.
    assert client.delete(f"{redis_keys}alive:{fairness._owner()}") == 1
    rooms = gate.rooms()
    assert busy not in rooms, "its slots are free at once, not after their TTL"
    assert rooms[down].probe, "its probe will never report back: another one may go"


def test_after_a_database_outage_leases_that_lapsed_during_it_are_left_to_their_holders(
    template, link, settings, redis_keys
):
    settings.POSTBACKS_LEASE_SECONDS = 2
    make_postbacks(template, link, 2)
    dead, alive = rows.claim_batch(lane=Lane.FIRST, limit=2, now=timezone.now(), lease=2)
    # The dead worker's lease ended long before the outage; the live one's during it.
    Postback.objects.filter(pk=dead.pk).update(leased_until=timezone.now() - timedelta(minutes=1))
    leases.outage_note()  # a worker could not renew (the database did not answer)
    time.sleep(2.2)
    now = timezone.now()
    assert leases.lease_cutoff(now) < now
    claimed = rows.claim_batch(
        lane=Lane.RETRY, limit=10, now=now, lease=60, expired_before=leases.lease_cutoff(now)
    )
    assert [c.pk for c in claimed] == [dead.pk]
    # Once the grace is over (two leases after the last note), the lapsed lease is fair game.
    fairness.get_gate().redis_gate.client.delete(f"{redis_keys}db-outage")
    now = timezone.now()
    assert leases.lease_cutoff(now) == now
    claimed = rows.claim_batch(lane=Lane.RETRY, limit=10, now=now, lease=60)
    assert [c.pk for c in claimed] == [alive.pk]


def test_the_sweeper_wakes_a_dispatch_for_the_end_of_leases_nobody_renews(template, link, settings):
    settings.POSTBACKS_SWEEP_INTERVAL = 5
    now = timezone.now()
    dead, renewed, _unleased = make_postbacks(template, link, 3)
    # A live worker's lease stays most of a lease (8 s) ahead; a dead one's runs out.
    Postback.objects.filter(pk=dead.pk).update(attempts=1, leased_until=now + timedelta(seconds=2))
    Postback.objects.filter(pk=renewed.pk).update(
        attempts=1, leased_until=now + timedelta(seconds=7)
    )
    wakeups = kicks.expiring_leases(now)
    [end] = {w.at for w in wakeups}  # the renewed lease ends after the next sweep
    assert now + timedelta(seconds=2) < end < now + timedelta(seconds=3)
    assert {w.lane for w in wakeups} == set(Lane)
    assert kicks.expiring_leases(now + timedelta(seconds=10)) == []
