"""What every dashboard view shares: the signed-in member's publisher, roles, time zone."""

from collections.abc import Callable
from datetime import date, datetime
from functools import wraps
from zoneinfo import ZoneInfo

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from publishers import selectors
from publishers.models import Membership
from tracking.selectors import REPORT_TIMEZONES

View = Callable[..., HttpResponse]


def member_view(view: View) -> View:
    """Signed in and on a team: sets `request.membership` and `request.publisher` (404 for a
    user without a publisher). Every dashboard view goes through this."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        request.membership = selectors.membership_for_user(request)
        request.publisher = request.membership.publisher
        return view(request, *args, **kwargs)

    return wrapper


def owner_view(view: View) -> View:
    """Like member_view, and only the publisher's owners may pass (403 for members)."""

    @member_view
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not is_owner(request):
            raise PermissionDenied("Only the publisher's owners can do this.")
        return view(request, *args, **kwargs)

    return wrapper


def is_owner(request: HttpRequest) -> bool:
    return request.membership.role == Membership.Role.OWNER


def chosen_timezone(request: HttpRequest) -> str:
    """The page's own `?tz=` (any IANA zone), else UTC. Never remembered from another page:
    each page names the zone its times and days are in, and links carry it on."""
    wanted = request.GET.get("tz", "")
    return wanted if wanted in REPORT_TIMEZONES else "UTC"


def today_in(tz: str, now: datetime | None = None) -> date:
    return (now or datetime.now(ZoneInfo("UTC"))).astimezone(ZoneInfo(tz)).date()


def csv_safe(text: str) -> str:
    """A cell for a CSV export. Values come from visitors and advertisers (spids, keywords,
    placements, transaction ids): keep spreadsheets from running them as formulas."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class Echo:
    """A file-like sink for `csv.writer` whose `write` hands the line back, so a
    StreamingHttpResponse can send a CSV row by row without holding it all."""

    def write(self, value: str) -> str:
        return value
