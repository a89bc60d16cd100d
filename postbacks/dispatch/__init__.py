"""Batch delivery: one Celery task claims a batch of due postbacks in one statement and sends
them concurrently, paying Celery's per-task cost once per batch instead of once per postback.

The guarantees of `services.postback_deliver` all hold, row by row:
- The claim is a compare-and-swap on many rows at once (PostgreSQL `UPDATE … WHERE id IN
  (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING`): each row gets a lease and its attempt
  number, concurrent claims skip each other's rows, and a row whose worker died is claimed
  again once its lease has expired.
- Every request goes through `http.vet_destination` (the SSRF guard); the connection then goes
  only to the vetted addresses (`_VettedResolver`), keeping the URL's host for the Host header
  and TLS, with the same timeouts, no redirects and the same capped read as `http.send_get`.
- Each answer goes through `services.attempt_decide` (the same retry policy); attempt rows are
  inserted and row states updated in one statement, each guarded by its attempt number;
  retries wait in `next_attempt_at` (short ones also get a countdown kick).
- Results are recorded as they arrive (a group commit each time the task looks up), not at the
  end of a batch, so a killed worker leaves at most its requests in flight sent-but-unrecorded
  (per host at most the host's cap: each of those is delivered again). Results that can't be
  written because the database is unreachable are kept by the process's `Recorder` and
  written when it answers again, so a database outage doesn't send them twice.

A task is pipelined: it claims the next batch while the last one is in flight, for up to
POSTBACKS_DISPATCH_TASK_SECONDS. Once it claims no more, it waits for its requests up to
POSTBACKS_DISPATCH_WAIT_SECONDS, but no more than a quiet 50 ms without one finishing: what is
left then is slow (a hanging endpoint, a far one) and finishes in the background, recorded by
the process's `Recorder`, while the worker process takes other work.

Fairness (postbacks/fairness.py): each host group asks the shared gate for slots; a host behind
an open breaker gets its postbacks put back (`defer`, no attempt counted); a host at its cap
gets them queued for a moment (another process's batch usually frees its slots within
milliseconds, and a batch of this process hands its slots straight to the next one of the same
host), then put back.

Lanes: the FIRST lane claims only postbacks never tried (attempts = 0) and runs on its own
Celery queue, so first attempts never wait behind retries; the RETRY lane claims anything due
(retries, replays, resumed templates). Retries also get at most a share of each host's cap.

Wake-ups: new postbacks "kick" their lane on commit; kicks are coalesced through a Redis flag
(a queued kick covers every row committed before it starts), a full batch kicks a successor
before sending (so other worker processes join in), and the beat sweeper kicks whatever is due.
"""

import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import os
import queue
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connections
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import RedisError
from yarl import URL

from config.outage import DATABASE_OUTAGE_ERRORS
from postbacks import fairness, http, services
from postbacks.dispatch.rows import (
    Claimed,
    DispatchConfig,
    Lane,
    Outcome,
    WakeUp,
    claim_batch,
    due_rows,
    record_outcomes,
)
from postbacks.dispatch.sender import HostGroup, Job, Sender, get_sender

__all__ = [
    "DispatchConfig",
    "DispatchReport",
    "Lane",
    "Sender",
    "claim_batch",
    "drain",
    "kick",
    "kick_if_due",
    "postbacks_dispatch",
    "record_outcomes",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchReport:
    claimed: int = 0
    sent: int = 0  # handed to the sender (the rest was deferred or refused up front)
    deferred: int = 0
    recorded: int = 0  # outcomes recorded before the task returned
    handed_off: int = 0  # still in flight when the task returned (the recorder finishes them)
    batches: int = 0


class Recorder:
    """Records the outcomes of requests still in flight when their task returned (a hanging
    endpoint, a slow one), in a thread of the worker process with its own database connection,
    and gives their slots back. If the process dies first, their leases expire and the rows
    are claimed again: delivered at least once.

    It also writes the outcomes whose recording met a database outage (`record_later`), as
    soon as the database answers again: a postback sent just before an outage is recorded
    after it instead of being sent a second time when its lease runs out. A late write is
    safe: each row's update is fenced by its attempt number."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._handoffs: queue.SimpleQueue[tuple[list[Job], list[HostGroup], list[Outcome]]] = (
            queue.SimpleQueue()
        )
        self._outstanding = 0  # jobs handed off and outcomes not recorded yet
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="postback-recorder", daemon=True)
        self._thread.start()

    def hand_off(self, jobs: list[Job], groups: list[HostGroup]) -> None:
        with self._changed:
            self._outstanding += len(jobs)
        self._handoffs.put((jobs, groups, []))

    def record_later(self, outcomes: list[Outcome]) -> None:
        with self._changed:
            self._outstanding += len(outcomes)
        self._handoffs.put(([], [], outcomes))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything handed off is recorded (tests, benchmarks, shutdown)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._outstanding == 0, timeout)

    def _run(self) -> None:
        pending: dict[concurrent.futures.Future, Job] = {}
        groups: list[HostGroup] = []
        # Batches of outcomes waiting for the database, each written on its own: one that did
        # commit before its connection broke must not take fresh outcomes down with it.
        waiting: list[list[Outcome]] = []

        def take(item: tuple[list[Job], list[HostGroup], list[Outcome]]) -> None:
            jobs, new_groups, outcomes = item
            pending.update((job.future, job) for job in jobs)
            groups.extend(new_groups)
            if outcomes:
                waiting.append(outcomes)

        while True:
            if not pending:
                if not waiting:
                    # Idle: give the connection back (a worker reconnects on the next
                    # straggler, a few ms; a test database can be dropped).
                    connections.close_all()
                with contextlib.suppress(queue.Empty):
                    take(self._handoffs.get(timeout=_OUTAGE_RETRY_SECONDS if waiting else None))
            while not self._handoffs.empty():
                take(self._handoffs.get())
            done, _ = concurrent.futures.wait(
                list(pending), timeout=0.05, return_when=concurrent.futures.FIRST_COMPLETED
            )
            outcomes = [pending.pop(future).future.result() for future in done]
            groups[:], finished = _split_done(groups)
            written, still_waiting = 0, []
            for batch in [*waiting, outcomes]:
                if not batch:
                    continue
                if self._write(batch):
                    written += len(batch)
                else:
                    still_waiting.append(batch)
            waiting[:] = still_waiting
            try:
                fairness.get_gate().settle(_tallies(finished))
            except Exception:
                logger.exception("Could not give back the slots of %d host groups", len(finished))
            with self._changed:
                self._outstanding -= written
                self._changed.notify_all()

    @staticmethod
    def _write(outcomes: list[Outcome]) -> bool:
        """Record one batch of outcomes; False when the database is unreachable (try again)."""
        try:
            close_old_connections()
            schedule_wakeups(record_outcomes(outcomes))
        except DATABASE_OUTAGE_ERRORS:
            return False
        except IntegrityError:
            # Its attempt rows exist: an earlier try committed before its connection broke.
            logger.warning("%d postback outcomes were recorded already", len(outcomes))
        except Exception:
            # The rows stay leased; when the leases expire they are sent again.
            logger.exception("Could not record %d postback outcomes", len(outcomes))
        return True


def _split_done(groups: list[HostGroup]) -> tuple[list[HostGroup], list[HostGroup]]:
    """(still running, finished). One look per group: a group finishing meanwhile must land
    in exactly one of the two, or its slots would never be given back."""
    running, finished = [], []
    for group in groups:
        done = all(job.future.done() for job in group.jobs)
        (finished if done else running).append(group)
    return running, finished


def _tallies(groups: Iterable[HostGroup]) -> dict[str, fairness.HostTally]:
    """Per host, for the gate: several batches' groups of one host may end together."""
    merged: dict[str, fairness.HostTally] = {}
    for group in groups:
        tally = group.tally()
        if group.host in merged:
            total = merged[group.host]
            total.ok += tally.ok
            total.failed += tally.failed
            total.tokens += tally.tokens
        else:
            merged[group.host] = tally
    return merged


_recorder_lock = threading.Lock()
_recorder: Recorder | None = None


def get_recorder() -> Recorder:
    """This worker process's recorder (a forked child starts its own)."""
    global _recorder
    with _recorder_lock:
        if _recorder is None or _recorder.pid != os.getpid():
            _recorder = Recorder()
        return _recorder


# While outcomes wait for the database, the recorder tries them again this often.
_OUTAGE_RETRY_SECONDS = 0.5


def _record(outcomes: list[Outcome]) -> list[WakeUp]:
    """`record_outcomes`, except that outcomes meeting a database outage are left to the
    recorder, which writes them once the database answers (not sent again meanwhile)."""
    try:
        return record_outcomes(outcomes)
    except DATABASE_OUTAGE_ERRORS:
        logger.warning("Database unavailable; %d postback outcomes recorded later", len(outcomes))
        get_recorder().record_later(outcomes)
        return []


# --- The batch --------------------------------------------------------------------------------


def postbacks_dispatch(
    lane: Lane = Lane.FIRST,
    *,
    limit: int | None = None,
    batches: int | None = None,
    wait: float | None = None,
    kicks: bool = True,
    sender: Sender | None = None,
    resolver: http.Resolver | None = None,
) -> DispatchReport:
    """Claim batches of `lane` and deliver them: the body of the `dispatch_postbacks` task.

    Pipelined: the next batch is claimed while the previous one is still in flight, for up to
    POSTBACKS_DISPATCH_TASK_SECONDS (or `batches` batches), until nothing more is due.
    `limit`: rows per batch (default POSTBACKS_DISPATCH_BATCH_SIZE). `wait`: how long to wait
    for requests after the last claim (None: the setting; math.inf: all of them, everything
    recorded before returning); the rest is handed to the process's recorder. `kicks`: publish
    follow-up tasks (a successor when the first batch is full, countdown wake-ups for retries
    and deferred rows). `resolver` replaces the system resolver in the SSRF check (tests).
    """
    conf = DispatchConfig.from_settings()
    sender = sender or get_sender()
    gate = fairness.get_gate()
    clear_kick(lane)
    batch_size = limit or conf.batch_size
    wait_seconds = conf.wait if wait is None else wait
    # How long a row may wait for one of its host's slots before it is put back: less than the
    # wait (so the task usually records those rows itself), and never so long that its lease
    # could run out before its request ends.
    slot_wait = min(
        0.8 * wait_seconds, max(conf.lease - conf.total_timeout - conf.connect_timeout, 0.0)
    )
    claim_until = time.monotonic() + conf.task_seconds
    report = _Tally()
    pending: dict[concurrent.futures.Future, Job] = {}
    open_groups: list[HostGroup] = []
    wakeups: list[WakeUp] = []
    more_due = True
    last_start = time.monotonic()
    while True:
        room = conf.concurrency - sender.in_flight
        may_claim = (
            more_due
            and time.monotonic() < claim_until
            and (batches is None or report.batches < batches)
        )
        if may_claim and room > 0 and len(pending) <= batch_size // 2:
            size = min(batch_size, room)
            try:
                rows = claim_batch(lane=lane, limit=size, now=timezone.now(), lease=conf.lease)
            except DATABASE_OUTAGE_ERRORS:
                if not pending:
                    raise
                # Claim no more; what is in flight is still recorded (now or by the recorder).
                rows, size = [], 1
            more_due = len(rows) == size
            if more_due and kicks and not report.batches:
                # A full first batch: more is due. Let another worker process start on it.
                kick(lane, coalesce=False)
            if rows:
                report.batches += 1
                report.claimed += len(rows)
                sending, immediate = _start(rows, lane, conf, gate, sender, resolver, slot_wait)
                report.sent += sum(len(g.jobs) for g in sending)
                report.deferred += sum(1 for o in immediate if o.defer_until is not None)
                report.recorded += len(immediate)
                wakeups += _record(immediate)
                pending.update((job.future, job) for g in sending for job in g.jobs)
                open_groups += sending
                last_start = time.monotonic()
                continue
        elif may_claim and room <= 0 and not pending and kicks:
            # Requests of earlier tasks fill this process; try again shortly (maybe elsewhere).
            kick(lane, countdown=conf.busy_defer)
        if not pending:
            break
        if may_claim:
            timeout = _POLL_SECONDS  # come back to claim when half the work is done
        else:
            timeout = last_start + wait_seconds - time.monotonic()
            if timeout <= 0:
                break
            if not math.isinf(wait_seconds):
                # Nothing finished for this long: what is left is slow (a hanging endpoint,
                # a far one). The recorder finishes it; this process takes other work.
                timeout = min(timeout, _QUIET_SECONDS)
        done, _ = concurrent.futures.wait(
            list(pending),
            timeout=None if math.isinf(timeout) else timeout,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )
        if not done and not may_claim:
            break
        # Whatever finished while the last group was being written goes in this one.
        outcomes = [pending.pop(future).future.result() for future in done]
        report.recorded += len(outcomes)
        report.deferred += sum(1 for o in outcomes if o.defer_until is not None)
        wakeups += _record(outcomes)
        open_groups, finished = _split_done(open_groups)
        if finished:
            gate.settle(_tallies(finished))
    if pending:
        get_recorder().hand_off(list(pending.values()), open_groups)
    if kicks:
        schedule_wakeups(wakeups)
    return DispatchReport(
        claimed=report.claimed,
        sent=report.sent,
        deferred=report.deferred,
        recorded=report.recorded,
        handed_off=len(pending),
        batches=report.batches,
    )


# While more may be claimed, the task looks up from its requests this often.
_POLL_SECONDS = 0.05
# Once nothing more is claimed, the task leaves its requests to the recorder after this long
# without one finishing.
_QUIET_SECONDS = 0.05


@dataclasses.dataclass
class _Tally:
    batches: int = 0
    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    recorded: int = 0


def _start(
    rows: Sequence[Claimed],
    lane: Lane,
    conf: DispatchConfig,
    gate: fairness.Gate,
    sender: Sender,
    resolver: http.Resolver | None,
    slot_wait: float,
) -> tuple[list[HostGroup], list[Outcome]]:
    """Sign and group a claimed batch, ask the gate for slots, hand the groups to the sender.
    Returns the groups sent and the outcomes already known (refused URLs, open breakers)."""
    immediate, groups = _prepare(rows, conf)
    by_cap: dict[int, dict[str, int]] = defaultdict(dict)
    for group in groups:
        group.cap = conf.cap_for(lane, group.host)
        by_cap[group.cap][group.host] = len(group.jobs)
    admissions: dict[str, fairness.Admission] = {}
    for cap, wanted in by_cap.items():  # usually one call: every host has the default cap
        admissions |= gate.admit(wanted, cap=cap)
    sending: list[HostGroup] = []
    for group in groups:
        group.admission = admissions.get(group.host, fairness.Admission())
        group.slot_wait = slot_wait
        retry_at = group.admission.retry_at
        if group.admission.granted or retry_at is None:
            # Granted, or the host is merely at its cap (another process's batch holds its
            # slots, usually for milliseconds): the sender waits up to slot_wait for them.
            sending.append(group)
            continue
        # An open breaker: come back when it lets a probe through.
        until = datetime.fromtimestamp(retry_at, UTC) + timedelta(seconds=random.random())  # noqa: S311
        immediate += [Outcome(job.row, defer_until=until) for job in group.jobs]
    sender.submit(sending, conf, resolver, gate=gate)
    return sending, immediate


def _prepare(
    rows: Sequence[Claimed], conf: DispatchConfig
) -> tuple[list[Outcome], list[HostGroup]]:
    """Sign each row and group it by destination host; a URL refused on its shape alone
    (no DNS needed) fails at once."""
    from publishers.models import CallbackTemplate, Publisher

    publishers = Publisher.objects.in_bulk({row.publisher_id for row in rows})
    secrets = {pk: publisher.active_signing_secrets() for pk, publisher in publishers.items()}
    # Templates with a failing streak: a success must reset theirs (the others' needs no write).
    failing = set(
        CallbackTemplate.objects.filter(pk__in={row.template_id for row in rows})
        .filter(Q(consecutive_failures__gt=0) | Q(failing_since__isnull=False))
        .values_list("pk", flat=True)
    )
    timestamp = int(time.time())
    immediate: list[Outcome] = []
    groups: dict[str, HostGroup] = {}
    for row in rows:
        if row.template_id in failing:
            row = dataclasses.replace(row, template_failing=True)
        try:
            scheme, name, port, target = http.parse_destination(row.url)
        except http.DeliveryError as exc:
            immediate.append(Outcome(row, started_at=timezone.now(), error=exc))
            continue
        headers = services.signed_headers(
            event_id=row.event_id,
            path_qs=target,
            secrets=secrets[row.publisher_id],
            timestamp=timestamp,
        )
        # http.send_get sends no compression offer either; we want the body as the server has it.
        headers["Accept-Encoding"] = "identity"
        literal = f"[{name}]" if ":" in name else name
        default_port = 443 if scheme == "https" else 80
        netloc = literal if port == default_port else f"{literal}:{port}"
        # encoded=True: the path and query go out byte for byte as signed.
        job = Job(row, URL(f"{scheme}://{netloc}{target}", encoded=True), headers)
        host = f"{name}:{port}"
        group = groups.get(host)
        if group is None:
            group = groups[host] = HostGroup(host, scheme, name, port, row.url, [])
        group.jobs.append(job)
    return immediate, list(groups.values())


# --- Kicks ------------------------------------------------------------------------------------

# A queued immediate kick's flag lives this long at most; while it is set, commits add at most
# one countdown kick a second (see kick()).
_KICK_FLAG_SECONDS = 5
_SAFETY_KICK_SECONDS = 1.0
# Rows put back (host busy, breaker open) get a countdown kick when due within this long;
# later ones are left to the sweeper.
_DEFERRED_HORIZON_SECONDS = 60.0


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
    from config.redis import get_redis
    from postbacks.tasks import dispatch_postbacks

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
        dispatch_postbacks.apply_async(
            kwargs={"lane": str(lane)},
            queue=queue_for(lane),
            countdown=countdown,
            retry_policy=services.PUBLISH_RETRY_POLICY,
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
    from config.redis import get_redis

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
    whose kick was lost — Redis restarted — go out within one sweep period)."""
    now = now or timezone.now()
    kicked = []
    for lane, due in (
        (Lane.FIRST, due_rows(Lane.FIRST, now)),
        (Lane.RETRY, due_rows(Lane.RETRY, now).filter(attempts__gt=0)),
    ):
        if due.exists() and kick(lane):
            kicked.append(lane)
    return kicked


def drain(lane: Lane = Lane.RETRY, *, until: Callable[[], bool] | None = None, **options) -> int:
    """Dispatch batches of `lane` in this process until none is due (or `until()` is true).
    For tests, benchmarks and management commands; workers use the Celery task."""
    total = 0
    while True:
        report = postbacks_dispatch(lane, **options)
        total += report.claimed
        if not report.claimed or (until is not None and until()):
            return total
