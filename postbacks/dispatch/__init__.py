"""Delivery, the one engine: a Celery task claims a batch of due postbacks in one statement and
sends them concurrently, paying Celery's per-task cost once per batch instead of once per
postback.

The guarantees, row by row:
- The claim is a compare-and-swap on many rows at once (PostgreSQL `UPDATE … FROM (SELECT …
  FOR UPDATE SKIP LOCKED LIMIT n) RETURNING`): each row gets a lease and its attempt number,
  concurrent claims skip each other's rows, and a row whose worker died is claimed again once
  its lease has expired. It is fair across destination hosts (see Fairness below).
- Every request goes through `http.vet_destination` (the SSRF guard); the connection then goes
  only to the vetted addresses (`http.VettedResolver`), keeping the URL's host for the Host
  header and TLS, with no redirects and a capped read (`http.fetch`).
- Each answer goes through `rows.attempt_decide` (the retry policy); attempt rows are
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

Fairness (postbacks/fairness.py, docs/delivery.md "Fair delivery"): before each claim the task
reads from the shared gate every host that is not idle (`Gate.rooms`). A host at its in-flight
cap, hanging (a request out longer than POSTBACKS_HOST_SLOW_SECONDS) or held by its breaker
gets quota 0 and none of its rows is claimed: they stay pending and due, and come back when the
host has room (a wake-up at the breaker's probe time, or when a group that took a host's whole
quota ends). The others get POSTBACKS_HOST_CLAIM_PER_SLOT rows per free slot, taken round robin
across hosts, oldest due first within each (`rows.claim_batch`). Each host group then asks the
gate for its slots; should another process have taken them meanwhile, the group waits a moment
for them (a batch of this process hands its slots straight to the next one of the same host),
then puts its rows back.

Lanes: the FIRST lane claims only postbacks never tried (attempts = 0), or whose one attempt
was cut short by a dead worker (`rows.FIRST_ATTEMPT`), and runs on its own
Celery queue, so first attempts never wait behind retries; the RETRY lane claims anything due
(retries, replays, resumed templates). Retries also get at most a share of each host's cap.

Wake-ups are kicks (dispatch/kicks.py); requests still in flight when a task returns are
finished by the process's recorder (dispatch/recorder.py).
"""

import concurrent.futures
import dataclasses
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from config.outage import DATABASE_OUTAGE_ERRORS
from postbacks import fairness, http, signing
from postbacks.dispatch.kicks import clear_kick, kick, kick_if_due, schedule_wakeups
from postbacks.dispatch.leases import get_keeper, lease_cutoff, outage_note
from postbacks.dispatch.recorder import follow_ups, get_recorder, record, settle, split_done
from postbacks.dispatch.rows import (
    Claimed,
    DispatchConfig,
    Lane,
    Outcome,
    WakeUp,
    claim_batch,
    record_outcomes,
)
from postbacks.dispatch.sender import HostGroup, Job, Sender, get_sender
from publishers.models import CallbackTemplate, Publisher

__all__ = [
    "DispatchConfig",
    "DispatchReport",
    "Lane",
    "Sender",
    "claim_batch",
    "clear_kick",
    "drain",
    "get_recorder",
    "kick",
    "kick_if_due",
    "postbacks_dispatch",
    "record_outcomes",
    "signed_headers",
    "webhook_headers",
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
    # wait (so the task usually records those rows itself).
    slot_wait = min(0.8 * wait_seconds, _SLOT_WAIT_MAX_SECONDS)
    # The process renews its rows' leases until their requests' deadline (dispatch/leases.py).
    keeper = get_keeper(conf.lease)
    hold_seconds = slot_wait + conf.connect_timeout + conf.total_timeout + _HOLD_MARGIN_SECONDS
    claim_until = time.monotonic() + conf.task_seconds
    report = _Tally()
    pending: dict[concurrent.futures.Future, Job] = {}
    open_groups: list[HostGroup] = []
    wakeups: list[WakeUp] = []
    more_due = True
    # The last claim found hosts at their cap, perhaps with this task's own groups: claim
    # again once one of them ends (gives its slots back) or after a poll, not at every answer.
    claim_after = 0.0
    last_start = time.monotonic()
    while True:
        room = min(
            conf.concurrency - sender.busy(conf.slow),
            conf.concurrency + conf.slow_max - sender.in_flight,
        )
        may_claim = (
            more_due
            and time.monotonic() < claim_until
            and (batches is None or report.batches < batches)
        )
        ready = time.monotonic() >= claim_after
        if may_claim and ready and room > 0 and len(pending) <= batch_size // 2:
            size = min(batch_size, room)
            try:
                now = timezone.now()
                limits = claim_limits(gate.rooms(), conf, lane, now)
                rows = claim_batch(
                    lane=lane,
                    limit=size,
                    now=now,
                    lease=conf.lease,
                    quotas=limits.quotas,
                    default_quota=limits.default,
                    expired_before=lease_cutoff(now),
                )
            except DATABASE_OUTAGE_ERRORS:
                outage_note()
                if not pending:
                    raise
                # Claim no more; what is in flight is still recorded (now or by the recorder).
                rows, size, limits = [], 1, ClaimLimits({}, 0, [])
            more_due = len(rows) == size
            if len(rows) < size:
                wakeups += limits.wakeups
                # Hosts at their cap get their slots back as requests end: while this task
                # has requests in flight, it claims again when one of its groups ends.
                if limits.busy and (pending or rows):
                    more_due = True
                    claim_after = time.monotonic() + _POLL_SECONDS
            if len(rows) == size and kicks and not report.batches:
                # A full first batch: more is due. Let another worker process start on it.
                kick(lane, coalesce=False)
            if rows:
                keeper.hold(rows, seconds=hold_seconds)
                report.batches += 1
                report.claimed += len(rows)
                sending, immediate = _start(
                    rows, lane, conf, gate, sender, resolver, slot_wait, limits
                )
                # A host that got its whole quota probably has more due: claim again as its
                # slots come back (its group ends).
                more_due = more_due or any(group.full for group in sending)
                report.sent += sum(len(g.jobs) for g in sending)
                report.deferred += sum(1 for o in immediate if o.defer_until is not None)
                report.recorded += len(immediate)
                wakeups += record(immediate)
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
        wakeups += record(outcomes)
        open_groups, finished = split_done(open_groups)
        if finished:
            breakers = settle(gate, finished)
            if kicks and breakers:
                # At once: a healed host's backlog may be in the other lane.
                schedule_wakeups(breakers)
            claim_after = 0.0
            if not may_claim:
                wakeups += follow_ups(finished)
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


# The longest a claimed row waits for one of its host's slots (with wait=math.inf: tests,
# benchmarks).
_SLOT_WAIT_MAX_SECONDS = 40.0
# A held row's lease is renewed this long past its request's deadline (DNS, scheduling).
_HOLD_MARGIN_SECONDS = 10.0

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


@dataclass
class ClaimLimits:
    """What a claim may take per host, from what the gate knows (`claim_limits`)."""

    quotas: dict[str, int]  # rows per listed host
    default: int  # rows per host not listed (idle)
    wakeups: list[WakeUp]  # when hosts that get nothing now may get something
    busy: bool = False  # a host got nothing only for being at its cap (it is answering)


def claim_limits(
    rooms: Mapping[str, fairness.HostRoom], conf: DispatchConfig, lane: Lane, now: datetime
) -> ClaimLimits:
    """A host gets `claim_per_slot` rows per free slot (its batch runs them through its slots
    one after the other), one row for a breaker's probe, and none while it is at its cap,
    hanging (one request at a time, and that one is out) or held by its breaker."""
    per_slot = conf.claim_per_slot
    quotas = {host: conf.cap_for(lane, host) * per_slot for host in conf.host_caps}
    wakeups = []
    busy = False
    for host, room in rooms.items():
        cap = conf.cap_for(lane, host)
        free = room.free(cap)
        quotas[host] = min(free, 1) if room.probe else free * per_slot
        if not free and _answers_quickly(room, now):
            # At its cap, but its requests end within moments: rows claimed now get its slots
            # well within their slot wait (handed over inside the process), which keeps a busy
            # endpoint's throughput. A slow, hanging or breaker-held host gets none.
            quotas[host] = cap * per_slot
            continue
        if not free:
            busy = busy or room.busy
            at = (
                datetime.fromtimestamp(room.held_until, UTC)
                if room.held_until is not None
                else now + timedelta(seconds=conf.busy_defer)
            )
            wakeups.append(WakeUp(lane, at, retry=False))
    return ClaimLimits(quotas, conf.cap_for(lane) * per_slot, wakeups, busy)


# A host at its cap whose oldest request in flight is younger than this answers quickly.
_QUICK_SECONDS = 0.2


def _answers_quickly(room: fairness.HostRoom, now: datetime) -> bool:
    return (
        room.busy
        and room.oldest_started is not None
        and now.timestamp() - room.oldest_started < _QUICK_SECONDS
    )


def _start(
    rows: Sequence[Claimed],
    lane: Lane,
    conf: DispatchConfig,
    gate: fairness.Gate,
    sender: Sender,
    resolver: http.Resolver | None,
    slot_wait: float,
    limits: "ClaimLimits",
) -> tuple[list[HostGroup], list[Outcome]]:
    """Sign and group a claimed batch, ask the gate for slots, hand the groups to the sender.
    Returns the groups sent and the outcomes already known (refused URLs, open breakers)."""
    immediate, groups = _prepare(rows, conf)
    by_cap: dict[int, dict[str, int]] = defaultdict(dict)
    for group in groups:
        group.cap = conf.cap_for(lane, group.host)
        group.lane = lane
        group.full = len(group.jobs) >= limits.quotas.get(group.host, limits.default)
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


def signed_headers(
    *, event_id: str, path_qs: str, secrets: list[str], timestamp: int
) -> dict[str, str]:
    """Our headers for one request (a postback, or a test postback with one more)."""
    return {
        "User-Agent": settings.POSTBACKS_USER_AGENT,
        "Roundtrip-Event-Id": event_id,
        "Roundtrip-Timestamp": str(timestamp),
        "Roundtrip-Signature": signing.signature_header(secrets, event_id, timestamp, path_qs),
    }


def webhook_headers(
    *, event_id: str, body: bytes, secrets: list[str], timestamp: int
) -> dict[str, str]:
    """Our headers for one JSON webhook: Standard Webhooks' three, signed with the template's
    secrets, and the event id under our own name too (one dedupe for GET and POST)."""
    return {
        "User-Agent": settings.POSTBACKS_USER_AGENT,
        "Content-Type": "application/json",
        "Roundtrip-Event-Id": event_id,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.webhook_signature_header(secrets, event_id, timestamp, body),
    }


def _webhook_secrets(rows: Sequence[Claimed]) -> dict[int, list[str]]:
    """The active secrets of the templates of a batch's JSON webhooks (no query without one)."""
    ids = {row.template_id for row in rows if row.body and row.template_id is not None}
    if not ids:
        return {}
    templates = CallbackTemplate.objects.filter(pk__in=ids).only(
        "webhook_secret", "previous_webhook_secret", "previous_webhook_secret_expires_at"
    )
    return {template.pk: template.active_webhook_secrets() for template in templates}


_DELETED_CALLBACK = "Its callback was deleted, and with it the secret that signs its JSON webhooks."


def _prepare(
    rows: Sequence[Claimed], conf: DispatchConfig
) -> tuple[list[Outcome], list[HostGroup]]:
    """Sign each row and group it by destination host; a URL refused on its shape alone
    (no DNS needed), or a JSON webhook left without a secret, fails at once."""
    publishers = Publisher.objects.in_bulk({row.publisher_id for row in rows})
    secrets = {pk: publisher.active_signing_secrets() for pk, publisher in publishers.items()}
    webhook_secrets = _webhook_secrets(rows)
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
        body = None
        if row.body:
            body = row.body.encode()
            template_secrets = webhook_secrets.get(row.template_id or 0)
            if not template_secrets:
                error = http.DeliveryError("no_secret", _DELETED_CALLBACK)
                immediate.append(Outcome(row, started_at=timezone.now(), error=error))
                continue
            headers = webhook_headers(
                event_id=row.event_id, body=body, secrets=template_secrets, timestamp=timestamp
            )
        else:
            headers = signed_headers(
                event_id=row.event_id,
                path_qs=target,
                secrets=secrets[row.publisher_id],
                timestamp=timestamp,
            )
        job = Job(row, http.request_url(scheme, name, port, target), headers, body)
        host = f"{name}:{port}"
        group = groups.get(host)
        if group is None:
            group = groups[host] = HostGroup(host, scheme, name, port, row.url, [])
        group.jobs.append(job)
    return immediate, list(groups.values())


def drain(lane: Lane = Lane.RETRY, *, until: Callable[[], bool] | None = None, **options) -> int:
    """Dispatch batches of `lane` in this process until none is due (or `until()` is true).
    For tests, benchmarks and management commands; workers use the Celery task."""
    total = 0
    while True:
        report = postbacks_dispatch(lane, **options)
        total += report.claimed
        if not report.claimed or (until is not None and until()):
            return total
