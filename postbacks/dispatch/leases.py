"""Lease renewal: a worker process keeps the leases of the rows it holds alive.

A claim leases its rows for POSTBACKS_LEASE_SECONDS, a few seconds. While the process holds a
row (claimed, outcome not recorded yet: waiting for a slot, in flight, handed to the recorder,
or waiting for the database to come back) a thread of the process renews the lease every
quarter of it, in one statement for all of them. When the process dies (SIGKILL, a lost
machine, the task's hard time limit killing the pool child) the renewals stop with it, and its
rows are claimable again within one lease, instead of after the longest a request could take.
The same thread keeps the process's liveness key in the fairness gate alive: the host slots a
dead process held are free again within one lease too (postbacks/fairness.py).

Why this keeps "a row is never claimed again while its first worker may still be sending it":
only a live process sends, and a live process renews; a row is renewed at most until its
request's own deadline (`hold`'s `until`: the slot wait, the connect and total time-outs, and
a margin) has passed, so a request that somehow never ends cannot hold its row for ever. Each
renewal is fenced by the attempt number, so a row recorded meanwhile (lease cleared) or
claimed by another worker is left alone.

A database outage stops every renewal, and leases lapse while their holders are alive, with
outcomes waiting to be written (`Recorder.record_later`). So a process that meets an outage
notes it in Redis (`outage_note`), and until two leases after the last such note, claims leave
alone the leases that lapsed after it began (`lease_cutoff`): their holders renew them or
record the outcome within moments of the database answering. A worker killed during an outage
has its rows sent again once that grace ends. Should a worker reach neither the database nor
Redis for longer than a lease while its requests are out, another worker may claim those rows:
a duplicate delivery, never a lost one (the late outcome is fenced out by the attempt number).
"""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, connections
from django.utils import timezone
from redis.exceptions import RedisError

from config.outage import DATABASE_OUTAGE_ERRORS
from config.redis import get_redis
from postbacks import fairness
from postbacks.dispatch.rows import RELAXED, Claimed
from postbacks.models import Postback

logger = logging.getLogger(__name__)

# One renewal statement covers at most this many rows (a process holds up to its concurrency
# plus its hanging requests, ~1,100 by default).
_CHUNK = 2000
# After a failed renewal (database unreachable) the keeper tries again this soon.
_RETRY_SECONDS = 0.5

_RENEW_SQL = """
WITH {relaxed}
UPDATE {postback} AS p
SET leased_until = %(until)s
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS v(id, attempt)
WHERE EXISTS (SELECT 1 FROM relaxed)
  AND p.id = v.id AND p.attempts = v.attempt
  AND p.status = %(pending)s AND p.leased_until IS NOT NULL
"""


def _outage_key() -> str:
    return f"{settings.POSTBACKS_REDIS_PREFIX}db-outage"


def outage_note() -> None:
    """This process cannot reach the database. Marks in Redis since when leases may have
    lapsed unrenewed (a lease before this process noticed: its renewals come every quarter of
    one), kept two leases after the last note."""
    client = get_redis()
    if client is None:
        return
    lease = settings.POSTBACKS_LEASE_SECONDS
    since = time.time() - lease
    with contextlib.suppress(RedisError):
        pipe = client.pipeline(transaction=False)
        pipe.set(_outage_key(), repr(since), nx=True, px=int(2 * lease * 1000))
        pipe.pexpire(_outage_key(), int(2 * lease * 1000))
        pipe.execute()


def lease_cutoff(now: datetime) -> datetime:
    """A claim may take a leased row whose lease ended before this: `now`, or, after a
    database outage, when leases began lapsing unrenewed (see the module docstring)."""
    client = get_redis()
    if client is None:
        return now
    try:
        since = client.get(_outage_key())
    except RedisError:
        return now
    if since is None:
        return now
    return min(now, datetime.fromtimestamp(float(since), UTC))


def renewal_interval(lease: float) -> float:
    """Renewals come four times per lease: three can be late or lost before it runs out."""
    return lease / 4


def leases_renew(rows: Iterable[tuple[int, int]], *, lease: float) -> int:
    """Push the leases of `rows` ((pk, attempt) pairs still held by this process) to now +
    `lease`. A row recorded meanwhile (lease cleared) or claimed again (another attempt
    number) is not touched. Returns how many leases were renewed."""
    pairs = list(rows)
    until = timezone.now() + timedelta(seconds=lease)
    renewed = 0
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        if connection.vendor == "postgresql":
            sql = _RENEW_SQL.format(relaxed=RELAXED, postback=Postback._meta.db_table)
            params = {
                "until": until,
                "ids": [pk for pk, _ in chunk],
                "attempts": [attempt for _, attempt in chunk],
                "pending": Postback.Status.PENDING.value,
            }
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                renewed += cursor.rowcount
            continue
        for pk, attempt in chunk:  # SQLite, local mode: a handful of rows
            renewed += Postback.objects.filter(
                pk=pk, attempts=attempt, status=Postback.Status.PENDING, leased_until__isnull=False
            ).update(leased_until=until)
    return renewed


class LeaseKeeper:
    """This process's held rows and the thread that renews their leases (see the module
    docstring). `hold` after a claim, `release` once the outcome is recorded."""

    def __init__(self, lease: float) -> None:
        self.pid = os.getpid()
        self.lease = lease
        self._held: dict[tuple[int, int], float] = {}  # (pk, attempt) -> renew until (monotonic)
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="postback-leases", daemon=True)
        self._thread.start()

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def held_ids(self) -> set[int]:
        """Primary keys of the rows held now (tests, debugging)."""
        with self._lock:
            return {pk for pk, _ in self._held}

    def hold(self, rows: Iterable[Claimed], *, seconds: float) -> None:
        """Keep renewing these rows' leases for at most `seconds` (their requests' deadline)."""
        until = time.monotonic() + seconds
        with self._lock:
            self._held.update(((row.pk, row.attempt), until) for row in rows)
        self._changed.set()

    def release(self, rows: Iterable[Claimed]) -> None:
        with self._lock:
            for row in rows:
                self._held.pop((row.pk, row.attempt), None)

    def renew_now(self) -> int:
        """One renewal of every row still held (the thread's step; tests call it too), and of
        this process's claim on its hosts' slots (`Gate.heartbeat`): both end with the
        process."""
        now = time.monotonic()
        with self._lock:
            for key in [key for key, until in self._held.items() if until <= now]:
                # Past its request's deadline: let the lease run out (sent again if need be).
                del self._held[key]
            pairs = list(self._held)
        if not pairs:
            return 0
        fairness.get_gate().heartbeat()
        return leases_renew(pairs, lease=self.lease)

    def _run(self) -> None:
        delay = 0.0
        while True:
            if not self.held:
                # Nothing held: give the connection back and sleep until a claim.
                connections.close_all()
                self._changed.wait()
                delay = renewal_interval(self.lease)
            self._changed.clear()
            time.sleep(delay)
            try:
                self.renew_now()
                delay = renewal_interval(self.lease)
            except DATABASE_OUTAGE_ERRORS:
                outage_note()
                logger.warning("Database unavailable; renewing postback leases when it answers")
                connections.close_all()
                delay = min(_RETRY_SECONDS, renewal_interval(self.lease))
            except Exception:
                logger.warning("Could not renew postback leases; trying again", exc_info=True)
                connections.close_all()
                delay = min(_RETRY_SECONDS, renewal_interval(self.lease))


_keeper_lock = threading.Lock()
_keeper: LeaseKeeper | None = None


def get_keeper(lease: float) -> LeaseKeeper:
    """This worker process's keeper (a forked child starts its own)."""
    global _keeper
    with _keeper_lock:
        if _keeper is None or _keeper.pid != os.getpid():
            _keeper = LeaseKeeper(lease)
        _keeper.lease = lease  # the setting, as the claim that calls this used it
        return _keeper
