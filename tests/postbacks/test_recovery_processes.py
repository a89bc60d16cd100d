"""Recovery times on real processes (issue 16): real Celery workers at the production delivery
settings (lease, breaker, sweep interval), a real receiver on 127.0.0.1, real PostgreSQL and
Redis. Measured and printed (`pytest -s`), and asserted with slack for a loaded 2-core machine:

- heal → first delivery: a receiver answers 500, or refuses connections, while a backlog
  builds up; then it heals. Target 5 s: the breaker probes every few seconds at most, and the
  probe that succeeds makes the host's held-back rows due at once.
- kill → redelivery: a worker holding claimed rows is SIGKILLed with its pool children; another
  worker sends them again once their leases, no longer renewed, run out. Target 15 s.

The broker is a redis-server copy of the test's own; beat's sweeper runs from the test loop at
the production interval (POSTBACKS_SWEEP_INTERVAL).
"""

import statistics
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from postbacks import tasks
from postbacks.models import Postback, PostbackAttempt
from publishers.models import CallbackTemplate
from tests.chaos.infra import CeleryWorker, RedisCopy, free_port, use_broker, wait_until
from tests.receiver import Receiver
from tracking.models import Click
from tracking.services import conversion_record

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

SWEEP_EVERY = settings.CELERY_BEAT_SCHEDULE["postbacks-sweep"]["schedule"]
# Asserted bounds: the targets (5 s and 15 s) with room for a loaded shared machine; the
# measured figures are printed and quoted in docs/performance.md, "Recovery".
HEAL_BOUND = 15.0
KILL_BOUND = 25.0


class Cluster:
    """A private broker and Celery workers (production settings) against the test database."""

    def __init__(self) -> None:
        self.broker = RedisCopy().start()
        self.logs = Path(tempfile.mkdtemp(prefix="roundtrip-recovery-"))
        self.workers: list[CeleryWorker] = []
        self.last_sweep = 0.0

    def worker(self, name: str) -> CeleryWorker:
        env = {"REDIS_URL": self.broker.url.replace("/0", "/1")}
        worker = CeleryWorker(name, broker_url=self.broker.url, env=env, log_dir=self.logs)
        self.workers.append(worker.start())
        return worker

    def sweep_if_due(self) -> None:
        if time.monotonic() - self.last_sweep >= SWEEP_EVERY:
            tasks.sweep_due_postbacks()
            self.last_sweep = time.monotonic()

    def stop(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.broker.stop()


@pytest.fixture
def cluster():
    made = Cluster()
    yield made
    made.stop()


def clicks_for(link, campaign, count: int) -> list[Click]:
    return Click.objects.bulk_create(
        Click(link=link, publisher=link.publisher, campaign=campaign, spid=f"spid-{n}")
        for n in range(count)
    )


def convert(campaign, clicks: list[Click]) -> None:
    with transaction.atomic():
        for click in clicks:
            conversion_record(advertiser=campaign.advertiser, click_id=click.click_id)


def event_id(request) -> str:
    return request.headers.get("Roundtrip-Event-Id", "")


@pytest.mark.parametrize("failure", ["answers 500", "refuses connections"])
def test_a_healed_endpoints_backlog_starts_flowing_within_seconds(link, campaign, cluster, failure):
    outage, backlog = 20.0, 600
    receiver = Receiver(bind_port=free_port()).start()
    try:
        CallbackTemplate.objects.create(
            publisher=link.publisher, url_template=f"{receiver.base_url}/cb?e=[event_id]"
        )
        clicks = clicks_for(link, campaign, backlog)
        cluster.worker("heal1").wait_ready()
        if failure == "answers 500":
            receiver.status = 500
        else:
            receiver.stop()  # its port stays bound, never listening: connections are refused
        per_tick = backlog // int(outage)
        with use_broker(cluster.broker.url):
            started = time.monotonic()
            for tick in range(int(outage)):
                convert(campaign, clicks[tick * per_tick : (tick + 1) * per_tick])
                cluster.sweep_if_due()
                time.sleep(max(0.0, started + tick + 1 - time.monotonic()))
            tried = PostbackAttempt.objects.count()
            pending = Postback.objects.filter(status=Postback.Status.PENDING).count()
            heard = len(receiver.requests)

            healed_at = time.time()
            if failure == "answers 500":
                receiver.status = 200
            else:
                receiver.start()

            def delivered() -> bool:
                cluster.sweep_if_due()
                return not Postback.objects.exclude(status=Postback.Status.SUCCEEDED).exists()

            wait_until(delivered, timeout=180, interval=0.2, what="the backlog to be delivered")
        after = [r for r in receiver.requests[heard:] if r.at >= healed_at]
        first = min(r.at for r in after) - healed_at
        last = max(r.at for r in after) - healed_at
        counts: dict[str, int] = {}
        for request in after:
            counts[event_id(request)] = counts.get(event_id(request), 0) + 1
    finally:
        receiver.stop(hold=False)

    print(
        f"\nrecovery ({failure}, {outage:g} s, {backlog} postbacks): {tried} attempts during "
        f"the outage, {pending} pending at the heal; heal → first delivery {first:.2f} s, "
        f"→ backlog delivered {last:.2f} s"
    )
    assert first < HEAL_BOUND, f"heal → first delivery took {first:.1f}s"
    expected = set(Postback.objects.values_list("event_id", flat=True))
    assert set(counts) == expected and len(expected) == backlog  # all of it, after the heal
    assert pending > backlog * 0.8, "most of the backlog was waiting when it healed"
    # A dead endpoint gets almost nothing: the batches claimed before the breaker opened, then
    # one probe per cool-down (1 s, 2 s, then 3 s).
    assert tried < backlog * 0.2, f"{tried} attempts during a {outage:g}s outage"


def test_a_killed_workers_postbacks_are_sent_again_within_its_lease(link, campaign, cluster):
    backlog = 300
    slow = threading.Event()
    slow.set()

    def respond(handler) -> None:
        if slow.is_set():
            time.sleep(0.5)  # deliveries stay in flight: the killed worker holds some
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    receiver = Receiver(responder=respond).start()
    try:
        CallbackTemplate.objects.create(
            publisher=link.publisher, url_template=f"{receiver.base_url}/cb?e=[event_id]"
        )
        clicks = clicks_for(link, campaign, backlog)
        victim = cluster.worker("kill1")
        victim.wait_ready()
        with use_broker(cluster.broker.url):
            convert(campaign, clicks)
            wait_until(lambda: len(receiver.requests) > 20, timeout=60, what="traffic")
            # Another worker is up when the first dies (as in production), and works too.
            cluster.worker("kill2").wait_ready()

            def leased_rows() -> dict[int, int]:
                held = Postback.objects.filter(
                    status=Postback.Status.PENDING, leased_until__isnull=False
                )
                return dict(held.values_list("pk", "attempts"))

            leased = wait_until(leased_rows, timeout=30, what="claimed rows")
            victim.kill()
            killed_at = time.time()
            snapshot = {
                pk: (attempts, until)
                for pk, attempts, until in Postback.objects.filter(pk__in=leased).values_list(
                    "pk", "attempts", "leased_until"
                )
            }
            slow.clear()
            # Rows the survivor holds are renewed or recorded within a renewal period; the
            # victim's keep their lease as it was at the kill.
            time.sleep(settings.POSTBACKS_LEASE_SECONDS / 4 + 1)
            orphans = {
                p.event_id
                for p in Postback.objects.filter(pk__in=snapshot)
                if p.status == Postback.Status.PENDING
                and (p.attempts, p.leased_until) == snapshot[p.pk]
            }

            def delivered() -> bool:
                cluster.sweep_if_due()
                return not Postback.objects.exclude(status=Postback.Status.SUCCEEDED).exists()

            wait_until(delivered, timeout=180, interval=0.2, what="every postback to succeed")
        resent = {}
        for request in receiver.requests:
            if event_id(request) in orphans and request.at >= killed_at:
                resent.setdefault(event_id(request), request.at - killed_at)
        counts: dict[str, int] = {}
        for request in receiver.requests:
            counts[event_id(request)] = counts.get(event_id(request), 0) + 1
    finally:
        receiver.stop(hold=False)

    assert orphans, f"the killed worker held claimed rows ({len(leased)} leased at the kill)"
    assert set(resent) == orphans, "each of them was sent again"
    duplicates = sum(counts.values()) - len(counts)
    times = sorted(resent.values())
    print(
        f"\nrecovery (SIGKILL, lease {settings.POSTBACKS_LEASE_SECONDS:g} s, sweep every "
        f"{SWEEP_EVERY:g} s): {len(orphans)} rows held by the killed worker; kill → "
        f"redelivery first {times[0]:.2f} s, median {statistics.median(times):.2f} s, last "
        f"{times[-1]:.2f} s; {duplicates} duplicates of {backlog}"
    )
    assert times[-1] < KILL_BOUND, f"kill → redelivery took {times[-1]:.1f}s"
    expected = set(Postback.objects.values_list("event_id", flat=True))
    assert set(counts) == expected  # nothing lost
    assert duplicates <= len(orphans)  # only what the killed worker may have sent already
