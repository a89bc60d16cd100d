"""Probes and metrics for load balancers, orchestrators and Prometheus.

- `/healthz`: the process is up and serving (no I/O: a slow database must not get healthy web
  processes restarted).
- `/readyz`: the database and the broker answer and the click buffer is not stalled; JSON, 503
  when any is not so (take the node out of rotation, don't restart it). It also reports whether
  a worker is consuming and how old the last beat heartbeat is (config/liveness.py): "degraded"
  when either is wrong, but still 200, since a web node serves clicks and takes conversions
  without them (postbacks wait in the database), and a load balancer must not take every node
  out for a stopped worker.
- `/metrics`: Prometheus text format (the attempts recorded by postbacks/metrics.py, the
  database and Redis figures of `SharedStateCollector` below, the liveness gauges and the
  click pipeline's figures) behind a bearer token. It names every publisher's callback hosts,
  so with DEBUG off it is refused (403) until `METRICS_BEARER_TOKEN` is set, and
  `check --deploy` reports the missing token as an error.
- `/admin/status/`: the click pipeline's figures for staff, with the newest dead letters.
"""

import hmac
import logging
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db import DatabaseError, connections
from django.db.models import Count, Min, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from config import liveness
from config.celery import app
from postbacks import metrics
from postbacks.fairness import breaker_states, get_gate
from postbacks.models import Postback
from postbacks.waits import EndpointWait, endpoint_waits
from tracking import clickbuffer
from tracking.models import Click, ClickDeadLetter, Conversion

logger = logging.getLogger(__name__)


@require_GET
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")


def database_problem() -> str | None:
    """None when the default database answers a query, else a short description."""
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}".strip()[:200]
    return None


def broker_problem() -> str | None:
    """None when the Celery broker accepts a connection (and Redis answers PING)."""
    timeout = settings.READYZ_TIMEOUT_SECONDS
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=timeout
            )
            client = getattr(connection.default_channel, "client", None)
            if client is not None:  # Redis: a connection is not proof it answers
                client.ping()
    except Exception as exc:  # any transport's error means "not ready"
        return f"{type(exc).__name__}: {exc}".strip()[:200]
    return None


def _pipeline() -> clickbuffer.PipelineStatus | None:
    try:
        return clickbuffer.pipeline_status()
    except DatabaseError:
        return None  # the database check says why


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    problems = {"database": database_problem(), "broker": broker_problem()}
    pipeline = _pipeline()
    problems["click_buffer"] = pipeline.problem if pipeline else None
    ready = not any(problems.values())
    if not ready:
        logger.warning("Not ready: %s", problems)
    processes = liveness.liveness_read().problems()
    if any(processes.values()):
        logger.warning("Degraded: %s", processes)
    status = "unavailable" if not ready else "degraded" if any(processes.values()) else "ok"
    body = {
        "status": status,
        "checks": {name: problem or "ok" for name, problem in {**problems, **processes}.items()},
    }
    if pipeline is not None:
        buffer = pipeline.buffer
        body["click_pipeline"] = {
            "buffered": buffer.entries if buffer else None,
            "oldest_buffered_seconds": buffer.oldest_seconds if buffer else None,
            "dead_letters": pipeline.dead_letters,
        }
    return JsonResponse(body, status=200 if ready else 503)


@staff_member_required
@never_cache
def pipeline_status_page(request: HttpRequest) -> HttpResponse:
    """Staff's view of the pipelines: what waits, how long, and what was set aside."""
    return render(
        request,
        "admin/pipeline_status.html",
        {
            **admin.site.each_context(request),
            "title": "Pipeline status",
            "pipeline": clickbuffer.pipeline_status(),
            "dead_letters": ClickDeadLetter.objects.order_by("-created_at")[:20],
        },
    )


# Values of roundtrip_breaker_state, from postbacks.fairness's state names.
BREAKER_STATES = {"closed": 0, "half": 1, "open": 2}


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


def _endpoint_waits(now: datetime, waits: list[EndpointWait]) -> Iterator[Metric]:
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


@require_GET
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_BEARER_TOKEN
    if not token and not settings.DEBUG:
        return HttpResponse(
            "metrics are off: set METRICS_BEARER_TOKEN to serve them\n",
            status=403,
            content_type="text/plain",
        )
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    exposition = metrics.exposition(
        SharedStateCollector(), liveness.LivenessCollector(), clickbuffer.PipelineCollector()
    )
    return HttpResponse(exposition, content_type=CONTENT_TYPE_LATEST)
