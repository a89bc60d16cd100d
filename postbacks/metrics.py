"""Prometheus metrics, served at `/metrics` (config/health.py).

Two sources, chosen per metric so every figure is right with many processes (gunicorn workers,
Celery pool children) and cheap to scrape:

- Read from the database at scrape time, so any web process answers the same: clicks and
  conversions recorded (from the id sequences, one index look-up each, and unaffected by
  retention pruning), postbacks due and the queue lag (the age of the oldest due postback, from
  the partial work-queue index).
- Read from Redis at scrape time: the circuit breaker state per destination host, which all
  workers share there (postbacks/fairness.py).
- Recorded where the event happens, with prometheus-client: attempts by outcome and the attempt
  latency histogram. Attempts happen in Celery worker processes, so set
  `PROMETHEUS_MULTIPROC_DIR` (an empty directory shared by the web and worker processes of a host,
  emptied when they all start) and prometheus-client's multiprocess mode sums every process's
  values. Without it, /metrics shows only the answering process's own values (fine for one
  process; useless for a separate worker). Workers on hosts without a web process serve the same
  registry on `METRICS_WORKER_PORT` (config/celery.py).
"""

import os
from collections.abc import Iterator

from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from postbacks.fairness import breaker_states
from postbacks.models import Postback
from tracking.models import Click, Conversion

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
# Values of roundtrip_breaker_state, from postbacks.fairness's state names.
BREAKER_STATES = {"closed": 0, "half": 1, "open": 2}


def attempt_observe(*, outcome: str, duration_seconds: float) -> None:
    """Count one delivery attempt and its latency (called where the attempt is recorded)."""
    ATTEMPTS.labels(outcome=outcome).inc()
    ATTEMPT_SECONDS.labels(outcome=outcome).observe(duration_seconds)


class SharedStateCollector(Collector):
    """Figures read at scrape time from the database (a few index look-ups) and from the
    breakers' shared state in Redis."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        # Rows, not the highest id: the click buffer's insert (ON CONFLICT DO NOTHING) spends a
        # sequence value on every click that was already written when a conversion needed it,
        # so ids ran at about twice the clicks.
        yield CounterMetricFamily(
            "roundtrip_clicks", "Clicks recorded (rows stored).", value=Click.objects.count()
        )
        yield CounterMetricFamily(
            "roundtrip_conversions",
            "Conversions recorded (rows stored).",
            value=Conversion.objects.count(),
        )
        due = Postback.objects.filter(status=Postback.Status.PENDING).aggregate(
            due=Count("pk", filter=Q(next_attempt_at__lte=now)),
            oldest=Min("next_attempt_at", filter=Q(next_attempt_at__lte=now)),
        )
        yield GaugeMetricFamily(
            "roundtrip_postbacks_due",
            "Pending postbacks whose next attempt is due now (the delivery backlog).",
            value=due["due"],
        )
        lag = (now - due["oldest"]).total_seconds() if due["oldest"] else 0.0
        yield GaugeMetricFamily(
            "roundtrip_postback_queue_lag_seconds",
            "How long the oldest due postback has been waiting; alert when it grows.",
            value=lag,
        )
        breakers = GaugeMetricFamily(
            "roundtrip_breaker_state",
            "Circuit breaker per destination host: 0 closed, 1 half-open (probing), 2 open.",
            labels=["host"],
        )
        for host, state in sorted(breaker_states().items()):
            breakers.add_metric([host], BREAKER_STATES.get(state, 2))
        yield breakers


def event_registry() -> CollectorRegistry:
    """The recorded metrics: every process's in multiprocess mode, else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected


def exposition(*collectors: Collector) -> bytes:
    """The text exposition of everything: recorded metrics, then the shared-state figures and
    those of `collectors` (read at scrape time; config/health.py adds the liveness gauges)."""
    shared = CollectorRegistry()
    for collector in (SharedStateCollector(), *collectors):
        shared.register(collector)
    return generate_latest(event_registry()) + generate_latest(shared)
