"""Retry policy: what an answer means, and when to try again. Pure: no ORM, no settings.

>>> classify_status(200), classify_status(503), classify_status(410), classify_status(404)
(<Verdict.SUCCESS: 'success'>, <Verdict.RETRY: 'retry'>, <Verdict.STOP: 'stop'>, <Verdict.LIMITED: 'limited'>)
"""

import enum
import random
from collections.abc import Sequence
from datetime import datetime
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


class Verdict(enum.StrEnum):
    SUCCESS = "success"
    RETRY = "retry"  # transient: follow the whole schedule
    LIMITED = "limited"  # probably permanent: retry up to LIMITED_MAX_ATTEMPTS
    STOP = "stop"  # the endpoint is gone (410): fail now and pause the template


_TRANSIENT_4XX = frozenset({408, 425, 429})


def classify_status(status_code: int) -> Verdict:
    """2xx success; 408/425/429/5xx retry; 410 stop; 3xx (never followed) and other 4xx limited."""
    if 200 <= status_code < 300:
        return Verdict.SUCCESS
    if status_code == 410:
        return Verdict.STOP
    if status_code in _TRANSIENT_4XX or status_code >= 500 or status_code < 200:
        return Verdict.RETRY
    return Verdict.LIMITED


def classify_error(kind: str, permanent: bool) -> Verdict:
    """Timeouts, refused connections and DNS failures are transient; a refused destination is not."""
    return Verdict.STOP if permanent else Verdict.RETRY


def retry_delay(
    attempts_made: int,
    schedule: Sequence[int] = DEFAULT_SCHEDULE,
    *,
    rng: random.Random | None = None,
    retry_after: float | None = None,
) -> float | None:
    """Seconds until the next attempt after `attempts_made` attempts, or None when exhausted.

    >>> retry_delay(1, rng=random.Random(0)) is not None, retry_delay(10) is None
    (True, True)
    """
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    base = schedule[attempts_made - 1]
    jitter = (rng or random).uniform(-JITTER, JITTER)
    delay = base * (1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), or None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
