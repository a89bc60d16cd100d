"""Are the Celery worker and beat alive? Heartbeats in Redis, read by /readyz and /metrics.

A stopped worker or beat is otherwise silent: conversions still come in, and postbacks wait in
the database until something delivers them. Two stamps, one Redis command each:

- Each worker, while its consumer is connected to the broker, stamps its node name with the
  time in a sorted set every `WORKER_HEARTBEAT_SECONDS` (the `WorkerHeartbeat` consumer step of
  config/celery.py: Celery stops it when the broker connection is lost and starts it again on
  reconnection). A worker counts as consuming while its stamp is younger than three periods;
  a warm shutdown removes it at once.
- Beat sends the `beat_heartbeat` task every `BEAT_HEARTBEAT_SECONDS`; the worker that runs it
  stamps the time. Its age is how long ago periodic work (the sweeper among it) last went all
  the way from beat through the broker to a worker: too old past
  `HEALTH_BEAT_MAX_AGE_SECONDS`.

Without Redis (local mode) nothing is recorded and both read as unknown. After a restart of a
Redis without persistence the stamps come back within one period of each.
"""

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from config.redis import get_redis

logger = logging.getLogger(__name__)


def _workers_key() -> str:
    return f"{settings.HEALTH_REDIS_PREFIX}workers"


def _beat_key() -> str:
    return f"{settings.HEALTH_REDIS_PREFIX}beat"


def worker_max_age() -> float:
    """A worker whose last stamp is older than this is not consuming."""
    return 3 * settings.WORKER_HEARTBEAT_SECONDS


def worker_stamp(node: str) -> None:
    """Record that worker `node` is connected and consuming now. Never raises: a heartbeat
    that can't be written is what it reports."""
    client = get_redis()
    if client is None:
        return
    now = time.time()
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.zadd(_workers_key(), {node: now})
            # Stamps of workers gone for good (renamed, scaled down) don't pile up.
            pipe.zremrangebyscore(_workers_key(), "-inf", now - 10 * worker_max_age())
            pipe.execute()
    except RedisError as exc:
        logger.warning("Could not record the heartbeat of worker %s: %s", node, exc)


def worker_unstamp(node: str) -> None:
    """Forget worker `node` (a warm shutdown): it stops counting at once."""
    client = get_redis()
    if client is None:
        return
    try:
        client.zrem(_workers_key(), node)
    except RedisError as exc:
        logger.warning("Could not remove the heartbeat of worker %s: %s", node, exc)


def beat_stamp() -> None:
    """Record that a beat heartbeat task ran now."""
    client = get_redis()
    if client is None:
        return
    try:
        client.set(_beat_key(), repr(time.time()))
    except RedisError as exc:
        logger.warning("Could not record the beat heartbeat: %s", exc)


@dataclass(frozen=True)
class Liveness:
    workers: int | None  # workers consuming now; None: unknown (no Redis, or it failed)
    beat_age: float | None  # seconds since the last beat heartbeat ran; inf: never; None: unknown

    def problems(self) -> dict[str, str | None]:
        """{"workers": …, "beat": …}: None when fine or unknown, else what is wrong."""
        workers = beat = None
        if self.workers == 0:
            workers = f"no worker has consumed in the last {worker_max_age():g} s"
        limit = settings.HEALTH_BEAT_MAX_AGE_SECONDS
        if self.beat_age is not None and self.beat_age > limit:
            beat = (
                "no beat heartbeat recorded"
                if math.isinf(self.beat_age)
                else f"last beat heartbeat {self.beat_age:.0f} s ago (limit {limit:g} s)"
            )
        return {"workers": workers, "beat": beat}


def liveness_read() -> Liveness:
    """The workers consuming now and the age of the last beat heartbeat (two Redis reads)."""
    client = get_redis()
    if client is None:
        return Liveness(workers=None, beat_age=None)
    now = time.time()
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.zcount(_workers_key(), now - worker_max_age(), "+inf")
            pipe.get(_beat_key())
            workers, beat = pipe.execute()
    except RedisError:
        return Liveness(workers=None, beat_age=None)
    beat_age = math.inf if beat is None else max(now - float(beat), 0.0)
    return Liveness(workers=int(workers), beat_age=beat_age)


class LivenessCollector(Collector):
    """`roundtrip_workers_consuming` and `roundtrip_beat_heartbeat_age_seconds`, read from
    Redis at scrape time; left out when they are unknown."""

    def collect(self) -> Iterator[Metric]:
        liveness = liveness_read()
        if liveness.workers is not None:
            yield GaugeMetricFamily(
                "roundtrip_workers_consuming",
                "Celery workers connected to the broker and consuming (heartbeat within "
                "three periods); alert when 0.",
                value=liveness.workers,
            )
        if liveness.beat_age is not None:
            yield GaugeMetricFamily(
                "roundtrip_beat_heartbeat_age_seconds",
                "Seconds since beat's heartbeat task last ran on a worker (+Inf: never since "
                "Redis started); alert when above HEALTH_BEAT_MAX_AGE_SECONDS.",
                value=liveness.beat_age,
            )
