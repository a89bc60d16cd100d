"""Probes and metrics for load balancers, orchestrators and Prometheus.

- `/healthz`: the process is up and serving (no I/O: a slow database must not get healthy web
  processes restarted).
- `/readyz`: the database and the broker answer; JSON, 503 when either does not (take the node
  out of rotation, don't restart it).
- `/metrics`: Prometheus text format (postbacks/metrics.py) behind a bearer token. It names
  every publisher's callback hosts, so with DEBUG off it is refused (403) until
  `METRICS_BEARER_TOKEN` is set, and `check --deploy` reports the missing token as an error.
"""

import hmac
import logging

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from postbacks import metrics

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
    from config.celery import app

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


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    problems = {"database": database_problem(), "broker": broker_problem()}
    ready = not any(problems.values())
    if not ready:
        logger.warning("Not ready: %s", problems)
    return JsonResponse(
        {
            "status": "ok" if ready else "unavailable",
            "checks": {name: problem or "ok" for name, problem in problems.items()},
        },
        status=200 if ready else 503,
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
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
