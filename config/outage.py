"""What the app does while its database is unreachable (a restart, a failover, a network cut).

One place decides what counts as an outage (`DATABASE_OUTAGE_ERRORS`) and how a request that
needs the database is answered: 503 with `Retry-After` (`DATABASE_OUTAGE_RETRY_AFTER`), as JSON
for the API (config/api.py's exception handler) and as a small page for everything else
(`DatabaseOutageMiddleware`). The click path itself keeps going from the per-process caches of
live links, smart ads and creatives (tracking/cache.py), so a visitor is still redirected.
"""

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

# What a lost or refused connection raises through Django's database wrapper (psycopg's
# "connection refused", "server closed the connection", "the connection is closed", and
# transient server-side aborts such as a failover's "terminating connection"). Other
# database errors (a bad query, a constraint) are bugs or answers, not outages.
DATABASE_OUTAGE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)

UNAVAILABLE_MESSAGE = (
    "The service is temporarily unavailable. Send the same request again, unchanged, after "
    "the number of seconds in the Retry-After header: a conversion recorded already is "
    "answered as such, never counted twice."
)

OutageResponder = Callable[[HttpRequest], HttpResponse]


def is_database_outage(exc: BaseException) -> bool:
    return isinstance(exc, DATABASE_OUTAGE_ERRORS)


def retry_after_header() -> str:
    return str(max(1, round(settings.DATABASE_OUTAGE_RETRY_AFTER)))


def log_outage(request: HttpRequest, exc: BaseException) -> None:
    # One line, no traceback: during an outage every request that needs the database lands
    # here, and the cause is the same each time.
    logger.warning(
        "Database unavailable, answering 503 to %s %s: %s: %s",
        request.method,
        request.path,
        type(exc).__name__,
        str(exc).strip().splitlines()[0] if str(exc).strip() else "",
    )


def answers_outage_with[V: Callable](responder: OutageResponder) -> Callable[[V], V]:
    """Decorate a view (outermost) whose outage answer must differ from the default page,
    e.g. the smart-ad iframe, which never shows an error page inside a publisher's site."""

    def decorate(view: V) -> V:
        view.database_outage_response = responder  # type: ignore[attr-defined]
        return view

    return decorate


def _default_response(request: HttpRequest) -> HttpResponse:
    # Rendered without the request: no context processor may touch the session (the
    # database) while the database is what failed.
    return HttpResponse(render_to_string("503.html"), status=503)


class DatabaseOutageMiddleware:
    """Answers a view's database outage with 503 + Retry-After instead of a 500.

    DRF views never get here for it: their exception handler (config/api.py) answers first
    with the API's JSON error shape.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not is_database_outage(exc):
            return None
        log_outage(request, exc)
        view = getattr(request.resolver_match, "func", None)
        responder: OutageResponder = getattr(view, "database_outage_response", _default_response)
        response = responder(request)
        response["Retry-After"] = retry_after_header()
        return response
