"""The sending side of dispatch: an asyncio event loop per worker process, in a thread, with
one pooled session (`http.new_session`) whose connections only ever go to addresses the SSRF
guard (`http.vet_destination`) approved; every request is `http.fetch`.
"""

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone
from yarl import URL

from postbacks import fairness, http, retry
from postbacks.dispatch.rows import Claimed, DispatchConfig, Lane, Outcome

logger = logging.getLogger(__name__)


# --- Sending ----------------------------------------------------------------------------------


@dataclass
class Job:
    row: Claimed
    target: URL
    headers: dict[str, str]
    body: bytes | None = None  # a JSON webhook's, POSTed; None: a GET
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass
class HostGroup:
    """A batch's rows for one destination host, and the slots the gate granted it."""

    host: str  # gate key, "name:port"
    scheme: str
    name: str
    port: int
    sample_url: str  # any of the rows' URLs: they share scheme, host and port
    jobs: list[Job]
    admission: fairness.Admission = field(default_factory=fairness.Admission)
    slot_wait: float = 0.0  # seconds a row may wait for one of the group's slots
    cap: int = 1  # requests in flight allowed to the host (for this lane)
    lane: Lane = Lane.FIRST
    # The claim took the host's whole quota: it probably has more due, claimed once this
    # group ends and gives its slots back.
    full: bool = False
    # Sender bookkeeping (its loop thread only): jobs not finished yet, and the event that
    # tells a group waiting for slots that another group of this process handed it its own.
    remaining: int = 0
    handover: asyncio.Event | None = None

    def tally(self) -> fairness.HostTally:
        tally = fairness.HostTally(tokens=list(self.admission.tokens))
        for job in self.jobs:
            verdict = job.future.result().breaker_verdict() if job.future.done() else None
            if verdict == retry.HOST_OK:
                tally.ok += 1
            elif verdict in (retry.HOST_FAILED, retry.HOST_HUNG):
                tally.failed += 1
                tally.hung += verdict == retry.HOST_HUNG
        return tally


class Sender:
    """One asyncio event loop per worker process, in a thread, with one pooled aiohttp session.

    Celery runs the task in the main thread; the task hands jobs over with `submit` and waits
    on their futures. Connections are kept alive between batches (that is most of the speed).
    """

    def __init__(self, *, concurrency: int, ca_certs: str | None = None, slow_max: int = 0):
        self.concurrency = concurrency
        self.slow_max = slow_max
        self.ca_certs = ca_certs
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._pins: dict[tuple[str, int], tuple[str, ...]] = {}
        self._vetted: dict[tuple, tuple[float, tuple[str, ...] | tuple[str, str, str | None]]] = {}
        self._session: http.ClientSession | None = None
        self._waiting: dict[str, list[HostGroup]] = {}  # groups waiting for a host's slots
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}  # id(job) -> when it was submitted (monotonic)
        self._thread = threading.Thread(target=self._run, name="postback-sender", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._started)

    def busy(self, slow: float) -> int:
        """Requests in flight for less than `slow` seconds: those count toward the process's
        concurrency. Older ones wait on a hanging host (its gate lets it have one at a time)
        and must not starve everybody else's postbacks until they time out."""
        since = time.monotonic() - slow
        with self._lock:
            return sum(1 for started in self._started.values() if started > since)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(
        self,
        groups: Sequence[HostGroup],
        conf: DispatchConfig,
        resolver: http.Resolver | None,
        *,
        gate: fairness.Gate,
    ) -> None:
        now = time.monotonic()
        with self._lock:
            self._started.update((id(job), now) for g in groups for job in g.jobs)
        for group in groups:
            group.remaining = len(group.jobs)
            coroutine = self._run_group(group, conf, resolver, gate)
            asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        async def shutdown() -> None:
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _finish(self, group: HostGroup, job: Job, outcome: Outcome) -> None:
        with self._lock:
            self._started.pop(id(job), None)
        group.remaining -= 1
        if not group.remaining and group.admission.tokens:
            self._hand_over(group)
        job.future.set_result(outcome)

    def _hand_over(self, group: HostGroup) -> None:
        """A group is done: if another group of this process waits for the same host's
        slots, it gets this one's (no round trip through Redis, no gap in the host's flow).
        Done before the group's last future is set, so its settle() finds no tokens."""
        waiting = self._waiting.get(group.host)
        if not waiting:
            return
        successor = waiting.pop(0)
        successor.admission = fairness.Admission(tokens=group.admission.tokens)
        group.admission = fairness.Admission()
        assert successor.handover is not None
        successor.handover.set()

    async def _run_group(
        self,
        group: HostGroup,
        conf: DispatchConfig,
        resolver: http.Resolver | None,
        gate: fairness.Gate,
    ) -> None:
        deadline = self.loop.time() + group.slot_wait
        if not group.admission.granted and not await self._wait_for_slots(group, gate, deadline):
            until = _retry_time(group.admission) or busy_until(conf)
            for job in group.jobs:
                self._finish(group, job, Outcome(job.row, defer_until=until))
            return
        try:
            addresses = await self._vet(group, conf, resolver)
        except http.DeliveryError as exc:
            for job in group.jobs:
                self._finish(group, job, Outcome(job.row, started_at=timezone.now(), error=exc))
            return
        self._pins[(group.name, group.port)] = addresses
        slots = asyncio.Semaphore(group.admission.granted)
        await asyncio.gather(
            *(self._run_job(group, job, slots, deadline, conf) for job in group.jobs)
        )

    async def _wait_for_slots(self, group: HostGroup, gate: fairness.Gate, deadline: float) -> bool:
        """The host is at its cap: ask again now and then until `deadline`. A fast host's
        slots come back within milliseconds (another process's batch ends); a hanging
        host's don't, and its rows are put back."""
        group.handover = asyncio.Event()
        waiting = self._waiting.setdefault(group.host, [])
        waiting.append(group)
        try:
            while self.loop.time() + _SLOT_POLL_SECONDS < deadline:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_SLOT_POLL_SECONDS):
                        await group.handover.wait()
                if group.handover.is_set():
                    return True
                wanted = {group.host: len(group.jobs)}
                admissions = await asyncio.to_thread(gate.admit, wanted, cap=group.cap)
                if group.handover.is_set():  # handed over while we asked: give these back
                    extra = admissions.get(group.host, fairness.Admission())
                    await asyncio.to_thread(
                        gate.settle, {group.host: fairness.HostTally(tokens=list(extra.tokens))}
                    )
                    return True
                group.admission = admissions.get(group.host, fairness.Admission())
                if group.admission.granted:
                    return True
                if group.admission.retry_at is not None:
                    return False  # its breaker opened meanwhile
            return False
        finally:
            if group in waiting:
                waiting.remove(group)

    async def _vet(
        self, group: HostGroup, conf: DispatchConfig, resolver: http.Resolver | None
    ) -> tuple[str, ...]:
        key = (group.scheme, group.name, group.port, conf.allow_private)
        cached = self._vetted.get(key) if resolver is None else None
        if cached is None or cached[0] < time.monotonic():
            try:
                destination = await asyncio.to_thread(
                    http.vet_destination,
                    group.sample_url,
                    allow_private=conf.allow_private,
                    timeout=conf.connect_timeout,
                    resolver=resolver,
                )
                value: tuple = destination.addresses
            except http.DeliveryError as exc:
                value = ("!", exc.kind, exc.message, exc.resolved_ip)
            cached = (time.monotonic() + conf.dns_ttl, value)
            if resolver is None and conf.dns_ttl > 0:
                self._vetted[key] = cached
        value = cached[1]
        if value and value[0] == "!":
            # A fresh error each time: a cached exception object would pile up tracebacks.
            raise http.DeliveryError(value[1], value[2], resolved_ip=value[3])
        return value

    async def _run_job(
        self,
        group: HostGroup,
        job: Job,
        slots: asyncio.Semaphore,
        deadline: float,
        conf: DispatchConfig,
    ) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await slots.acquire()
        except TimeoutError:
            # The host is slow and its slots are taken: give the row back for a while.
            self._finish(group, job, Outcome(job.row, defer_until=busy_until(conf)))
            return
        try:
            outcome = await self._send(job, conf)
        except Exception:
            logger.exception("Unexpected error sending postback %s", job.row.pk)
            outcome = Outcome(job.row, defer_until=busy_until(conf))
        finally:
            slots.release()
        self._finish(group, job, outcome)

    def _get_session(self) -> "http.ClientSession":
        if self._session is None:
            self._session = http.new_session(
                self._pins, limit=self.concurrency + self.slow_max, ca_certs=self.ca_certs
            )
        return self._session

    async def _send(self, job: Job, conf: DispatchConfig) -> Outcome:
        started_at = timezone.now()
        started = time.monotonic()
        try:
            result = await http.fetch(
                self._get_session(),
                job.target,
                headers=job.headers,
                connect_timeout=conf.connect_timeout,
                total_timeout=conf.total_timeout,
                max_bytes=conf.max_bytes,
                excerpt_bytes=conf.excerpt_bytes,
                fallback_ip=self._pins.get(_pin_key(job), ("",))[0],
                method="GET" if job.body is None else "POST",
                body=job.body,
            )
        except http.DeliveryError as error:
            duration = int((time.monotonic() - started) * 1000)
            return Outcome(job.row, started_at, duration, error=error)
        return Outcome(job.row, started_at, result.duration_ms, result=result)


# How often a batch asks again for the slots of a host at its cap.
_SLOT_POLL_SECONDS = 0.01


def _retry_time(admission: fairness.Admission) -> datetime | None:
    """When an open breaker lets a probe through (jittered), or None."""
    if admission.retry_at is None:
        return None
    jitter = random.random()  # noqa: S311
    return datetime.fromtimestamp(admission.retry_at, UTC) + timedelta(seconds=jitter)


def _pin_key(job: Job) -> tuple[str, int]:
    return (job.target.raw_host or "", job.target.port or 0)


def busy_until(conf: DispatchConfig) -> datetime:
    # Jittered, so the rows of a busy host don't all come back in the same batch.
    return timezone.now() + timedelta(seconds=conf.busy_defer * random.uniform(1.0, 1.5))  # noqa: S311


_sender_lock = threading.Lock()
_sender: Sender | None = None


def get_sender() -> Sender:
    """This worker process's sender (a forked child starts its own)."""
    global _sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid():
            _sender = Sender(
                concurrency=settings.POSTBACKS_DISPATCH_CONCURRENCY,
                slow_max=settings.POSTBACKS_DISPATCH_SLOW_MAX,
            )
        return _sender
