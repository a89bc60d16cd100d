"""One postback at a time through the delivery engine (postbacks/dispatch/), against a real
HTTP receiver on 127.0.0.1: what each answer means, signing, claims, replay."""

import math
import time
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime
from unittest import mock
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from django.db.models import F
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from postbacks import dispatch, health, signing
from postbacks.dispatch import Lane
from postbacks.models import Postback, PostbackAttempt
from postbacks.services import postbacks_retry
from publishers.models import CallbackTemplate
from tests.receiver import Receiver
from tests.tracking.helpers import click_stored
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

SPID = 'a b&c/d?e#f%g"ü'
# A visitor's browser: a click without a user agent is held as a bot click.
BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)


@pytest.fixture(autouse=True)
def no_kicks():
    """Nothing reaches a broker: the tests run the dispatcher themselves."""
    with mock.patch.object(dispatch, "kick", return_value=True) as kick:
        yield kick


@dataclass(frozen=True)
class Delivered:
    outcome: str  # PostbackAttempt.Outcome
    retry_in: float | None  # seconds from the answer to the next attempt, when there is one


def postback_deliver(postback_id: int) -> Delivered | None:
    """One pass of the engine over what is due, everything recorded before it returns: the
    attempt it made on `postback_id`, or None when it made none (not due, held, leased)."""
    attempts = PostbackAttempt.objects.filter(postback_id=postback_id)
    before = attempts.count()
    dispatch.postbacks_dispatch(Lane.RETRY, wait=math.inf, kicks=False)
    if attempts.count() == before:
        return None
    attempt = attempts.order_by("-number").first()
    retry_in = None
    if attempt.outcome == PostbackAttempt.Outcome.RETRY:
        finished = attempt.started_at + timedelta(milliseconds=attempt.duration_ms)
        due = Postback.objects.values_list("next_attempt_at", flat=True).get(pk=postback_id)
        retry_in = (due - finished).total_seconds()
    return Delivered(attempt.outcome, retry_in)


def claim(postback: Postback) -> None:
    """Another worker claims the row (and holds its lease)."""
    Postback.objects.filter(pk=postback.pk).update(
        attempts=F("attempts") + 1, leased_until=timezone.now() + timedelta(minutes=1)
    )


@pytest.fixture
def make_postback(link, advertiser, template):
    """A pending postback to the receiver, made the real way: click, then conversion."""

    def make(spid: str = SPID, url_template: str | None = None) -> Postback:
        if url_template is not None:
            template.url_template = url_template
            template.save()
        click = click_stored(link=link, spid=spid, user_agent=BROWSER)
        [postback] = conversion_record(advertiser=advertiser, click_id=click.click_id).postbacks
        return Postback.objects.get(pk=postback.pk)

    return make


def reply(handler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def make_due(postback: Postback) -> None:
    Postback.objects.filter(pk=postback.pk).update(next_attempt_at=timezone.now())


def target_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def verifies(publisher, received, path: str | None = None) -> bool:
    return signing.verify(
        publisher.active_signing_secrets(),
        received.headers["Roundtrip-Event-Id"],
        received.headers["Roundtrip-Timestamp"],
        received.headers["Roundtrip-Signature"],
        received.path if path is None else path,
    )


# --- Success --------------------------------------------------------------------------------


def test_it_delivers_and_records_the_attempt(receiver, make_postback):
    receiver.responder = lambda handler: (time.sleep(0.2), reply(handler, 200, b"thanks"))
    postback = make_postback()
    before = timezone.now()
    outcome = postback_deliver(postback.pk)
    assert outcome == Delivered(PostbackAttempt.Outcome.SUCCESS, None)

    postback.refresh_from_db()
    assert (postback.status, postback.attempts, postback.leased_until) == ("succeeded", 1, None)
    assert (postback.last_status_code, postback.last_error) == (200, "")
    assert before <= postback.delivered_at <= timezone.now()
    [attempt] = postback.attempt_log.all()
    assert (attempt.number, attempt.outcome, attempt.status_code) == (1, "success", 200)
    assert (attempt.response_excerpt, attempt.error_kind, attempt.error) == ("thanks", "", "")
    assert attempt.resolved_ip == "127.0.0.1"
    assert attempt.url == postback.url
    assert 200 <= attempt.duration_ms < 5000  # the receiver took 0.2 s
    assert before <= attempt.started_at <= postback.delivered_at

    [received] = receiver.requests
    assert received.path == target_of(postback.url)
    query = parse_qs(urlsplit(received.path).query, keep_blank_values=True)
    assert query["id"] == [SPID]
    assert query["p"] == ["2.50"]
    assert query["e"] == [postback.event_id]


def test_it_caps_the_stored_response_excerpt(receiver, make_postback, settings):
    receiver.body = "é".encode() * 5000
    postback = make_postback()
    postback_deliver(postback.pk)
    [attempt] = PostbackAttempt.objects.all()
    assert 0 < len(attempt.response_excerpt.encode()) <= settings.POSTBACKS_EXCERPT_BYTES + 3
    assert attempt.response_excerpt.startswith("éé")


def test_it_signs_the_exact_request_target(receiver, make_postback, publisher):
    postback = make_postback()
    postback_deliver(postback.pk)
    [received] = receiver.requests
    headers = received.headers
    assert headers["Roundtrip-Event-Id"] == postback.event_id
    assert abs(int(headers["Roundtrip-Timestamp"]) - time.time()) < 30
    assert headers["Roundtrip-Signature"].startswith("v1=")
    assert verifies(publisher, received)
    # Over exactly that target and that secret, nothing else.
    assert not verifies(publisher, received, received.path + "&x=1")
    assert not verifies(publisher, received, unquote(received.path))
    assert not signing.verify(
        ["whsec_someone_else"],
        headers["Roundtrip-Event-Id"],
        headers["Roundtrip-Timestamp"],
        headers["Roundtrip-Signature"],
        received.path,
    )


def test_it_signs_with_both_secrets_during_a_rotation(receiver, make_postback, publisher):
    old_secret, new_secret = "whsec_old_one", publisher.signing_secret
    publisher.previous_signing_secret = old_secret
    publisher.previous_secret_expires_at = timezone.now() + timedelta(hours=1)
    publisher.save()
    postback_deliver(make_postback().pk)
    [received] = receiver.requests
    headers = received.headers
    assert len(headers["Roundtrip-Signature"].split()) == 2
    for secret in (old_secret, new_secret):
        assert signing.verify(
            [secret],
            headers["Roundtrip-Event-Id"],
            headers["Roundtrip-Timestamp"],
            headers["Roundtrip-Signature"],
            received.path,
        )


def test_it_keeps_the_event_id_across_retries(receiver, make_postback, publisher):
    receiver.status = 500
    postback = make_postback()
    assert postback_deliver(postback.pk).outcome == "retry"
    receiver.status = 200
    make_due(postback)
    assert postback_deliver(postback.pk).outcome == "success"
    first, second = receiver.requests
    assert first.headers["Roundtrip-Event-Id"] == second.headers["Roundtrip-Event-Id"]
    assert first.headers["Roundtrip-Event-Id"] == postback.event_id
    assert first.path == second.path == target_of(postback.url)
    assert verifies(publisher, first) and verifies(publisher, second)


PATH_AND_QUERY = "{base}/cb/[spid]/x?id=[spid]&e=[event_id]"


@pytest.mark.parametrize(
    "spid",
    [SPID, "..", ".", "[payout]", "{spid}", "%2F", "%", "+ +", "ü😀", "x" * 255, "/".join("a" * 9)],
)
def test_the_receiver_decodes_exactly_the_spid_in_path_and_query(
    receiver, make_postback, publisher, spid
):
    postback = make_postback(spid, PATH_AND_QUERY.format(base=receiver.base_url))
    assert postback_deliver(postback.pk).outcome == "success"
    [received] = receiver.requests
    path, _, query = received.path.partition("?")
    segments = path.split("/")
    assert len(segments) == 4 and segments[:2] == ["", "cb"] and segments[3] == "x"
    assert unquote(segments[2]) == spid
    assert parse_qs(query, keep_blank_values=True) == {"id": [spid], "e": [postback.event_id]}
    assert verifies(publisher, received)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spid=st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=255))
def test_any_spid_arrives_exactly_and_signed(receiver, make_postback, publisher, spid):
    postback = make_postback(spid, PATH_AND_QUERY.format(base=receiver.base_url))
    assert postback_deliver(postback.pk).outcome == "success"
    received = receiver.requests[-1]
    path, _, query = received.path.partition("?")
    assert unquote(path.split("/")[2]) == spid
    assert parse_qs(query)["id"] == [spid]
    assert verifies(publisher, received)


# --- Retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425, 429])
def test_it_schedules_a_retry_after_a_transient_answer(receiver, make_postback, status):
    receiver.status = status
    postback = make_postback()
    before = timezone.now()
    outcome = postback_deliver(postback.pk)
    after = timezone.now()
    assert outcome.outcome == "retry"
    assert 4.0 <= outcome.retry_in <= 6.0  # 5 s ± 20 %

    postback.refresh_from_db()
    assert (postback.status, postback.attempts, postback.leased_until) == ("pending", 1, None)
    assert before + timedelta(seconds=4) <= postback.next_attempt_at <= after + timedelta(seconds=6)
    assert (postback.last_status_code, postback.last_error) == (status, f"HTTP {status}")
    assert postback.delivered_at is None
    [attempt] = postback.attempt_log.all()
    assert (attempt.outcome, attempt.status_code, attempt.resolved_ip) == (
        "retry",
        status,
        "127.0.0.1",
    )
    # Not due yet: nobody may claim it before next_attempt_at.
    assert postback_deliver(postback.pk) is None
    assert len(receiver.requests) == 1


def test_it_follows_the_schedule_with_jitter(receiver, make_postback, settings):
    receiver.status = 503
    postback = make_postback()
    for number, step in enumerate(settings.POSTBACKS_RETRY_SCHEDULE[:4], start=1):
        make_due(postback)
        before = timezone.now()
        outcome = postback_deliver(postback.pk)
        after = timezone.now()
        assert outcome.outcome == "retry"
        assert step * 0.8 <= outcome.retry_in <= step * 1.2
        postback.refresh_from_db()
        assert postback.attempts == number
        assert (
            before + timedelta(seconds=step * 0.8)
            <= postback.next_attempt_at
            <= after + timedelta(seconds=step * 1.2)
        )
    assert [a.number for a in postback.attempt_log.all()] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        ("120", 120, 120),
        ("1", 4, 6),  # never sooner than the schedule
        ("999999999", 86400, 86400),  # capped at a day
        ("soon", 4, 6),  # unusable: the schedule
    ],
)
def test_it_honours_retry_after_on_429(receiver, make_postback, retry_after, low, high):
    receiver.status = 429
    receiver.extra_headers = {"Retry-After": retry_after}
    postback = make_postback()
    before = timezone.now()
    outcome = postback_deliver(postback.pk)
    assert outcome.outcome == "retry"
    assert low <= outcome.retry_in <= high
    postback.refresh_from_db()
    assert before + timedelta(seconds=low) <= postback.next_attempt_at
    assert postback.next_attempt_at <= timezone.now() + timedelta(seconds=high)


def test_it_honours_retry_after_as_an_http_date(receiver, make_postback):
    receiver.status = 503
    receiver.extra_headers = {
        "Retry-After": format_datetime(timezone.now() + timedelta(minutes=10), usegmt=True)
    }
    outcome = postback_deliver(make_postback().pk)
    assert outcome.outcome == "retry"
    assert 590 <= outcome.retry_in <= 601


def test_it_retries_when_the_receiver_refuses_connections(receiver, make_postback):
    postback = make_postback()
    port = receiver.port
    receiver.stop()
    before = timezone.now()
    outcome = postback_deliver(postback.pk)
    assert outcome.outcome == "retry" and 4.0 <= outcome.retry_in <= 6.0
    postback.refresh_from_db()
    assert postback.status == "pending" and postback.leased_until is None
    assert postback.next_attempt_at >= before + timedelta(seconds=4)
    assert postback.last_status_code is None and postback.last_error
    [attempt] = postback.attempt_log.all()
    assert (attempt.outcome, attempt.status_code, attempt.error_kind) == (
        "retry",
        None,
        "connection_error",
    )
    assert attempt.error

    # The receiver comes back on the same port: the next attempt gets through.
    back = Receiver(bind_port=port).start()
    try:
        make_due(postback)
        assert postback_deliver(postback.pk).outcome == "success"
        assert [r.path for r in back.requests] == [target_of(postback.url)]
    finally:
        back.stop()
    postback.refresh_from_db()
    assert (postback.status, postback.attempts) == ("succeeded", 2)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_it_never_follows_a_redirect(receiver, make_postback, status):
    receiver.status = status
    receiver.extra_headers = {"Location": f"{receiver.base_url}/elsewhere"}
    postback = make_postback()
    outcome = postback_deliver(postback.pk)
    assert outcome.outcome != "success"
    assert [r.path for r in receiver.requests] == [target_of(postback.url)]
    postback.refresh_from_db()
    assert postback.status != "succeeded" and postback.delivered_at is None
    assert postback.last_status_code == status
    [attempt] = postback.attempt_log.all()
    assert attempt.status_code == status and attempt.outcome != "success"


def test_it_holds_on_410_and_pauses_the_template(receiver, make_postback, template, publisher):
    receiver.status = 410
    postback = make_postback()
    other = CallbackTemplate.objects.create(
        publisher=publisher, url_template="https://pub.example/cb?id=[spid]"
    )
    outcome = postback_deliver(postback.pk)
    assert outcome.outcome == "retry"
    postback.refresh_from_db()
    # Held with its template (not failed): resuming sends it again.
    assert (postback.status, postback.attempts, postback.last_status_code) == ("pending", 1, 410)
    assert postback.next_attempt_at == health.HELD_UNTIL
    template.refresh_from_db()
    other.refresh_from_db()
    assert template.is_active is False
    assert other.is_active is True
    assert postback_deliver(postback.pk) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 422, 451])
def test_it_fails_another_4xx_after_three_attempts(receiver, make_postback, template, status):
    receiver.status = status
    postback = make_postback()
    outcomes = []
    for _ in range(3):
        make_due(postback)
        outcomes.append(postback_deliver(postback.pk).outcome)
    assert outcomes == ["retry", "retry", "failed"]
    postback.refresh_from_db()
    assert (postback.status, postback.attempts, postback.last_status_code) == ("failed", 3, status)
    assert [a.outcome for a in postback.attempt_log.all()] == ["retry", "retry", "failed"]
    template.refresh_from_db()
    assert template.is_active  # only 410 pauses the template
    make_due(postback)
    assert postback_deliver(postback.pk) is None
    assert len(receiver.requests) == 3


def test_it_fails_when_the_schedule_is_exhausted(receiver, make_postback, settings):
    settings.POSTBACKS_RETRY_SCHEDULE = [5, 300]
    receiver.status = 500
    postback = make_postback()
    outcomes = []
    for _ in range(3):
        make_due(postback)
        outcomes.append(postback_deliver(postback.pk))
    assert [o.outcome for o in outcomes] == ["retry", "retry", "failed"]
    assert outcomes[-1].retry_in is None
    postback.refresh_from_db()
    assert (postback.status, postback.attempts, postback.last_error) == ("failed", 3, "HTTP 500")
    make_due(postback)
    assert postback_deliver(postback.pk) is None


def test_it_fails_after_the_last_step_of_the_default_schedule(receiver, make_postback, settings):
    receiver.status = 503
    postback = make_postback()
    Postback.objects.filter(pk=postback.pk).update(attempts=len(settings.POSTBACKS_RETRY_SCHEDULE))
    outcome = postback_deliver(postback.pk)
    assert outcome.outcome == "failed"
    postback.refresh_from_db()
    assert postback.status == "failed"
    assert postback.attempts == len(settings.POSTBACKS_RETRY_SCHEDULE) + 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_it_refuses_private_destinations_unless_allowed(
    receiver, make_postback, template, settings, host
):
    settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS = False
    postback = make_postback(url_template=f"http://{host}:{receiver.port}/cb?id=[spid]")
    outcome = postback_deliver(postback.pk)
    assert outcome.outcome == "failed"
    assert receiver.requests == []
    postback.refresh_from_db()
    assert postback.status == "failed" and postback.last_status_code is None
    assert postback.last_error
    [attempt] = postback.attempt_log.all()
    assert (attempt.error_kind, attempt.status_code, attempt.outcome) == (
        "forbidden_destination",
        None,
        "failed",
    )
    template.refresh_from_db()
    assert template.is_active  # our refusal, not the publisher's answer

    # With the operator's setting on, the same kind of postback goes through.
    settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS = True
    allowed = make_postback(url_template=f"http://127.0.0.1:{receiver.port}/cb?id=[spid]")
    assert postback_deliver(allowed.pk).outcome == "success"


# --- Claims and leases ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        {"next_attempt_at_in": timedelta(minutes=5)},
        {"status": Postback.Status.SUCCEEDED},
        {"status": Postback.Status.FAILED},
    ],
)
def test_it_does_nothing_for_a_row_that_is_not_due(receiver, make_postback, state):
    postback = make_postback()
    changes = {k: v for k, v in state.items() if k != "next_attempt_at_in"}
    if "next_attempt_at_in" in state:
        changes["next_attempt_at"] = timezone.now() + state["next_attempt_at_in"]
    Postback.objects.filter(pk=postback.pk).update(**changes)
    assert postback_deliver(postback.pk) is None
    assert receiver.requests == []
    assert not PostbackAttempt.objects.exists()


def test_it_reclaims_a_row_whose_lease_expired(receiver, make_postback):
    postback = make_postback()
    claim(postback)  # a worker that then died
    Postback.objects.filter(pk=postback.pk).update(
        leased_until=timezone.now() - timedelta(seconds=1)
    )
    outcome = postback_deliver(postback.pk)
    assert outcome.outcome == "success"
    postback.refresh_from_db()
    assert (postback.status, postback.attempts) == ("succeeded", 2)
    assert [a.number for a in postback.attempt_log.all()] == [2]


# --- Sweeper --------------------------------------------------------------------------------


# --- Replay ---------------------------------------------------------------------------------


def test_retry_requeues_failed_rows(
    receiver, make_postback, no_kicks, django_capture_on_commit_callbacks
):
    receiver.status = 404
    failed = make_postback()
    for _ in range(3):
        make_due(failed)
        postback_deliver(failed.pk)
    receiver.status = 200
    succeeded = make_postback(spid="delivered")
    postback_deliver(succeeded.pk)
    leased = make_postback(spid="in flight")
    claim(leased)
    assert Postback.objects.get(pk=failed.pk).status == "failed"
    no_kicks.reset_mock()

    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        # The delivered one is re-sent too (a publisher asked for it again).
        assert postbacks_retry([failed.pk, succeeded.pk, leased.pk]) == 2
    # One kick of the retry lane, however many rows (not a task per postback).
    no_kicks.assert_called_once_with(Lane.RETRY)
    failed.refresh_from_db()
    assert failed.status == "pending" and failed.leased_until is None
    assert before <= failed.next_attempt_at <= timezone.now()

    assert postback_deliver(failed.pk).outcome == "success"
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("succeeded", 4)
    resent = {r.headers["Roundtrip-Event-Id"] for r in receiver.requests[-2:]}
    assert resent == {failed.event_id, succeeded.event_id}


def test_retry_of_nothing_retryable_sends_nothing(
    make_postback, no_kicks, django_capture_on_commit_callbacks
):
    postback = make_postback()
    claim(postback)
    no_kicks.reset_mock()
    with django_capture_on_commit_callbacks(execute=True):
        assert postbacks_retry([postback.pk, 987654321]) == 0
    no_kicks.assert_not_called()


# --- The Celery task ------------------------------------------------------------------------
