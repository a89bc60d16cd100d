"""Kicks: how dispatch tasks get published. New postbacks kick their lane on commit; kicks are
coalesced through a Redis flag (a queued kick covers every row committed before it starts); a
full batch kicks a successor; rows due again soon get countdown kicks; the beat sweeper kicks
every lane with due rows. However many rows, a kick is one task."""

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db.models import Max, Min
from django.utils import timezone
from redis.exceptions import RedisError

from config.redis import get_redis
from postbacks.dispatch.rows import FIRST_ATTEMPT, Lane, WakeUp, due_rows
from postbacks.models import Postback

logger = logging.getLogger(__name__)


# A queued immediate kick's flag lives this long at most; while it is set, commits add at most
# one countdown kick a second (see kick()).
_KICK_FLAG_SECONDS = 5
_SAFETY_KICK_SECONDS = 1.0
# Rows put back (host busy, breaker open) get a countdown kick when due within this long;
# later ones are left to the sweeper.
_DEFERRED_HORIZON_SECONDS = 60.0


# One immediate reconnect (a pooled connection may be stale after a Redis restart), then give
# up: with the broker down Celery's default policy adds ~0.6 s to every conversion request
# (and `retry=False` ~6 s, redis-py's own backoff), while the beat sweeper covers a lost kick.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}


def queue_for(lane: Lane) -> str:
    return settings.POSTBACKS_QUEUE if lane is Lane.FIRST else settings.POSTBACKS_RETRY_QUEUE


def _kick_key(lane: Lane, bucket: str) -> str:
    return f"{settings.POSTBACKS_REDIS_PREFIX}kick:{lane}:{bucket}"


def kick(lane: Lane, *, countdown: float | None = None, coalesce: bool = True) -> bool:
    """Publish a `dispatch_postbacks` task for `lane`. Returns False only if the broker could
    not be reached (the caller then leaves the rows to the sweeper).

    Coalesced through Redis: an immediate kick is skipped while another one is queued and not
    yet started (that one claims every row committed before it starts). Countdown kicks are
    coalesced per lane and second, and fire on the second's boundary, so one covers every row
    due within that second.
    """
    client = get_redis() if coalesce else None
    key = None
    if client is not None:
        if countdown:
            due = math.ceil(time.time() + countdown)
            countdown = max(due - time.time(), 0.0)
            key = _kick_key(lane, str(due))
        else:
            key = _kick_key(lane, "now")
        try:
            expiry = math.ceil(countdown or 0) + _KICK_FLAG_SECONDS
            if not client.set(key, b"1", nx=True, ex=expiry):
                if countdown:
                    return True
                # A kick is queued and will cover this commit, unless its flag is stale (its
                # dispatch never started, or cleared another Redis): one kick a second at most
                # makes sure no commit waits for the sweeper.
                return kick(lane, countdown=_SAFETY_KICK_SECONDS)
        except RedisError:
            key = None
    try:
        # By name: the task module imports this one.
        current_app.send_task(
            "postbacks.tasks.dispatch_postbacks",
            kwargs={"lane": str(lane)},
            queue=queue_for(lane),
            countdown=countdown,
            retry_policy=PUBLISH_RETRY_POLICY,
        )
        return True
    except Exception:
        logger.exception("Could not publish a %s postback dispatch; the sweeper will", lane)
        if key is not None and client is not None:
            with contextlib.suppress(RedisError):
                client.delete(key)
        return False


def clear_kick(lane: Lane) -> None:
    """A dispatch starting now covers every row committed so far: the next commit may kick."""
    client = get_redis()
    if client is not None:
        with contextlib.suppress(RedisError):
            client.delete(_kick_key(lane, "now"))


def schedule_wakeups(wakeups: Iterable[WakeUp]) -> None:
    """Countdown kicks for rows due again soon: at the first and the last such time per lane.
    Retries count as soon up to POSTBACKS_MAX_COUNTDOWN_SECONDS, rows put back up to a minute;
    longer waits are left to the sweeper."""
    now = timezone.now()
    by_lane: dict[Lane, list[float]] = defaultdict(list)
    for wakeup in wakeups:
        delay = (wakeup.at - now).total_seconds()
        horizon = (
            settings.POSTBACKS_MAX_COUNTDOWN_SECONDS if wakeup.retry else _DEFERRED_HORIZON_SECONDS
        )
        if delay <= horizon:
            by_lane[wakeup.lane].append(max(delay, 0.0))
    for lane, delays in by_lane.items():
        for delay in sorted({min(delays), max(delays)}):
            kick(lane, countdown=max(delay, 0.01))


def kick_if_due(*, now: datetime | None = None) -> list[Lane]:
    """Kick every lane that has due rows (the beat sweeper calls this in batch mode, so rows
    whose kick was lost — Redis restarted — go out within one sweep period), and wake a
    dispatch for the end of each lease that nobody renews before the next sweep."""
    now = now or timezone.now()
    kicked = []
    for lane, due in (
        (Lane.FIRST, due_rows(Lane.FIRST, now)),
        (Lane.RETRY, due_rows(Lane.RETRY, now).filter(attempts__gt=0).exclude(FIRST_ATTEMPT)),
    ):
        if due.exists() and kick(lane):
            kicked.append(lane)
    schedule_wakeups(expiring_leases(now))
    return kicked


def expiring_leases(now: datetime) -> list[WakeUp]:
    """When the leases that run out before the next sweep do (the first and the last).

    A live worker renews its rows' leases every quarter of POSTBACKS_LEASE_SECONDS, so they stay
    most of a lease ahead, past the next sweep (the sweep interval is below three quarters of the
    lease by default); a lease that ends sooner is not being renewed: its worker died. Waking a
    dispatch then sends those rows again as their lease ends instead of at the first sweep after
    it (a first attempt cut short goes back to the first lane, anything else to the retry lane:
    both are woken). A claimed row is due, so the due index serves the query."""
    horizon = now + timedelta(seconds=settings.POSTBACKS_SWEEP_INTERVAL)
    ends = Postback.objects.filter(
        status=Postback.Status.PENDING,
        next_attempt_at__lte=horizon,
        leased_until__gt=now,
        leased_until__lte=horizon,
    ).aggregate(first=Min("leased_until"), last=Max("leased_until"))
    # A hair after the end: the claim compares leased_until < now.
    ends = {at + _PAST_LEASE for at in ends.values() if at is not None}
    return [WakeUp(lane, at, retry=False) for at in sorted(ends) for lane in Lane]


_PAST_LEASE = timedelta(milliseconds=50)
