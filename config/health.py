"""Probes and metrics for load balancers, orchestrators and Prometheus.

- `/healthz`: the process is up and serving (no I/O: a slow database must not get healthy web
  processes restarted).
- `/readyz`: the database and the broker answer and the click buffer is not stalled; JSON, 503
  when any is not so (take the node out of rotation, don't restart it). It also reports whether
  a worker is consuming and how old the last beat heartbeat is (config/liveness.py): "degraded"
  when either is wrong, but still 200, since a web node serves clicks and takes conversions
  without them (postbacks wait in the database), and a load balancer must not take every node
  out for a stopped worker.
- `/metrics`: Prometheus text format (postbacks/metrics.py, plus the liveness gauges and the
  click pipeline's figures) behind a bearer token. It names every publisher's callback hosts,
  so with DEBUG off it is refused (403) until `METRICS_BEARER_TOKEN` is set, and
  `check --deploy` reports the missing token as an error.
- `/admin/status/`: the click pipeline's figures for staff, with the newest dead letters.
"""

import hmac
import logging

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from config import liveness
from config.celery import app
from postbacks import metrics
from tracking import clickbuffer
from tracking.models import ClickDeadLetter

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
    exposition = metrics.exposition(liveness.LivenessCollector(), clickbuffer.PipelineCollector())
    return HttpResponse(exposition, content_type=CONTENT_TYPE_LATEST)
