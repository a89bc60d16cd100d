"""What every dashboard view shares: the signed-in member's publisher, roles, time zone."""

from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import wraps
from zoneinfo import ZoneInfo

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import urlencode

from publishers import selectors
from publishers.models import Membership
from tracking.selectors import REPORT_TIMEZONES

View = Callable[..., HttpResponse]


# What a staff user viewing a publisher may send: reads only.
READ_ONLY_METHODS = ("GET", "HEAD", "OPTIONS")


def member_view(view: View) -> View:
    """Signed in and on a team: sets `request.membership` and `request.publisher`, and
    `request.memberships` (every team of the user, for the switcher). Every dashboard view
    goes through this.

    A staff user who picked a publisher on the staff page sees that publisher's dashboard
    read-only (`request.staff_view`): as a member, never an owner, and anything but a read
    is refused (403). A staff user on no team is sent to that page, an advertiser user to
    their portal (/advertiser/); anyone else on no team gets a 404. A publisher that signed up
    and is not approved shows only its status."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        request.memberships = list(selectors.memberships_for_user(request.user))
        viewed = selectors.staff_viewed_publisher(request)
        request.staff_view = viewed is not None
        if viewed is not None:
            if request.method not in READ_ONLY_METHODS:
                raise PermissionDenied("Staff view is read-only.")
            membership = Membership(
                publisher=viewed, user=request.user, role=Membership.Role.MEMBER
            )
        else:
            membership = selectors.membership_for_user(request)
        if membership is None:
            if request.user.is_staff:
                return redirect("staff_publishers")
            if selectors.is_advertiser_user(request.user):
                # Signed in to the wrong area (e.g. after the login page): their own portal.
                return redirect("advertiser_home")
            raise Http404("You are not a member of any publisher.")
        request.membership = membership
        request.publisher = membership.publisher
        if membership.publisher.awaiting_approval and viewed is None:
            return awaiting_approval(request)
        return view(request, *args, **kwargs)

    return wrapper


def awaiting_approval(request: HttpRequest) -> HttpResponse:
    """What the team of a signed-up publisher that is pending or rejected sees instead of any
    dashboard page (publishers/signup.py): 403, and why."""
    publisher = request.publisher
    return render(
        request,
        "publishers/awaiting_approval.html",
        {
            "publisher": publisher,
            "application": getattr(publisher, "signup_application", None),
        },
        status=403,
    )


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


def keyset_pager(query: Mapping[str, str], cursor: str, next_cursor: str) -> dict[str, str]:
    """The links of a keyset-paged list (publishers/_pager.html): back to the newest page
    when on a later one, and on to older rows when there are more. `query` keeps the filters."""
    return {
        "first_url": "?" + urlencode(query) if cursor else "",
        "next_url": "?" + urlencode({**query, "after": next_cursor}) if next_cursor else "",
    }


def csv_safe(text: str) -> str:
    """A cell for a CSV export. Values come from visitors and advertisers (spids, keywords,
    placements, transaction ids): keep spreadsheets from running them as formulas."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class Echo:
    """A file-like sink for `csv.writer` whose `write` hands the line back, so a
    StreamingHttpResponse can send a CSV row by row without holding it all."""

    def write(self, value: str) -> str:
        return value
