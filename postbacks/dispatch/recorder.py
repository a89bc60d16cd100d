"""The recorder: outcomes of requests still in flight when their task returned (a hanging
endpoint, a slow one) are recorded by a thread of the worker process, and their slots given
back to the gate."""

import concurrent.futures
import logging
import os
import queue
import threading
from collections.abc import Iterable

from django.db import close_old_connections, connections

from postbacks import fairness
from postbacks.dispatch.kicks import schedule_wakeups
from postbacks.dispatch.rows import record_outcomes
from postbacks.dispatch.sender import HostGroup, Job

logger = logging.getLogger(__name__)


class Recorder:
    """Records the outcomes of requests still in flight when their task returned (a hanging
    endpoint, a slow one), in a thread of the worker process with its own database connection,
    and gives their slots back. If the process dies first, their leases expire and the rows
    are claimed again: delivered at least once."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._handoffs: queue.SimpleQueue[tuple[list[Job], list[HostGroup]]] = queue.SimpleQueue()
        self._outstanding = 0  # jobs handed off and not recorded yet
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="postback-recorder", daemon=True)
        self._thread.start()

    def hand_off(self, jobs: list[Job], groups: list[HostGroup]) -> None:
        with self._changed:
            self._outstanding += len(jobs)
        self._handoffs.put((jobs, groups))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything handed off is recorded (tests, benchmarks, shutdown)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._outstanding == 0, timeout)

    def _run(self) -> None:
        pending: dict[concurrent.futures.Future, Job] = {}
        groups: list[HostGroup] = []
        while True:
            if not pending:
                # Idle: give the connection back (a worker reconnects on the next straggler,
                # a few ms; a test database can be dropped).
                connections.close_all()
                jobs, new_groups = self._handoffs.get()
                pending.update((job.future, job) for job in jobs)
                groups += new_groups
            while not self._handoffs.empty():
                jobs, new_groups = self._handoffs.get()
                pending.update((job.future, job) for job in jobs)
                groups += new_groups
            done, _ = concurrent.futures.wait(
                list(pending), timeout=0.05, return_when=concurrent.futures.FIRST_COMPLETED
            )
            outcomes = [pending.pop(future).future.result() for future in done]
            groups, finished = split_done(groups)
            try:
                close_old_connections()
                wakeups = record_outcomes(outcomes)
                fairness.get_gate().settle(tallies(finished))
                schedule_wakeups(wakeups)
            except Exception:
                # The rows stay leased; when the leases expire they are sent again.
                logger.exception("Could not record %d postback outcomes", len(outcomes))
            with self._changed:
                self._outstanding -= len(outcomes)
                self._changed.notify_all()


def split_done(groups: list[HostGroup]) -> tuple[list[HostGroup], list[HostGroup]]:
    """(still running, finished). One look per group: a group finishing meanwhile must land
    in exactly one of the two, or its slots would never be given back."""
    running, finished = [], []
    for group in groups:
        done = all(job.future.done() for job in group.jobs)
        (finished if done else running).append(group)
    return running, finished


def tallies(groups: Iterable[HostGroup]) -> dict[str, fairness.HostTally]:
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
