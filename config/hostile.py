"""Input no view should have to think about, refused at the edge with a clear 4xx.

PostgreSQL can't store a NUL character in text (psycopg raises, the request would answer
500), and a lone UTF-16 surrogate can't be encoded as UTF-8 (rendering the answer would fail).
Neither is ever meaningful in a spid, a name, a URL or an id, so:

- `HostileInputMiddleware` answers 400 to a request whose path, query string, form body or
  headers hold a NUL (form bodies and query strings are decoded leniently by Django: invalid
  UTF-8 becomes U+FFFD, so no surrogate can arrive that way);
- `StrictJSONParser` (every DRF view's parser) answers 400 to a JSON body that holds a NUL or
  a lone surrogate anywhere (keys included) or is nested too deeply to parse (Python's
  RecursionError);
- `SafeJSONRenderer` escapes what UTF-8 can't encode instead of failing, as a last line;
- `sign_in_username` keeps an over-long username within the sign-in throttle's column;
- `validate_day` bounds every date a form or serializer accepts: a day near the ends of
  Python's calendar (9999-12-31) overflows as soon as a report adds a day or a time zone.

Views that answer such input themselves, with a named reason the publisher can see (the click
path counts its refusals), are listed by URL name in `HOSTILE_INPUT_OWN_VALIDATION`.
"""

import re
from collections.abc import Callable
from datetime import date, datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.urls import Resolver404, resolve
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer

# NUL, and the UTF-16 surrogate range (only ever alone in a Python str: a pair is decoded).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def unstorable(text: str) -> bool:
    """True when `text` can't be stored in PostgreSQL or encoded as UTF-8.

    >>> unstorable("spid-42"), unstorable("a\\x00b"), unstorable("\\ud800")
    (False, True, True)
    """
    return _UNSTORABLE.search(text) is not None


EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2999, 12, 31)


def validate_day(value: date | datetime) -> None:
    """The default validator of the dashboard's and the API's date and time fields.

    >>> validate_day(date(9999, 12, 31))
    Traceback (most recent call last):
    ...
    django.core.exceptions.ValidationError: ['Choose a date between 2000-01-01 and 2999-12-31.']
    """
    day = value.date() if isinstance(value, datetime) else value
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise ValidationError(
            f"Choose a date between {EARLIEST_DAY} and {LATEST_DAY}.", code="date_range"
        )


# django-axes keeps the username of every failed sign-in in a 255-character column.
THROTTLE_USERNAME_LENGTH = 255


def sign_in_username(request: HttpRequest, credentials: dict | None = None) -> str:
    """The username django-axes counts failures under (AXES_USERNAME_CALLABLE): the one typed,
    cut to the column it is stored in, so an over-long one is a failed sign-in, not a 500.
    (No real username is that long: Django's are at most 150 characters.)"""
    source = credentials if credentials else getattr(request, "POST", {})
    return str(source.get("username") or "")[:THROTTLE_USERNAME_LENGTH]


def _problem(request: HttpRequest) -> tuple[str, str]:
    """(parameter name or "", message) of the first NUL found, else ("", "").

    On the hot path (a clean click) this costs a few substring searches: the query string is
    only parsed to name the parameter once a NUL is known to be in it."""
    if "\x00" in request.path_info:
        return "", "The URL's path contains a NUL character."
    if "%00" in request.META.get("QUERY_STRING", "") and (found := _named(request.GET))[1]:
        return found
    for name, value in request.META.items():
        if name[:5] == "HTTP_" and isinstance(value, str) and "\x00" in value:
            header = name[5:].replace("_", "-").title()
            return "", f"The header {header} contains a NUL character."
    if request.method == "POST" and request.content_type in _FORM_TYPES:
        return _named(request.POST)
    return "", ""


def _named(params) -> tuple[str, str]:
    for name, values in params.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            field = "" if "\x00" in name else name[:40]
            return field, f"The parameter {field or 'name'!r} contains a NUL character."
    return "", ""


def _is_api(request: HttpRequest) -> bool:
    try:
        view = resolve(request.path_info).func
    except Resolver404:
        view = None
    # A DRF view (not imported here: DRF's settings import this module while loading it).
    return request.path_info.startswith("/api/") or hasattr(
        getattr(view, "cls", None), "parser_classes"
    )


class HostileInputMiddleware:
    """Refuse NUL characters anywhere in a request before any view or query sees them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        field, problem = _problem(request)
        if problem and not _own_validation(request):
            if _is_api(request):
                fields = {field: [problem]} if field else {}
                return JsonResponse(
                    {"error": {"code": "invalid", "message": problem, "fields": fields}},
                    status=400,
                )
            return HttpResponseBadRequest(f"Bad request: {problem}\n", content_type="text/plain")
        return self.get_response(request)


def _own_validation(request: HttpRequest) -> bool:
    try:
        name = resolve(request.path_info).url_name
    except Resolver404:
        return False
    return name in settings.HOSTILE_INPUT_OWN_VALIDATION


class StrictJSONParser(JSONParser):
    """DRF's JSON parser, answering 400 instead of 500 to what no view can use."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error: nested too deeply.") from None
        if _holds_unstorable(data):
            raise ParseError(
                "JSON parse error: a string contains a NUL character or a lone surrogate."
            )
        return data


def _holds_unstorable(data: object) -> bool:
    # Iterative: the parser already bounded the depth, but a walk needs no stack either way.
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if unstorable(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class SafeJSONRenderer(JSONRenderer):
    """JSON as UTF-8; text UTF-8 can't encode (a lone surrogate echoed in an error) is sent
    as a `\\uXXXX` escape rather than failing the answer."""

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            self.ensure_ascii = True
            return super().render(data, accepted_media_type, renderer_context)
