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
  (the most affected hosts only: see TOP_HOSTS).
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
from datetime import datetime
from typing import TYPE_CHECKING

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

from postbacks.fairness import breaker_states, get_gate

if TYPE_CHECKING:
    from postbacks.waits import EndpointWait

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
        # Late, like the models: worker processes import this module (attempt_observe) before
        # Django's apps are loaded.
        from postbacks.models import Postback
        from postbacks.waits import endpoint_waits
        from tracking.models import Click, Conversion

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
        waits = endpoint_waits(now=now)
        # The lag is the engine's: postbacks of hosts without room (a hanging endpoint) wait
        # for their endpoint, not for us, and have their own series below.
        held_hosts = [w.host for w in waits]
        due = Postback.objects.filter(status=Postback.Status.PENDING).aggregate(
            due=Count("pk", filter=Q(next_attempt_at__lte=now)),
            oldest=Min(
                "next_attempt_at", filter=Q(next_attempt_at__lte=now) & ~Q(host__in=held_hosts)
            ),
        )
        yield GaugeMetricFamily(
            "roundtrip_postbacks_due",
            "Pending postbacks whose next attempt is due now (the delivery backlog).",
            value=due["due"],
        )
        lag = (now - due["oldest"]).total_seconds() if due["oldest"] else 0.0
        yield GaugeMetricFamily(
            "roundtrip_postback_queue_lag_seconds",
            "How long the oldest due postback has been waiting, leaving out those whose host "
            "has no room (roundtrip_endpoint_oldest_due_age_seconds); alert when it grows.",
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
        yield from _endpoint_waits(now, waits)


# Per-endpoint series are kept to this many hosts each (the most affected first); the rest are
# summed under host="(other)". A network has thousands of endpoints: one series per host would
# grow with every publisher, while the few that hold rows at a time are the ones to see.
TOP_HOSTS = 20
OTHER = "(other)"


def _endpoint_waits(now: datetime, waits: "list[EndpointWait]") -> Iterator[Metric]:
    in_flight = GaugeMetricFamily(
        "roundtrip_endpoint_in_flight",
        f"Requests in flight per destination host, across every worker (the {TOP_HOSTS} "
        f'busiest; the rest summed as host="{OTHER}").',
        labels=["host"],
    )
    busiest = sorted(
        ((room.in_flight, host) for host, room in get_gate().rooms().items() if room.in_flight),
        reverse=True,
    )
    for count, host in busiest[:TOP_HOSTS]:
        in_flight.add_metric([host], count)
    if busiest[TOP_HOSTS:]:
        in_flight.add_metric([OTHER], sum(count for count, _ in busiest[TOP_HOSTS:]))
    yield in_flight

    waits = sorted(waits, key=lambda w: (-w.waiting, w.host))
    held = GaugeMetricFamily(
        "roundtrip_endpoint_held_postbacks",
        "Due postbacks not claimed because their host has no room, by host and reason (busy: "
        f"at its cap; hanging; breaker: held by its breaker). The {TOP_HOSTS} hosts holding "
        f'most; the rest summed as host="{OTHER}".',
        labels=["host", "reason"],
    )
    age = GaugeMetricFamily(
        "roundtrip_endpoint_oldest_due_age_seconds",
        f"How long the oldest held postback of a host has been due (the same {TOP_HOSTS} "
        f'hosts; host="{OTHER}": the oldest of the rest).',
        labels=["host"],
    )
    shown, rest = waits[:TOP_HOSTS], waits[TOP_HOSTS:]
    for wait in shown:
        held.add_metric([wait.host, wait.reason], wait.waiting)
        if wait.oldest_due is not None:
            age.add_metric([wait.host], (now - wait.oldest_due).total_seconds())
    if rest:
        held.add_metric([OTHER, "any"], sum(w.waiting for w in rest))
        oldest = min((w.oldest_due for w in rest if w.oldest_due), default=None)
        if oldest is not None:
            age.add_metric([OTHER], (now - oldest).total_seconds())
    yield held
    yield age
    yield GaugeMetricFamily(
        "roundtrip_postbacks_held_for_room",
        "Due postbacks not claimed because their host has no room (every host).",
        value=sum(w.waiting for w in waits),
    )


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
