"""Batch dispatch (postbacks/dispatch/): one statement claims many rows, aiohttp sends them
concurrently through the SSRF guard, outcomes are recorded in bulk with every guarantee of the
one-at-a-time path. Real PostgreSQL, Redis and HTTP receivers on 127.0.0.1."""

import contextlib
import json
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import trustme
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from postbacks import dispatch, fairness, http, signing
from postbacks.dispatch import Lane, rows
from postbacks.health import HELD_UNTIL
from postbacks.models import Postback, PostbackAttempt
from tests.tracking.helpers import click_stored
from tracking.models import Click, Conversion

pytestmark = pytest.mark.django_db

INF = math.inf
# A browser's: clicks without one are held as bot clicks (pending), which no template here hears.
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


@contextlib.contextmanager
def own_redis_keys(settings, name: str) -> Iterator[str]:
    """A Redis key prefix of this test's own (slots, breakers, kick flags), removed after."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)[:60]
    settings.POSTBACKS_REDIS_PREFIX = prefix = f"test:{safe}:{time.time_ns()}:"
    fairness.reset_gate()
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(django_settings.REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        fairness.reset_gate()


@pytest.fixture(autouse=True)
def redis_keys(settings, request):
    with own_redis_keys(settings, request.node.name) as prefix:
        yield prefix


def make_postbacks(template, link, count: int, *, url=None, **fields) -> list[Postback]:
    """`count` conversions of fresh clicks with one postback each, for `template`.

    `url(n, event_id)` gives each postback's URL (default: the template's receiver path)."""
    clicks = Click.objects.bulk_create(
        Click(link=link, publisher=link.publisher, campaign=link.campaign, spid=f"s{n}")
        for n in range(count)
    )
    conversions = Conversion.objects.bulk_create(
        Conversion(
            click=click,
            publisher=link.publisher,
            advertiser=link.campaign.advertiser,
            campaign=link.campaign,
            payout=1,
            currency="EUR",
            **Conversion.click_dimensions(click),
        )
        for click in clicks
    )
    base = template.url_template.split("/cb?", 1)[0]
    postbacks = []
    for n, conversion in enumerate(conversions):
        postback = Postback(
            conversion=conversion,
            template=template,
            publisher=link.publisher,
            conversion_status=conversion.status,
            **fields,
        )
        postback.url = (
            url(n, postback.event_id) if url else f"{base}/cb?n={n}&e={postback.event_id}"
        )
        postback.host = http.destination_host(postback.url)
        postbacks.append(postback)
    return Postback.objects.bulk_create(postbacks)


def run(lane=Lane.FIRST, **options) -> dispatch.DispatchReport:
    """One batch in this process, waiting for every request (nothing left to the recorder)."""
    options.setdefault("wait", INF)
    options.setdefault("kicks", False)
    return dispatch.postbacks_dispatch(lane, **options)


# --- Delivery ---------------------------------------------------------------------------------


def test_it_delivers_a_batch_signed_and_records_every_attempt(template, link, receiver):
    created = make_postbacks(template, link, 60)
    report = run(limit=100)
    assert (report.claimed, report.sent, report.recorded, report.handed_off) == (60, 60, 60, 0)

    assert len(receiver.requests) == 60
    secrets = template.publisher.active_signing_secrets()
    by_event = {p.event_id: p for p in created}
    for request in receiver.requests:
        event_id = request.headers["Roundtrip-Event-Id"]
        # The request target is exactly the stored URL's path and query, and it is signed.
        assert (
            request.path == urlsplit(by_event[event_id].url)._replace(scheme="", netloc="").geturl()
        )
        assert parse_qs(urlsplit(request.path).query)["e"] == [event_id]
        assert signing.verify(
            secrets,
            event_id,
            request.headers["Roundtrip-Timestamp"],
            request.headers["Roundtrip-Signature"],
            request.path,
        )
        assert request.headers["Host"] == f"127.0.0.1:{receiver.port}"
        assert request.headers["User-Agent"] == django_settings.POSTBACKS_USER_AGENT

    assert set(Postback.objects.values_list("status", "attempts", "leased_until")) == {
        ("succeeded", 1, None)
    }
    assert not Postback.objects.filter(delivered_at__isnull=True).exists()
    attempts = PostbackAttempt.objects.all()
    assert attempts.count() == 60
    assert set(attempts.values_list("number", "outcome", "status_code", "resolved_ip")) == {
        (1, "success", 200, "127.0.0.1")
    }
    assert set(attempts.values_list("response_excerpt", flat=True)) == {"ok"}
    # Nothing left to claim.
    assert run().claimed == 0


def test_it_sends_the_request_target_byte_for_byte(template, link, receiver):
    # Percent-escapes that a URL library would happily "normalise" change the signed bytes.
    target = "/cb/%7Euser/a%2Fb?x=%41%42&sp=%20+%2B&e=[ok]&u=%E2%82%AC"
    make_postbacks(template, link, 1, url=lambda n, e: f"{receiver.base_url}{target}")
    run()
    assert [r.path for r in receiver.requests] == [target]


def test_it_claims_oldest_due_first_and_leaves_the_rest(template, link, receiver):
    now = timezone.now()
    postbacks = make_postbacks(template, link, 5)
    for age, postback in zip([4, 1, 3, 5, 2], postbacks, strict=True):
        Postback.objects.filter(pk=postback.pk).update(next_attempt_at=now - timedelta(minutes=age))
    Postback.objects.filter(pk=postbacks[0].pk).update(next_attempt_at=now + timedelta(hours=1))
    claimed = rows.claim_batch(lane=Lane.FIRST, limit=2, now=now, lease=60)
    assert [c.pk for c in claimed] == [postbacks[3].pk, postbacks[2].pk]
    assert all(c.attempt == 1 for c in claimed)
    held = Postback.objects.filter(pk__in=[c.pk for c in claimed])
    assert all(p.leased_until == now + timedelta(seconds=60) for p in held)


def test_it_skips_live_leases_and_reclaims_expired_ones(template, link, receiver):
    live, expired, free = make_postbacks(template, link, 3)
    now = timezone.now()
    Postback.objects.filter(pk=live.pk).update(attempts=1, leased_until=now + timedelta(seconds=5))
    Postback.objects.filter(pk=expired.pk).update(
        attempts=1, leased_until=now - timedelta(seconds=1)
    )
    claimed = rows.claim_batch(lane=Lane.RETRY, limit=10, now=now, lease=60)
    assert {(c.pk, c.attempt) for c in claimed} == {(expired.pk, 2), (free.pk, 1)}


def test_it_keeps_first_attempts_and_retries_in_their_lanes(template, link, receiver):
    fresh, retried, orphaned = make_postbacks(template, link, 3)
    Postback.objects.filter(pk=retried.pk).update(
        attempts=1, last_status_code=500, last_error="HTTP 500"
    )
    # Claimed once by a worker that died before recording anything: still a first attempt.
    Postback.objects.filter(pk=orphaned.pk).update(
        attempts=1, leased_until=timezone.now() - timedelta(seconds=1)
    )
    assert {
        c.pk for c in rows.claim_batch(lane=Lane.FIRST, limit=10, now=timezone.now(), lease=60)
    } == {fresh.pk, orphaned.pk}
    Postback.objects.filter(pk__in=[fresh.pk, orphaned.pk]).update(attempts=0, leased_until=None)
    # The retry lane takes anything due (a retry, a replay, a resumed template's backlog).
    retry_claims = rows.claim_batch(lane=Lane.RETRY, limit=10, now=timezone.now(), lease=60)
    assert {c.pk for c in retry_claims} == {fresh.pk, retried.pk, orphaned.pk}


@pytest.mark.django_db(transaction=True)
def test_it_never_gives_one_row_to_two_concurrent_claims(template, link, receiver):
    from django.db import connections

    make_postbacks(template, link, 1200)
    claims: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def claimer() -> None:
        mine: list[int] = []
        try:
            start.wait()
            while batch := rows.claim_batch(
                lane=Lane.FIRST, limit=50, now=timezone.now(), lease=60
            ):
                mine += [c.pk for c in batch]
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()
        claims.append(mine)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    everything = [pk for mine in claims for pk in mine]
    assert len(everything) == len(set(everything)) == 1200
    assert all(mine for mine in claims), "every claimer got a share (SKIP LOCKED, no blocking)"
    assert set(Postback.objects.values_list("attempts", flat=True)) == {1}


# --- Outcomes ---------------------------------------------------------------------------------


def test_it_follows_the_retry_policy_for_each_row(template, link, receiver, settings):
    settings.POSTBACKS_RETRY_SCHEDULE = [5, 300]
    answers = {"0": 503, "1": 404, "2": 200, "3": 429}

    def respond(handler) -> None:
        n = parse_qs(urlsplit(handler.path).query)["n"][0]
        handler.send_response(answers[n])
        if n == "3":
            handler.send_header("Retry-After", "120")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    receiver.responder = respond
    p503, p404, p200, p429 = make_postbacks(template, link, 4)
    before = timezone.now()
    run()
    states = {p.pk: p for p in Postback.objects.all()}
    assert states[p200.pk].status == "succeeded"
    for pk in (p503.pk, p404.pk, p429.pk):
        assert states[pk].status == "pending" and states[pk].leased_until is None
    # 5 s ± 20 % for the 503 and the limited 404; the 429's Retry-After lengthens its wait.
    assert before + timedelta(seconds=4) <= states[p503.pk].next_attempt_at
    assert states[p503.pk].next_attempt_at <= timezone.now() + timedelta(seconds=6)
    assert states[p429.pk].next_attempt_at >= before + timedelta(seconds=120)
    assert (states[p503.pk].last_status_code, states[p503.pk].last_error) == (503, "HTTP 503")
    outcomes = dict(PostbackAttempt.objects.values_list("postback_id", "outcome"))
    assert outcomes == {p503.pk: "retry", p404.pk: "retry", p200.pk: "success", p429.pk: "retry"}

    # Second round, due now: the retry lane picks them up; the 404 is limited to three
    # attempts, the schedule here to three as well.
    for _ in range(2):
        Postback.objects.filter(status="pending").update(next_attempt_at=timezone.now())
        run(Lane.RETRY)
    states = {p.pk: p for p in Postback.objects.all()}
    assert (states[p404.pk].status, states[p404.pk].attempts) == ("failed", 3)
    assert (states[p503.pk].status, states[p503.pk].attempts) == ("failed", 3)
    assert PostbackAttempt.objects.filter(postback_id=p503.pk).count() == 3


def test_it_pauses_the_template_on_410_and_holds_its_other_postbacks(template, link, receiver):
    receiver.status = 410
    first = make_postbacks(template, link, 1)[0]
    run(limit=1)
    first.refresh_from_db()
    template.refresh_from_db()
    # The postback that got the 410 is held with the others, not failed.
    assert (first.status, first.last_status_code) == ("pending", 410)
    assert first.next_attempt_at == HELD_UNTIL
    assert (template.is_active, template.paused_reason) == (False, "gone")
    assert template.paused_at is not None
    waiting = make_postbacks(template, link, 3)
    assert run().claimed == 0, "a paused template's postbacks are not claimed"
    assert len(receiver.requests) == 1
    assert all(
        p.status == "pending" for p in Postback.objects.filter(pk__in=[w.pk for w in waiting])
    )


def test_it_ignores_a_late_result_for_a_row_claimed_again(template, link, receiver):
    postback = make_postbacks(template, link, 1)[0]
    now = timezone.now()
    (claimed,) = rows.claim_batch(lane=Lane.FIRST, limit=1, now=now, lease=60)
    # Our lease ran out and another worker claimed the row: the attempt number moved on.
    Postback.objects.filter(pk=postback.pk).update(
        attempts=2, leased_until=now + timedelta(seconds=60)
    )
    result = dispatch.http.DeliveryResult(200, 5, "ok", "127.0.0.1")
    rows.record_outcomes([rows.Outcome(claimed, started_at=now, duration_ms=5, result=result)])
    postback.refresh_from_db()
    # The late writer keeps its attempt in the log but does not touch the row's state.
    assert (postback.status, postback.attempts) == ("pending", 2)
    assert postback.leased_until is not None
    assert list(PostbackAttempt.objects.values_list("number", "outcome")) == [(1, "success")]


def test_a_late_410_from_a_fenced_out_worker_does_not_pause_the_template(template, link):
    """Bug 5: the worker's lease was taken over; its late answer must not pause the template
    nor count toward health."""
    postback = make_postbacks(template, link, 1)[0]
    now = timezone.now()
    (claimed,) = rows.claim_batch(lane=Lane.FIRST, limit=1, now=now, lease=60)
    Postback.objects.filter(pk=postback.pk).update(
        attempts=2, leased_until=now + timedelta(seconds=60)
    )
    gone = dispatch.http.DeliveryResult(410, 5, "gone", "127.0.0.1")
    rows.record_outcomes([rows.Outcome(claimed, started_at=now, duration_ms=5, result=gone)])
    template.refresh_from_db()
    assert template.paused_at is None and template.is_active
    assert (template.consecutive_failures, template.failing_since) == (0, None)


def test_it_records_a_refused_destination_without_sending(template, link, receiver, settings):
    settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS = False
    bad_shape, loopback = make_postbacks(
        template,
        link,
        2,
        url=lambda n, e: [f"http://2130706433:{receiver.port}/cb", f"{receiver.base_url}/cb"][n],
    )
    run()
    assert receiver.requests == []
    kinds = dict(PostbackAttempt.objects.values_list("postback_id", "error_kind"))
    assert kinds == {bad_shape.pk: "forbidden_destination", loopback.pk: "forbidden_destination"}
    assert set(Postback.objects.values_list("status", flat=True)) == {"failed"}


def test_it_connects_only_to_the_address_it_vetted(template, link, receiver):
    """DNS rebinding: the name answers one address when checked and another afterwards; the
    connection must go to the checked one (and no second lookup is made)."""
    answers: list[str] = []

    def rebinding_resolver(host: str, port: int) -> list[str]:
        answers.append(host)
        # First answer: the receiver. Any later answer: an address nothing listens on.
        return ["127.0.0.1"] if len(answers) == 1 else ["127.0.0.2"]

    make_postbacks(
        template, link, 20, url=lambda n, e: f"http://callback.test:{receiver.port}/cb?n={n}"
    )
    run(resolver=rebinding_resolver)
    assert answers == ["callback.test"], "one vetting lookup for the whole batch"
    assert len(receiver.requests) == 20
    assert {r.headers["Host"] for r in receiver.requests} == {f"callback.test:{receiver.port}"}
    assert set(PostbackAttempt.objects.values_list("resolved_ip", flat=True)) == {"127.0.0.1"}


class TLSReceiver:
    """HTTPS on 127.0.0.1 with a certificate for `name`; records the SNI names it saw."""

    def __init__(self, ca: trustme.CA, name: str):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(self.context)
        self.server_names: list[str | None] = []
        self.context.sni_callback = lambda _s, server_name, _c: self.server_names.append(
            server_name
        )
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                while b"\r\n\r\n" not in (data := tls.recv(65536)):
                    if not data:
                        return
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except (OSError, ssl.SSLError):
            pass

    def stop(self) -> None:
        self.sock.close()


def test_it_checks_tls_against_the_name_while_connecting_to_the_vetted_address(
    template, link, tmp_path
):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    good, wrong = TLSReceiver(ca, "callback.test"), TLSReceiver(ca, "other.test")
    sender = dispatch.Sender(concurrency=10, ca_certs=str(ca_file))
    try:
        ok, bad = make_postbacks(
            template,
            link,
            2,
            url=lambda n, e: f"https://callback.test:{[good, wrong][n].port}/cb?n={n}",
        )
        run(sender=sender, resolver=lambda host, port: ["127.0.0.1"])
    finally:
        sender.close()
        good.stop()
        wrong.stop()
    ok.refresh_from_db()
    bad.refresh_from_db()
    assert ok.status == "succeeded"
    assert good.server_names == ["callback.test"]
    assert bad.status == "pending"
    assert PostbackAttempt.objects.get(postback=bad).error_kind == "tls_error"


def test_it_abandons_a_slow_drip_within_the_total_timeout(template, link, settings):
    settings.POSTBACKS_TOTAL_TIMEOUT = 1.5
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        while not stop.is_set():
            try:
                conn.sendall(b"x")
            except OSError:
                return
            time.sleep(0.2)

    threading.Thread(target=drip, daemon=True).start()
    make_postbacks(
        template, link, 1, url=lambda n, e: f"http://127.0.0.1:{server.getsockname()[1]}/cb"
    )
    try:
        run()
    finally:
        stop.set()
        server.close()
    attempt = PostbackAttempt.objects.get()
    assert attempt.error_kind == "timeout" and attempt.outcome == "retry"
    assert 1400 <= attempt.duration_ms < 3000


def test_it_reads_no_more_than_the_cap_of_a_big_body(template, link, receiver, settings):
    receiver.body = b"\x00" + b"y" * (10 * 1024 * 1024)
    make_postbacks(template, link, 3)
    run()
    excerpts = list(PostbackAttempt.objects.values_list("response_excerpt", flat=True))
    assert [len(e) for e in excerpts] == [settings.POSTBACKS_EXCERPT_BYTES] * 3
    assert excerpts[0].startswith("\ufffdyyy")  # NUL replaced: PostgreSQL text can't hold it
    assert set(Postback.objects.values_list("status", flat=True)) == {"succeeded"}


# --- Fairness inside a batch -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_puts_back_what_a_host_at_its_cap_cannot_take(template, link, receiver, settings):
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT = 2

    def slow(handler) -> None:
        time.sleep(0.4)
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    receiver.responder = slow
    make_postbacks(template, link, 8)
    before = timezone.now()
    # A row waits a little for one of its host's two slots (less than `wait`), then goes back.
    report = run(wait=0.3)
    assert report.claimed == 8
    assert dispatch.get_recorder().wait_idle(10)
    assert Postback.objects.filter(status="succeeded").count() == 2
    pending = Postback.objects.filter(status="pending")
    # Six rows never went out: their claim was given back, without counting an attempt.
    assert pending.count() == 6
    assert set(pending.values_list("attempts", flat=True)) == {0}
    assert PostbackAttempt.objects.count() == 2
    assert all(p.next_attempt_at > before for p in pending)
    assert all(p.leased_until is None for p in pending)


def test_it_gives_every_slot_back_after_many_batches(template, link, receiver, settings):
    # Batches of 10 claimed while earlier ones are in flight, all to one host capped at 3:
    # slots pass from batch to batch and none may be left taken.
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT = 3
    # All of it in one task, however slow the machine (the task's time budget is not tested).
    settings.POSTBACKS_DISPATCH_TASK_SECONDS = 120
    make_postbacks(template, link, 120)
    report = run(limit=10)
    assert report.claimed == 120 and report.batches >= 12
    assert set(Postback.objects.values_list("status", flat=True)) == {"succeeded"}
    host = f"127.0.0.1:{receiver.port}"
    assert fairness.get_gate().redis_gate.in_flight(host) == 0


def answer_when(release: threading.Event, *, within: float = 5):
    """A receiver responder that holds each request until `release` is set (or `within`
    seconds), then answers 200."""

    def hang(handler) -> None:
        release.wait(within)
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return hang


@pytest.mark.django_db(transaction=True)
def test_it_leaves_a_hanging_request_to_the_recorder(template, link, receiver, settings):
    release = threading.Event()
    receiver.responder = answer_when(release)
    make_postbacks(template, link, 3)
    started = time.monotonic()
    report = run(wait=0.2)
    assert report.handed_off == 3
    assert time.monotonic() - started < 2, "the task did not wait for the hanging endpoint"
    assert set(Postback.objects.values_list("status", flat=True)) == {"pending"}
    release.set()
    assert dispatch.get_recorder().wait_idle(10)
    assert set(Postback.objects.values_list("status", "leased_until")) == {("succeeded", None)}
    host = f"127.0.0.1:{receiver.port}"
    assert fairness.get_gate().redis_gate.in_flight(host) == 0, "its slots were given back"


# --- Kicks ------------------------------------------------------------------------------------


@pytest.fixture
def broker():
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


def queued_kicks(broker, queue: str) -> list[str | None]:
    """The ETA of each dispatch message in a queue (None: immediate)."""
    messages = [json.loads(raw) for raw in broker.lrange(queue, 0, -1)]
    assert all(m["headers"]["task"] == "postbacks.tasks.dispatch_postbacks" for m in messages)
    return sorted((m["headers"]["eta"] for m in messages), key=lambda eta: eta or "")


def test_it_kicks_a_lane_once_while_a_kick_is_queued(broker, settings):
    for _ in range(5):
        assert dispatch.kick(Lane.FIRST)
    assert dispatch.kick(Lane.RETRY)
    # One immediate kick, and (in case its flag is stale) one a second later at most.
    first = queued_kicks(broker, settings.POSTBACKS_QUEUE)
    assert len(first) == 2 and first[0] is None and first[1] is not None
    assert queued_kicks(broker, settings.POSTBACKS_RETRY_QUEUE) == [None]
    # A dispatch that starts covers everything committed before it: the next commit kicks again.
    dispatch.clear_kick(Lane.FIRST)
    dispatch.kick(Lane.FIRST)
    assert queued_kicks(broker, settings.POSTBACKS_QUEUE).count(None) == 2


def test_it_kicks_the_first_lane_when_a_conversion_commits(
    broker, template, link, settings, django_capture_on_commit_callbacks
):
    from tracking.services import conversion_record

    clicks = [click_stored(link=link, spid=f"s{n}", user_agent=BROWSER) for n in range(3)]
    for click in clicks:
        with django_capture_on_commit_callbacks(execute=True):
            conversion_record(advertiser=link.campaign.advertiser, click_id=click.click_id)
    # Three commits, one queued kick (it will claim all three rows), plus the safety kick.
    assert queued_kicks(broker, settings.POSTBACKS_QUEUE).count(None) == 1
    assert len(queued_kicks(broker, settings.POSTBACKS_QUEUE)) <= 3
    assert Postback.objects.count() == 3


def test_it_leaves_rows_to_the_sweeper_when_the_broker_is_down(
    template, link, settings, django_capture_on_commit_callbacks
):
    from tests.chaos.infra import free_port, use_broker
    from tracking.services import conversion_record

    click = click_stored(link=link, spid="s", user_agent=BROWSER)
    with use_broker(f"redis://127.0.0.1:{free_port()}/0"):
        with django_capture_on_commit_callbacks(execute=True):
            conversion_record(advertiser=link.campaign.advertiser, click_id=click.click_id)
        # The flag of the failed kick was removed: the next commit tries again.
        assert not dispatch.kick(Lane.FIRST)
    # Left for the sweeper, which kicks its lane once the broker is back.
    assert dispatch.kick_if_due() == [Lane.FIRST]


def test_it_holds_nothing_due_for_a_paused_template(template, link):
    from postbacks import health

    make_postbacks(template, link, 2)
    health.endpoint_pause([template.pk], reason="failing")
    assert set(Postback.objects.values_list("next_attempt_at", flat=True)) == {HELD_UNTIL}
    assert dispatch.kick_if_due() == []
    assert connection.vendor == "postgresql"


@pytest.mark.parametrize("url", ["http://[pub.example]/cb?s=1", "http://[v1.fe]/cb?s=1"])
def test_a_stored_url_with_a_bracketed_name_fails_once_with_a_reason(template, link, url):
    """Bug: a bracketed non-IP host crashed the old per-row path before the send, so the row
    was claimed again forever with no attempt and no reason. It fails at once, recorded."""
    [postback] = make_postbacks(template, link, 1, url=lambda n, event_id: url)
    assert run().claimed == 1
    postback.refresh_from_db()
    assert (postback.status, postback.attempts) == ("failed", 1)
    [attempt] = postback.attempt_log.all()
    assert (attempt.outcome, attempt.error_kind) == ("failed", "invalid_url")
    assert "bracket" in attempt.error or "IPv" in attempt.error
    assert run(Lane.RETRY).claimed == 0
