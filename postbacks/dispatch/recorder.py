"""The recorder: outcomes of requests still in flight when their task returned (a hanging
endpoint, a slow one) are recorded by a thread of the worker process, and their slots given
back to the gate; outcomes whose recording met a database outage are written once it answers.
Settling a group's slots also acts on what the breakers say: a healed host's held-back rows are
made due at once, a breaker that opened gets a claim woken for its next probe."""

import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connections
from django.utils import timezone

from config.outage import DATABASE_OUTAGE_ERRORS
from postbacks import fairness
from postbacks.dispatch.kicks import WakeUp, schedule_wakeups
from postbacks.dispatch.leases import LeaseKeeper, get_keeper, outage_note
from postbacks.dispatch.rows import Lane, host_backlog_release, record_outcomes
from postbacks.dispatch.sender import HostGroup, Job, Outcome

logger = logging.getLogger(__name__)


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
            groups[:], finished = split_done(groups)
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
                schedule_wakeups(settle(fairness.get_gate(), finished) + follow_ups(finished))
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
            outage_note()
            return False  # still held: their leases are renewed once it answers
        except IntegrityError:
            # Its attempt rows exist: an earlier try committed before its connection broke.
            logger.warning("%d postback outcomes were recorded already", len(outcomes))
        except Exception:
            # The rows stay leased; once their leases (no longer renewed) expire they are sent
            # again.
            logger.exception("Could not record %d postback outcomes", len(outcomes))
        _keeper().release(o.row for o in outcomes)
        return True


def split_done(groups: list[HostGroup]) -> tuple[list[HostGroup], list[HostGroup]]:
    """(still running, finished). One look per group: a group finishing meanwhile must land
    in exactly one of the two, or its slots would never be given back."""
    running, finished = [], []
    for group in groups:
        done = all(job.future.done() for job in group.jobs)
        (finished if done else running).append(group)
    return running, finished


def settle(gate: fairness.Gate, groups: Iterable[HostGroup]) -> list[WakeUp]:
    """Give finished groups' slots back and act on what their hosts' breakers say
    (`breaker_follow_ups`). Returns the wake-ups that asks for."""
    return breaker_follow_ups(gate.settle(tallies(groups)))


def breaker_follow_ups(settled: fairness.Settled) -> list[WakeUp]:
    """A healed host: its rows that failed for it being down are due now
    (`host_backlog_release`), and both lanes are woken now (the rows its breaker held back are
    due already). A breaker that opened: both lanes are woken when it lets its next probe
    through, so probing follows the cool-down instead of waiting for the next sweep."""
    wakeups: list[WakeUp] = []
    now = timezone.now()
    if settled.healed:
        hosts = sorted(settled.healed)
        try:
            released = host_backlog_release(hosts, now)
        except DATABASE_OUTAGE_ERRORS:
            # They keep their retry times; the probe itself was delivered.
            logger.warning("Database unavailable; the backlog of %s waits for its retries", hosts)
        else:
            logger.info("Endpoint host(s) %s answer again: %d postbacks due now", hosts, released)
        wakeups += [WakeUp(lane, now, retry=False) for lane in Lane]
    for at in sorted(set(settled.reopened.values())):
        when = datetime.fromtimestamp(at, UTC)
        wakeups += [WakeUp(lane, when, retry=False) for lane in Lane]
    return wakeups


def follow_ups(groups: Iterable[HostGroup]) -> list[WakeUp]:
    """Finished groups that took their host's whole quota: the host has room again and
    probably more rows due, so their lane is kicked now (coalesced) rather than by the
    sweeper."""
    now = timezone.now()
    return [WakeUp(lane, now, retry=False) for lane in {g.lane for g in groups if g.full}]


def tallies(groups: Iterable[HostGroup]) -> dict[str, fairness.HostTally]:
    """Per host, for the gate: several batches' groups of one host may end together."""
    merged: dict[str, fairness.HostTally] = {}
    for group in groups:
        tally = group.tally()
        if group.host in merged:
            total = merged[group.host]
            total.ok += tally.ok
            total.failed += tally.failed
            total.hung += tally.hung
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


def record(outcomes: list[Outcome]) -> list[WakeUp]:
    """`record_outcomes`, except that outcomes meeting a database outage are left to the
    recorder, which writes them once the database answers (not sent again meanwhile: their
    leases are renewed while they wait). Recorded rows are released from lease renewal."""
    try:
        wakeups = record_outcomes(outcomes)
    except DATABASE_OUTAGE_ERRORS:
        logger.warning("Database unavailable; %d postback outcomes recorded later", len(outcomes))
        outage_note()
        get_recorder().record_later(outcomes)
        return []
    _keeper().release(o.row for o in outcomes)
    return wakeups


def _keeper() -> LeaseKeeper:
    return get_keeper(settings.POSTBACKS_LEASE_SECONDS)
