"""Retry policy: what an answer means, and when to try again. Pure: no ORM, no settings.

The caller passes the schedule (settings.POSTBACKS_RETRY_SCHEDULE) and the clock.

>>> classify_status(200), classify_status(503), classify_status(410), classify_status(404)
(<Verdict.SUCCESS: 'success'>, <Verdict.RETRY: 'retry'>, <Verdict.STOP: 'stop'>, <Verdict.LIMITED: 'limited'>)
>>> delay = retry_delay(2, (5, 300), rng=random.Random(7))
>>> 240 <= delay <= 360, retry_delay(3, (5, 300))
(True, None)
"""

import enum
import math
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Seconds to wait after attempt 1, 2, …: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h
# (about three days in all, like Standard Webhooks). The first attempt is immediate.
DEFAULT_SCHEDULE: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.2
# Answers that say "your request is wrong" are still retried a little (publishers fix their
# endpoints), but they don't get three days of attempts.
LIMITED_MAX_ATTEMPTS = 3
# A Retry-After may delay us, but never by less than the schedule nor more than this.
MAX_RETRY_AFTER_SECONDS = 24 * 3600

_DELTA_SECONDS = re.compile(r"^[0-9]+$")  # ASCII only: str.isdigit() also accepts "²"


class Verdict(enum.StrEnum):
    SUCCESS = "success"
    RETRY = "retry"  # transient: follow the whole schedule
    LIMITED = "limited"  # probably permanent: retry up to LIMITED_MAX_ATTEMPTS
    STOP = "stop"  # the endpoint is gone (410) or the URL is refused: fail now


# Timeout, too early, too many requests: the receiver asks us to come back.
_TRANSIENT_4XX = frozenset({408, 425, 429})


def classify_status(status_code: int) -> Verdict:
    """What an HTTP answer means for this postback.

    2xx success. 408/425/429 and 5xx: retry on the whole schedule. 410: stop (the caller
    also pauses the template). 1xx as a final answer means we never saw the real one: retry.
    3xx (redirects are never followed), other 4xx and anything outside 100–599: limited.
    """
    if 200 <= status_code <= 299:
        return Verdict.SUCCESS
    if status_code == 410:
        return Verdict.STOP
    if status_code in _TRANSIENT_4XX or 500 <= status_code <= 599 or 100 <= status_code <= 199:
        return Verdict.RETRY
    return Verdict.LIMITED


def classify_error(kind: str, permanent: bool) -> Verdict:
    """No answer at all: a refused or malformed destination stops; the rest is transient.

    `kind` is one of postbacks.http.ERROR_KINDS; only `permanent` decides, so a new kind
    defaults to being retried.
    """
    return Verdict.STOP if permanent else Verdict.RETRY


# --- What an attempt says about its host and its endpoint ---------------------------------------
# One vocabulary for the retry policy above, the per-host circuit breaker (postbacks/fairness.py)
# and endpoint health (postbacks/health.py): each reads the verdict, none classifies answers on
# its own.

HOST_OK = "ok"
HOST_FAILED = "failed"
HOST_HUNG = "hung"  # a failure that held a connection until our deadline: the host hangs

# Error kinds (postbacks.http.ERROR_KINDS) that mean the host kept us waiting until our own
# deadline: a firewall dropping packets, a server that accepts and never answers.
HANGING_KINDS = frozenset({"timeout", "connect_timeout"})


def host_verdict(verdict: Verdict, *, answered: bool, kind: str = "") -> str | None:
    """For the circuit breaker: HOST_FAILED when the host is struggling or unreachable (every
    transient verdict: 5xx, 408/425/429, a final 1xx, refused or reset connections, DNS and
    TLS failures), HOST_HUNG when it is a time-out (a failure too, one that opens the breaker
    at once); HOST_OK when it answered anything else (it is up, even if the URL is wrong); None
    when no request reached it (our guard refused the URL).

    >>> host_verdict(classify_status(425), answered=True), host_verdict(Verdict.STOP, answered=False)
    ('failed', None)
    >>> host_verdict(classify_error("timeout", False), answered=False, kind="timeout")
    'hung'
    """
    if verdict is Verdict.RETRY:
        return HOST_HUNG if kind in HANGING_KINDS else HOST_FAILED
    return HOST_OK if answered else None


def endpoint_failed(verdict: Verdict) -> bool:
    """For endpoint health: every attempt that did not deliver counts toward the failing
    streak (time-outs included: `classify_error` makes them RETRY); a success resets it."""
    return verdict is not Verdict.SUCCESS


def validate_schedule(schedule: Sequence[float]) -> None:
    """Raise ValueError unless every step is a finite, non-negative number of seconds."""
    for step in schedule:
        if not isinstance(step, int | float) or not math.isfinite(step) or step < 0:
            raise ValueError(f"Retry schedule steps must be seconds >= 0, not {step!r}.")


def retry_delay(
    attempts_made: int,
    schedule: Sequence[float] = DEFAULT_SCHEDULE,
    *,
    rng: random.Random | None = None,
    retry_after: float | None = None,
) -> float | None:
    """Seconds until the next attempt after `attempts_made` attempts, or None when exhausted.

    The step is jittered by ±JITTER (so retries of many postbacks spread out). A Retry-After
    can only lengthen it, up to MAX_RETRY_AFTER_SECONDS; it never shortens the schedule and
    never revives an exhausted postback.
    """
    validate_schedule(schedule)
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    base = float(schedule[attempts_made - 1])
    delay = base * (1 + (rng or random).uniform(-JITTER, JITTER))
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return max(delay, 0.0)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), or None if unusable.

    `now` must be timezone-aware. A date in the past means "now" (0); anything beyond
    MAX_RETRY_AFTER_SECONDS is capped to it.

    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> parse_retry_after("120", now), parse_retry_after("Thu, 01 Jan 2026 00:10:00 GMT", now)
    (120.0, 600.0)
    >>> parse_retry_after("soon", now) is None, parse_retry_after("-5", now) is None
    (True, True)
    """
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.match(value):
        # Capped (retry_delay caps again) so a 5,000-digit value can't reach int()'s limit.
        seconds = int(value) if len(value) <= 12 else MAX_RETRY_AFTER_SECONDS
        return float(min(seconds, MAX_RETRY_AFTER_SECONDS))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # asctime dates carry no zone; HTTP-dates are GMT
    return min(max(0.0, (when - now).total_seconds()), float(MAX_RETRY_AFTER_SECONDS))
