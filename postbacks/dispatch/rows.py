"""Rows of a batch: claim them (one statement), and record how they ended (in bulk).

Every write is guarded by the attempt number the claim gave the row: a row re-claimed after its
lease expired belongs to its new holder, and a late writer's update matches nothing.
"""

import contextlib
import enum
import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from postbacks import health, http, metrics, retry
from postbacks.models import Postback, PostbackAttempt
from publishers.models import CallbackTemplate

logger = logging.getLogger(__name__)


class Lane(enum.StrEnum):
    FIRST = "first"  # postbacks whose first attempt has not ended (never tried, or orphaned)
    RETRY = "retry"  # anything due: retries, replays, postbacks of a resumed template


@dataclass(frozen=True)
class DispatchConfig:
    batch_size: int
    concurrency: int
    wait: float
    dns_ttl: float
    lease: float
    allow_private: bool
    connect_timeout: float
    total_timeout: float
    max_bytes: int
    excerpt_bytes: int
    host_cap: int
    host_caps: dict[str, int]  # per-host exceptions to host_cap
    task_seconds: float
    retry_share: float
    busy_defer: float
    max_countdown: float
    slow: float = 2.0  # seconds after which a request's host counts as hanging
    slow_max: int = 1000  # requests of hanging hosts per process, beside `concurrency`
    claim_per_slot: int = 8  # rows a claim takes per free slot of a host

    @classmethod
    def from_settings(cls) -> "DispatchConfig":
        s = settings
        return cls(
            batch_size=s.POSTBACKS_DISPATCH_BATCH_SIZE,
            concurrency=s.POSTBACKS_DISPATCH_CONCURRENCY,
            wait=s.POSTBACKS_DISPATCH_WAIT_SECONDS,
            dns_ttl=s.POSTBACKS_DISPATCH_DNS_TTL_SECONDS,
            lease=s.POSTBACKS_LEASE_SECONDS,
            allow_private=s.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS,
            connect_timeout=s.POSTBACKS_CONNECT_TIMEOUT,
            total_timeout=s.POSTBACKS_TOTAL_TIMEOUT,
            max_bytes=s.POSTBACKS_MAX_RESPONSE_BYTES,
            excerpt_bytes=s.POSTBACKS_EXCERPT_BYTES,
            host_cap=s.POSTBACKS_HOST_MAX_IN_FLIGHT,
            host_caps={
                h.lower(): int(c) for h, c in s.POSTBACKS_HOST_MAX_IN_FLIGHT_BY_HOST.items()
            },
            task_seconds=s.POSTBACKS_DISPATCH_TASK_SECONDS,
            retry_share=s.POSTBACKS_HOST_RETRY_SHARE,
            busy_defer=s.POSTBACKS_HOST_BUSY_DEFER_SECONDS,
            max_countdown=s.POSTBACKS_MAX_COUNTDOWN_SECONDS,
            slow=s.POSTBACKS_HOST_SLOW_SECONDS,
            slow_max=s.POSTBACKS_DISPATCH_SLOW_MAX,
            claim_per_slot=s.POSTBACKS_HOST_CLAIM_PER_SLOT,
        )

    def cap_for(self, lane: Lane, host: str = "") -> int:
        """Requests in flight allowed to `host` ("name:port") for a lane's batches."""
        cap = self.host_caps.get(host, self.host_cap)
        if lane is Lane.FIRST:
            return cap
        return max(1, int(cap * self.retry_share))


@dataclass(frozen=True)
class Claimed:
    """One claimed row: `attempt` is the number this claim gave it."""

    pk: int
    attempt: int
    url: str
    event_id: str
    publisher_id: int
    template_id: int | None
    # The template had a failing streak when the batch started: a success must reset it.
    template_failing: bool = False
    body: str = ""  # a JSON webhook's frozen body ("" for a GET)

    @property
    def lane(self) -> Lane:
        return Lane.FIRST if self.attempt == 1 else Lane.RETRY


@dataclass
class Outcome:
    """How one claimed row ended: an answer, an error, or `defer_until` (never sent: the claim
    is given back and the row is due again then, without counting an attempt)."""

    row: Claimed
    started_at: datetime | None = None
    duration_ms: int = 0
    result: http.DeliveryResult | None = None
    error: http.DeliveryError | None = None
    defer_until: datetime | None = None

    def breaker_verdict(self) -> str | None:
        """What this outcome says about its host (retry.host_verdict), or None when no request
        was made (put back, or the URL itself was refused)."""
        if self.result is not None:
            return retry.host_verdict(retry.classify_status(self.result.status_code), answered=True)
        if self.error is not None:
            verdict = retry.classify_error(self.error.kind, self.error.permanent)
            return retry.host_verdict(verdict, answered=False, kind=self.error.kind)
        return None


@dataclass(frozen=True)
class AttemptDecision:
    """What one attempt's answer (or error) means for its postback."""

    verdict: retry.Verdict
    outcome: str  # PostbackAttempt.Outcome
    retry_in: float | None  # seconds until the next attempt, when there is one
    error_text: str
    changes: dict  # Postback fields to write, guarded by the attempt number
    gone: bool  # 410: the template is paused too


def attempt_decide(
    *,
    attempt_number: int,
    result: http.DeliveryResult | None,
    error: http.DeliveryError | None,
    finished: datetime,
    rng: random.Random | None = None,
    has_template: bool = True,
) -> AttemptDecision:
    """Apply the retry policy to one attempt.

    A 410 Gone pauses the template (`gone`), and a pause holds rather than drops: the row
    stays pending on its schedule and the pause holds it until the template is resumed
    (should the pause not happen, the row is simply retried). Without a template (deleted)
    there is nothing to resume, and the 410 fails the row."""
    if result is not None:
        verdict = retry.classify_status(result.status_code)
    else:
        assert error is not None
        verdict = retry.classify_error(error.kind, error.permanent)
    gone = verdict is retry.Verdict.STOP and result is not None and has_template
    retry_in: float | None = None
    if verdict is retry.Verdict.SUCCESS:
        outcome = PostbackAttempt.Outcome.SUCCESS
    elif (verdict is retry.Verdict.STOP and not gone) or (
        verdict is retry.Verdict.LIMITED and attempt_number >= retry.LIMITED_MAX_ATTEMPTS
    ):
        outcome = PostbackAttempt.Outcome.FAILED
    else:
        retry_after = retry.parse_retry_after(result.retry_after if result else None, finished)
        retry_in = retry.retry_delay(
            attempt_number, settings.POSTBACKS_RETRY_SCHEDULE, rng=rng, retry_after=retry_after
        )
        outcome = (
            PostbackAttempt.Outcome.FAILED if retry_in is None else PostbackAttempt.Outcome.RETRY
        )

    error_text = error.message[:500] if error else ""
    if result and outcome != PostbackAttempt.Outcome.SUCCESS:
        error_text = f"HTTP {result.status_code}"
    changes: dict = {
        "leased_until": None,
        "last_status_code": result.status_code if result else None,
        "last_error": error_text,
    }
    if outcome == PostbackAttempt.Outcome.SUCCESS:
        changes |= {"status": Postback.Status.SUCCEEDED, "delivered_at": finished}
    elif outcome == PostbackAttempt.Outcome.FAILED:
        changes |= {"status": Postback.Status.FAILED}
    else:
        changes |= {"next_attempt_at": finished + timedelta(seconds=retry_in or 0)}
    return AttemptDecision(verdict, outcome, retry_in, error_text, changes, gone)


# --- Claim ------------------------------------------------------------------------------------

# One statement, so one round trip in autocommit (it is atomic on its own). The `relaxed`
# CTE turns off the commit's WAL-flush wait for this statement's transaction (see RELAXED).
#
# Fair across hosts: `ranked` numbers each host's due rows, oldest due first (its `turn`), and
# keeps at most the host's quota of them: the slots it has free (the gate's count, passed in
# `hosts`/`quotas`; a host not listed is idle and gets `default_quota`). A host at its cap, or
# held by its breaker, has quota 0: none of its rows is even sorted. `picked` then takes the
# first turn of every host, then the second, …: round robin, so a thousand due rows of one
# endpoint cost the others nothing.
_CLAIM_SQL = """
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
quota AS (
    SELECT * FROM unnest(%(hosts)s::text[], %(quotas)s::integer[]) AS u(host, quota)
),
ranked AS MATERIALIZED (
    SELECT c.id, c.next_attempt_at,
           row_number() OVER (PARTITION BY c.host ORDER BY c.next_attempt_at, c.id) AS turn,
           COALESCE(u.quota, %(default_quota)s) AS quota
    FROM {postback} AS c LEFT JOIN quota AS u ON u.host = c.host
    WHERE c.status = %(pending)s
      AND c.next_attempt_at <= %(now)s
      AND (c.leased_until IS NULL OR c.leased_until < %(expired)s)
      AND COALESCE(u.quota, %(default_quota)s) > 0
      {lane_filter}
      AND NOT EXISTS (
          SELECT 1 FROM {template} AS t WHERE t.id = c.template_id AND t.paused_at IS NOT NULL
      )
),
picked AS MATERIALIZED (
    SELECT q.id FROM {postback} AS q JOIN ranked AS r ON r.id = q.id
    WHERE r.turn <= r.quota
      AND q.status = %(pending)s
      AND q.next_attempt_at <= %(now)s
      AND (q.leased_until IS NULL OR q.leased_until < %(expired)s)
    ORDER BY r.turn, r.next_attempt_at, r.id
    LIMIT %(limit)s
    FOR UPDATE OF q SKIP LOCKED
)
UPDATE {postback} AS p
SET leased_until = %(lease)s, attempts = p.attempts + 1
FROM picked
WHERE EXISTS (SELECT 1 FROM relaxed) AND p.id = picked.id
RETURNING p.id, p.attempts, p.url, p.event_id, p.publisher_id, p.template_id, p.next_attempt_at,
    p.body
"""
# The picks are materialized CTEs, evaluated once: as an `IN (SELECT … LIMIT n)` the planner
# may run it more than once in one statement and lease more than n rows. The due conditions
# are repeated in `picked`: a row locked there is checked again in its latest version (another
# claim may have leased it since `ranked` read it).


_NO_QUOTA = 2**31 - 1

# The first lane's rows: never tried, or claimed once by a worker that died before recording
# anything (its lease ran out: no outcome, no attempt row). That attempt never ended, so the
# row is still a first attempt: it must not queue behind retries, which get only a share of a
# host's slots, when its worker is killed.
FIRST_ATTEMPT = Q(attempts=0) | Q(attempts=1, last_status_code__isnull=True, last_error="")
_FIRST_ATTEMPT_SQL = (
    "AND (c.attempts = 0 OR (c.attempts = 1 AND c.last_status_code IS NULL AND c.last_error = ''))"
)


def due_rows(lane: Lane, now: datetime):
    """Due rows of a lane that no live lease holds, templates not paused."""
    due = (
        Postback.objects.filter(status=Postback.Status.PENDING, next_attempt_at__lte=now)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .exclude(template__paused_at__isnull=False)
    )
    return due.filter(FIRST_ATTEMPT) if lane is Lane.FIRST else due


# Last answers that mean "the host was down" (no answer at all is the other way to say it):
# rows that got one are retried at once when the host heals. 429 and 425 asked us to come
# back later and keep their time; other 4xx were about the postback, not the host.
_HOST_DOWN_CODES = Q(last_status_code__isnull=True) | Q(last_status_code__gte=500)
_HOST_DOWN_CODES |= Q(last_status_code=408)


def host_backlog_release(hosts: Sequence[str], now: datetime) -> int:
    """Hosts whose breaker just closed (a probe answered): their pending rows whose last
    attempt failed because the host was down, waiting for a retry minutes or hours away, become
    due now. (Rows the breaker merely held back are due already: the claim skipped them.) A
    paused template's rows stay held. Returns how many rows were made due.

    Svix and Convoy re-drive a recovered endpoint the same way; without it, a host that was
    down for a minute would get its backlog back on the retry schedule (5 min, 30 min, …)."""
    if not hosts:
        return 0
    waiting = (
        Postback.objects.filter(
            status=Postback.Status.PENDING,
            host__in=list(hosts),
            next_attempt_at__gt=now,
            attempts__gt=0,
        )
        .filter(_HOST_DOWN_CODES)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .exclude(template__paused_at__isnull=False)
    )
    return waiting.update(next_attempt_at=now)


def claim_batch(
    *,
    lane: Lane,
    limit: int,
    now: datetime,
    lease: float,
    quotas: Mapping[str, int] | None = None,
    default_quota: int | None = None,
    expired_before: datetime | None = None,
) -> list[Claimed]:
    """Lease up to `limit` due rows of `lane` in one statement, round robin across hosts,
    oldest due first within each: at most `quotas[host]` rows of a listed host (0: none),
    `default_quota` of any other (None: no limit). A leased row is taken only if its lease
    ended before `expired_before` (default `now`; earlier after a database outage:
    leases.lease_cutoff)."""
    if limit <= 0:
        return []
    quotas = quotas or {}
    default = _NO_QUOTA if default_quota is None else default_quota
    until = now + timedelta(seconds=lease)
    if connection.vendor == "postgresql":
        sql = _CLAIM_SQL.format(
            postback=Postback._meta.db_table,
            template=CallbackTemplate._meta.db_table,
            lane_filter=_FIRST_ATTEMPT_SQL if lane is Lane.FIRST else "",
        )
        params = {
            "lease": until,
            "pending": Postback.Status.PENDING.value,
            "now": now,
            "expired": expired_before or now,
            "limit": limit,
            "hosts": list(quotas),
            "quotas": list(quotas.values()),
            "default_quota": default,
        }
        with _server_cursor() as cursor:
            cursor.execute(sql, params)
            rows = sorted(cursor.fetchall(), key=lambda r: (r[6], r[0]))
        return [Claimed(*row[:6], body=row[7]) for row in rows]
    # SQLite (local mode): its transactions take the write lock up front (IMMEDIATE), so
    # select-then-update in one transaction is as good as the single statement.
    with transaction.atomic():
        due = due_rows(lane, now).order_by("next_attempt_at", "pk")
        turns: dict[str, int] = defaultdict(int)
        ranked = []
        for pk, host, due_at in due.values_list("pk", "host", "next_attempt_at"):
            turns[host] += 1
            if turns[host] <= quotas.get(host, default):
                ranked.append((turns[host], due_at, pk))
        ids = [pk for _, _, pk in sorted(ranked)[:limit]]
        Postback.objects.filter(pk__in=ids).update(leased_until=until, attempts=F("attempts") + 1)
        found = Postback.objects.filter(pk__in=ids).values_list(
            "pk",
            "attempts",
            "url",
            "event_id",
            "publisher_id",
            "template_id",
            "next_attempt_at",
            "body",
        )
        rows = sorted(found, key=lambda r: (r[6], r[0]))
    return [Claimed(*row[:6], body=row[7]) for row in rows]


# --- Record -----------------------------------------------------------------------------------

# Postback fields the bulk PostgreSQL update knows how to write; anything else in
# `AttemptDecision.changes` makes record_outcomes fall back to one ORM update per row.
_BULK_FIELDS = frozenset(
    {"leased_until", "last_status_code", "last_error", "status", "delivered_at", "next_attempt_at"}
)
# PostbackAttempt columns the bulk insert writes (with their array types); if the model gains
# a column, record_outcomes falls back to bulk_create rather than guess its value.
_ATTEMPT_COLUMNS = {
    "postback_id": "bigint",
    "number": "integer",
    "started_at": "timestamptz",
    "duration_ms": "integer",
    "url": "text",
    "status_code": "smallint",
    "response_excerpt": "text",
    "error_kind": "text",
    "error": "text",
    "resolved_ip": "inet",
    "outcome": "text",
}

# Each part reads its rows from one JSON document (`jsonb_to_recordset`): serialising a batch
# with the json module costs a few microseconds a row, where binding one array per column
# cost ~90 µs a row in psycopg's array dumper, on the task's thread that also feeds the
# sender.
_RECORD_PARTS = {
    "attempts": """
attempts AS (
    INSERT INTO {attempt} ({columns})
    SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS v({definitions})
)""",
    "states": """
states AS (
    UPDATE {postback} AS p
    SET leased_until = NULL,
        status = v.status,
        next_attempt_at = COALESCE(v.next_at, p.next_attempt_at),
        delivered_at = COALESCE(v.delivered_at, p.delivered_at),
        last_status_code = v.code,
        last_error = v.error
    FROM jsonb_to_recordset(%s::jsonb)
        AS v(id bigint, attempt integer, status text, next_at timestamptz,
             delivered_at timestamptz, code integer, error text)
    WHERE p.id = v.id AND p.attempts = v.attempt
    RETURNING p.id
)""",
    "given_back": """
given_back AS (
    UPDATE {postback} AS p
    SET attempts = p.attempts - 1, leased_until = NULL,
        next_attempt_at = v.due
    FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, attempt integer, due timestamptz)
    WHERE p.id = v.id AND p.attempts = v.attempt
)""",
}


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a recorded value")


def _document(rows: list[dict]) -> str:
    return json.dumps(rows, default=_json_value, separators=(",", ":"))


# Why the commit may skip its WAL-flush wait (synchronous_commit off, for delivery bookkeeping
# only): if PostgreSQL itself crashes, the last fraction of a second of claims and outcomes can
# be lost, which only puts those rows back to an earlier state whose lease then expires: they
# are sent again (a duplicate), never dropped. It takes ~3.5 ms off each commit here, and so
# also shortens the window in which a killed worker leaves postbacks sent but unrecorded.
RELAXED = "relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS setting)"


@dataclass(frozen=True)
class WakeUp:
    lane: Lane
    at: datetime
    retry: bool  # a retry's next attempt (else a row put back without an attempt)


def record_outcomes(outcomes: Sequence[Outcome]) -> list[WakeUp]:
    """Write a group of outcomes in one transaction: attempt rows, row states (each guarded by
    its attempt number: a row re-claimed after its lease expired belongs to the new holder),
    claims given back, template health. Returns when each lane has rows due again."""
    if not outcomes:
        return []
    now = timezone.now()
    attempts: list[dict] = []
    updates: list[tuple[Claimed, dict]] = []
    given_back: list[tuple[Claimed, datetime]] = []
    tallies: dict[int, health.Tally] = defaultdict(health.Tally)
    gone: set[int] = set()
    judged: list[tuple[Claimed, AttemptDecision]] = []
    wakeups: list[WakeUp] = []
    for outcome in outcomes:
        row = outcome.row
        if outcome.defer_until is not None:
            given_back.append((row, outcome.defer_until))
            wakeups.append(WakeUp(row.lane, outcome.defer_until, retry=False))
            continue
        result, error = outcome.result, outcome.error
        finished = (outcome.started_at or now) + timedelta(milliseconds=outcome.duration_ms)
        decision = attempt_decide(
            attempt_number=row.attempt,
            result=result,
            error=error,
            finished=finished,
            has_template=row.template_id is not None,
        )
        attempts.append(
            {
                "postback_id": row.pk,
                "number": row.attempt,
                "started_at": outcome.started_at or now,
                "duration_ms": outcome.duration_ms,
                "url": row.url,
                "status_code": result.status_code if result else None,
                "response_excerpt": result.body_excerpt if result else "",
                "error_kind": error.kind if error else "",
                "error": decision.error_text,
                "resolved_ip": (result.resolved_ip if result else error and error.resolved_ip)
                or None,
                "outcome": str(decision.outcome),
            }
        )
        updates.append((row, decision.changes))
        if decision.retry_in is not None:
            wakeups.append(
                WakeUp(Lane.RETRY, finished + timedelta(seconds=decision.retry_in), retry=True)
            )
        # Health is written only where it changes: failures, and successes of templates that
        # were failing (most batches write nothing for it).
        if row.template_id and (
            decision.outcome != PostbackAttempt.Outcome.SUCCESS or row.template_failing
        ):
            judged.append((row, decision))
    if connection.vendor == "postgresql" and _bulk_ready(updates):
        current = _record_in_one_statement(attempts, updates, given_back)
    else:
        current = set()
        with transaction.atomic():
            if attempts:
                PostbackAttempt.objects.bulk_create(PostbackAttempt(**v) for v in attempts)
            for row, changes in updates:
                if Postback.objects.filter(pk=row.pk, attempts=row.attempt).update(**changes):
                    current.add(row.pk)
            for row, due in given_back:
                Postback.objects.filter(pk=row.pk, attempts=row.attempt).update(
                    attempts=F("attempts") - 1,
                    leased_until=None,
                    next_attempt_at=due,
                )
    # Bug 5: a late answer from a worker fenced out (the row was claimed again since) says
    # nothing about the endpoint now: it must not count toward health nor pause on a 410.
    for row, decision in judged:
        if row.pk in current:
            tallies[row.template_id].add(decision.verdict)
            if decision.gone:
                gone.add(row.template_id)
    if tallies or gone:
        with transaction.atomic():
            health.endpoint_outcomes_record(tallies, gone=gone, now=now)
    # The documented per-attempt metrics, once each attempt row is written.
    for attempt in attempts:
        metrics.attempt_observe(
            outcome=attempt["outcome"], duration_seconds=attempt["duration_ms"] / 1000
        )
    return wakeups


def _bulk_ready(updates: list[tuple[Claimed, dict]]) -> bool:
    """The one-statement path writes the columns it knows; if the model or the retry policy
    grew something else, the ORM path writes it instead of guessing."""
    model_columns = {f.column for f in PostbackAttempt._meta.concrete_fields} - {"id"}
    return model_columns == set(_ATTEMPT_COLUMNS) and not any(
        set(changes) - _BULK_FIELDS for _, changes in updates
    )


@contextlib.contextmanager
def _server_cursor() -> Iterator[psycopg.Cursor]:
    """A cursor that sends parameters separately (server-side binding): a batch's documents go
    over as they are instead of being quoted into the SQL text in Python.

    Being psycopg's own, its errors are not Django's: a broken connection would raise
    psycopg's OperationalError, which nothing takes for an outage (the task would die with its
    requests unrecorded, and their leases would send them again). Django's wrapper turns it
    into django.db's and marks the connection unusable."""
    with connection.wrap_database_errors:
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            yield cursor


def _record_in_one_statement(
    attempts: list[dict],
    updates: list[tuple[Claimed, dict]],
    given_back: list[tuple[Claimed, datetime]],
) -> set[int]:
    """Attempt rows, row states and give-backs in one statement: atomic on its own, and one
    round trip (the group commits that follow each other while requests complete are many).
    Returns the ids whose state was written (the others were fenced out)."""
    parts = [RELAXED]
    params: list[str] = []
    if attempts:
        names = list(_ATTEMPT_COLUMNS)
        parts.append(
            _RECORD_PARTS["attempts"].format(
                attempt=PostbackAttempt._meta.db_table,
                columns=", ".join(names),
                definitions=", ".join(f"{name} {_ATTEMPT_COLUMNS[name]}" for name in names),
            )
        )
        params.append(_document(attempts))
    if updates:
        parts.append(_RECORD_PARTS["states"].format(postback=Postback._meta.db_table))
        params.append(
            _document(
                [
                    {
                        "id": row.pk,
                        "attempt": row.attempt,
                        "status": str(changes.get("status", Postback.Status.PENDING)),
                        "next_at": changes.get("next_attempt_at"),
                        "delivered_at": changes.get("delivered_at"),
                        "code": changes.get("last_status_code"),
                        "error": changes.get("last_error", ""),
                    }
                    for row, changes in updates
                ]
            )
        )
    if given_back:
        parts.append(_RECORD_PARTS["given_back"].format(postback=Postback._meta.db_table))
        params.append(
            _document([{"id": r.pk, "attempt": r.attempt, "due": due} for r, due in given_back])
        )
    final = (
        "SELECT states.id FROM relaxed LEFT JOIN states ON true"
        if updates
        else ("SELECT NULL FROM relaxed")
    )
    sql = "WITH " + ",".join(parts) + "\n" + final
    with _server_cursor() as cursor:
        cursor.execute(sql, params)
        return {pk for (pk,) in cursor.fetchall() if pk is not None}
