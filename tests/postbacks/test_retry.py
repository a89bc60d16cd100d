"""The retry policy: every status, every error kind, and the schedule's properties."""

import doctest
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postbacks import health, http, retry
from postbacks.dispatch.rows import Claimed, Outcome
from postbacks.http import ERROR_KINDS
from postbacks.retry import (
    DEFAULT_SCHEDULE,
    JITTER,
    MAX_RETRY_AFTER_SECONDS,
    Verdict,
    classify_error,
    classify_status,
    parse_retry_after,
    retry_delay,
)

# The clock every test reads: frozen, so HTTP-date arithmetic is exact.
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def expected_verdict(status: int) -> Verdict:
    """The policy as written in issue 3 and RELIABILITY.md, spelled out independently."""
    if status in range(200, 300):
        return Verdict.SUCCESS
    if status == 410:
        return Verdict.STOP
    if status in (408, 425, 429) or status in range(500, 600):
        return Verdict.RETRY
    if status in range(100, 200):
        return Verdict.RETRY  # no final answer seen
    return Verdict.LIMITED  # 3xx (never followed) and the other 4xx


STATUS_TABLE = [(status, expected_verdict(status)) for status in range(100, 600)]


def test_the_status_table_pins_the_cases_that_matter():
    table = dict(STATUS_TABLE)
    assert len(table) == 500
    assert table[200] is table[204] is table[299] is Verdict.SUCCESS
    assert table[301] is table[302] is table[304] is table[307] is Verdict.LIMITED
    assert table[400] is table[401] is table[404] is table[422] is Verdict.LIMITED
    assert table[408] is table[425] is table[429] is Verdict.RETRY
    assert table[500] is table[502] is table[503] is table[599] is Verdict.RETRY
    assert table[410] is Verdict.STOP


@pytest.mark.parametrize(("status", "verdict"), STATUS_TABLE)
def test_it_classifies_every_status(status, verdict):
    assert classify_status(status) is verdict


@pytest.mark.parametrize("status", [0, 99, 600, 999])
def test_it_limits_statuses_outside_the_standard_range(status):
    assert classify_status(status) is Verdict.LIMITED


ERROR_TABLE = [
    ("forbidden_destination", Verdict.STOP),
    ("invalid_url", Verdict.STOP),
    ("no_secret", Verdict.STOP),
    ("dns_error", Verdict.RETRY),
    ("connect_timeout", Verdict.RETRY),
    ("connection_error", Verdict.RETRY),
    ("tls_error", Verdict.RETRY),
    ("timeout", Verdict.RETRY),
    ("protocol_error", Verdict.RETRY),
]


def test_the_error_table_covers_every_kind_http_raises():
    assert {kind for kind, _ in ERROR_TABLE} == set(ERROR_KINDS)


@pytest.mark.parametrize(("kind", "verdict"), ERROR_TABLE)
def test_it_classifies_every_error_kind(kind, verdict):
    assert classify_error(kind, ERROR_KINDS[kind]) is verdict


def test_it_retries_an_unknown_transient_kind_and_stops_a_permanent_one():
    assert classify_error("something_new", False) is Verdict.RETRY
    assert classify_error("something_new", True) is Verdict.STOP


def test_the_default_schedule_is_the_documented_one():
    hours = 3600
    documented = (
        5,
        5 * 60,
        30 * 60,
        2 * hours,
        5 * hours,
        10 * hours,
        14 * hours,
        20 * hours,
        24 * hours,
    )
    assert documented == DEFAULT_SCHEDULE
    # Ten attempts in all (the first is immediate), about three days.
    assert 2.9 * 24 * hours < sum(DEFAULT_SCHEDULE) < 3.6 * 24 * hours


def test_it_uses_the_schedule_it_is_given_and_is_exhausted_after_its_last_step():
    schedule = [1, 2, 3]
    rng = random.Random(1)
    delays = [retry_delay(n, schedule, rng=rng) for n in range(0, 6)]
    assert delays[0] is None  # no attempt made yet: nothing to retry
    assert [d is not None for d in delays[1:]] == [True, True, True, False, False]
    for step, delay in zip(schedule, delays[1:4], strict=True):
        assert step * (1 - JITTER) <= delay <= step * (1 + JITTER)


def test_it_jitters_both_ways():
    delays = [retry_delay(1, [1000], rng=random.Random(seed)) for seed in range(200)]
    assert min(delays) < 900 < 1100 < max(delays)


@pytest.mark.parametrize("schedule", [[-1], [5, float("nan")], [float("inf")], ["5"]])
def test_it_refuses_a_broken_schedule(schedule):
    with pytest.raises(ValueError, match="Retry schedule"):
        retry_delay(1, schedule)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("007", 7.0),
        ("9" * 400, float(MAX_RETRY_AFTER_SECONDS)),
        ("Thu, 01 Jan 2026 12:10:00 GMT", 600.0),
        ("Thursday, 01-Jan-26 12:10:00 GMT", 600.0),  # RFC 850, obsolete but allowed
        ("Thu Jan  1 12:10:00 2026", 600.0),  # asctime, GMT by definition
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # in the past: now
        ("Thu, 01 Jan 2026 12:10:00 +0100", 0.0),  # a zone other than GMT, still understood
        ("", None),
        (None, None),
        ("-5", None),
        ("1.5", None),
        ("²", None),  # str.isdigit() says yes; it is not delta-seconds
        ("soon", None),
        ("Thu, 32 Jan 2026 12:10:00 GMT", None),
    ],
)
def test_it_parses_retry_after(header, seconds):
    assert parse_retry_after(header, NOW) == seconds


def test_a_retry_after_lengthens_but_never_shortens_the_schedule():
    rng = random.Random(3)
    assert retry_delay(1, [100], rng=rng, retry_after=5000) == 5000
    shorter = retry_delay(1, [100], rng=random.Random(3), retry_after=1)
    assert shorter == retry_delay(1, [100], rng=random.Random(3))
    assert retry_delay(1, [100], retry_after=10**9) == MAX_RETRY_AFTER_SECONDS
    assert retry_delay(2, [100], retry_after=5000) is None  # never revives an exhausted one


schedules = st.lists(st.integers(min_value=0, max_value=7 * 24 * 3600), max_size=15)
retry_afters = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=10 * 24 * 3600).map(lambda s: ("seconds", s)),
    st.integers(min_value=-3600, max_value=10 * 24 * 3600).map(lambda s: ("date", s)),
)


def header_for(retry_after: tuple[str, int] | None) -> str | None:
    if retry_after is None:
        return None
    form, seconds = retry_after
    if form == "seconds":
        return str(seconds)
    return format_datetime(NOW + timedelta(seconds=seconds), usegmt=True)


@given(
    schedule=schedules,
    attempts=st.integers(min_value=-2, max_value=20),
    seed=st.integers(min_value=0, max_value=2**32),
    retry_after=retry_afters,
)
def test_the_schedule_holds_for_any_input(schedule, attempts, seed, retry_after):
    header = header_for(retry_after)
    parsed = parse_retry_after(header, NOW)
    delay = retry_delay(attempts, schedule, rng=random.Random(seed), retry_after=parsed)

    if attempts < 1 or attempts > len(schedule):
        assert delay is None  # exhausted after the last step (or nothing attempted yet)
        return
    assert delay is not None
    assert delay >= 0
    base = schedule[attempts - 1]
    assert delay >= base * (1 - JITTER) - 1e-9
    within_jitter = delay <= base * (1 + JITTER) + 1e-9
    if retry_after is None:
        assert within_jitter
    else:
        expected = min(max(retry_after[1], 0), MAX_RETRY_AFTER_SECONDS)
        assert parsed == expected
        # Either the jittered step won, or the (bounded) Retry-After did.
        assert within_jitter or delay == expected
        assert delay >= expected
        assert delay <= max(base * (1 + JITTER), MAX_RETRY_AFTER_SECONDS) + 1e-9


def test_its_doctests_hold():
    assert doctest.testmod(retry).failed == 0


# --- One vocabulary: the retry policy, the breaker and endpoint health agree ----------------------


def consumers(result_code=None, error_kind=None) -> tuple[str, str | None, bool]:
    """(retry verdict, what the breaker counts, whether health counts a failure) for one
    attempt, each read from its own consumer: the dispatcher's Outcome and health's Tally."""
    row = Claimed(1, 1, "https://pub.example/cb", "evt", 1, None)
    outcome = Outcome(
        row,
        result=http.DeliveryResult(result_code, 1, "", "203.0.113.1") if result_code else None,
        error=http.DeliveryError(error_kind, "x") if error_kind else None,
    )
    if result_code is not None:
        verdict = retry.classify_status(result_code)
    else:
        verdict = retry.classify_error(error_kind, ERROR_KINDS[error_kind])
    tally = health.Tally()
    tally.add(verdict)
    return verdict, outcome.breaker_verdict(), tally.failed == 1


@pytest.mark.parametrize("status", range(100, 600))
def test_every_status_means_one_thing_to_retry_breaker_and_health(status):
    verdict, host, endpoint_failing = consumers(result_code=status)
    # Transient for the retry policy exactly when the host counts as failing for the breaker.
    assert (verdict is retry.Verdict.RETRY) == (host == "failed")
    assert host in ("ok", "failed")  # an answer always says something about the host
    # Endpoint health counts every attempt that did not deliver.
    assert endpoint_failing == (verdict is not retry.Verdict.SUCCESS)
    assert endpoint_failing == (not 200 <= status <= 299)


@pytest.mark.parametrize("status", [425, 100, 103, 199, 408, 429])
def test_the_cases_that_once_disagreed_count_against_the_host(status):
    assert consumers(result_code=status)[:2] == (retry.Verdict.RETRY, "failed")


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
def test_every_error_kind_means_one_thing_to_retry_breaker_and_health(kind):
    verdict, host, endpoint_failing = consumers(error_kind=kind)
    assert endpoint_failing  # no answer never delivers
    if ERROR_KINDS[kind]:
        assert (verdict, host) == (retry.Verdict.STOP, None)  # refused before any request
    elif kind in retry.HANGING_KINDS:
        # A failure like the others, one that also says the host hangs (its breaker opens).
        assert (verdict, host) == (retry.Verdict.RETRY, retry.HOST_HUNG)
    else:
        assert (verdict, host) == (retry.Verdict.RETRY, retry.HOST_FAILED)
