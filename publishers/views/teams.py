"""Which publisher the dashboard shows: a member of several teams switches between them; a
staff user picks any publisher and views its dashboard read-only (audited)."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from publishers import selectors, services
from publishers.audit import Actor
from publishers.models import Publisher
from publishers.views.common import View


@require_POST
@login_required
def publisher_switch(request: HttpRequest) -> HttpResponse:
    """Show another of the user's publishers (404 for one whose team they are not on)."""
    chosen = request.POST.get("publisher", "")
    membership = selectors.memberships_for_user(request.user).filter(publisher__public_id=chosen)
    if not membership.exists():
        raise Http404("No such publisher.")
    request.session[selectors.SESSION_PUBLISHER] = chosen
    request.session.pop(selectors.SESSION_STAFF_VIEW, None)
    return redirect("dashboard")


def staff_only(view: View) -> View:
    """Signed in as staff (403 for anyone else signed in)."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("Only Roundtrip staff can do this.")
        return view(request, *args, **kwargs)

    return wrapper


@staff_only
def staff_publishers(request: HttpRequest) -> HttpResponse:
    """Staff: find a publisher and view its dashboard read-only."""
    query = request.GET.get("q", "").strip()[:200]
    return render(
        request,
        "publishers/staff_publishers.html",
        {
            "q": query,
            "publishers": selectors.publishers_for_staff(query),
            "viewing": selectors.staff_viewed_publisher(request),
        },
    )


@require_POST
@staff_only
def staff_view_start(request: HttpRequest) -> HttpResponse:
    publisher = Publisher.objects.filter(public_id=request.POST.get("publisher", "")).first()
    if publisher is None:
        raise Http404("No such publisher.")
    services.staff_view_record(publisher=publisher, actor=Actor.admin(request))
    request.session[selectors.SESSION_STAFF_VIEW] = publisher.public_id
    messages.info(request, f"Viewing {publisher.name} read-only; its team sees this in Activity.")
    return redirect("dashboard")


@require_POST
@staff_only
def staff_view_stop(request: HttpRequest) -> HttpResponse:
    request.session.pop(selectors.SESSION_STAFF_VIEW, None)
    return redirect("staff_publishers")
