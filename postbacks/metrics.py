"""Prometheus metrics, served at `/metrics` (config/health.py).

Two sources, chosen per metric so every figure is right with many processes (gunicorn workers,
Celery pool children) and cheap to scrape:

- Read from the database at scrape time, so any web process answers the same: clicks and
  conversions recorded (from the id sequences, one index look-up each, and unaffected by
  retention pruning), postbacks due and the queue lag (the age of the oldest due postback, from
  the partial work-queue index).
- Read from Redis at scrape time: the circuit breaker state per destination host, which all
  workers share there (postbacks/fairness.py), and per endpoint (host) the requests in flight,
  the due postbacks held because the host has no room and the age of the oldest of them
  (the most affected hosts only: see config/health.py's TOP_HOSTS).

  Both are read by `SharedStateCollector` in config/health.py, beside the /metrics view: this
  module imports no models, so any process can record attempts without loading Django.
- Recorded where the event happens, with prometheus-client: attempts by outcome and the attempt
  latency histogram. Attempts happen in Celery worker processes, so set
  `PROMETHEUS_MULTIPROC_DIR` (an empty directory shared by the web and worker processes of a host,
  emptied when they all start) and prometheus-client's multiprocess mode sums every process's
  values. Without it, /metrics shows only the answering process's own values (fine for one
  process; useless for a separate worker). Workers on hosts without a web process serve the same
  registry on `METRICS_WORKER_PORT` (config/celery.py).
"""

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import REGISTRY, Collector

ATTEMPTS = Counter(
    "roundtrip_postback_attempts",
    "Postback delivery attempts, by outcome (success, retry, failed).",
    ["outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "roundtrip_postback_attempt_duration_seconds",
    "Time from the start of a delivery attempt to its outcome, by outcome.",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
)


def attempt_observe(*, outcome: str, duration_seconds: float) -> None:
    """Count one delivery attempt and its latency (called where the attempt is recorded)."""
    ATTEMPTS.labels(outcome=outcome).inc()
    ATTEMPT_SECONDS.labels(outcome=outcome).observe(duration_seconds)


def event_registry() -> CollectorRegistry:
    """The recorded metrics: every process's in multiprocess mode, else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected


def exposition(*collectors: Collector) -> bytes:
    """The text exposition of everything: recorded metrics, then the figures `collectors` read
    at scrape time (config/health.py passes the database, Redis and liveness ones)."""
    shared = CollectorRegistry()
    for collector in collectors:
        shared.register(collector)
    return generate_latest(event_registry()) + generate_latest(shared)
