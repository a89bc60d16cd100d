"""The publisher dashboard."""

from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from publishers import selectors


def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard" if request.user.is_authenticated else "login")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    publisher = selectors.publisher_for_user(request)
    links = [
        {
            "link": link,
            "text_link": f"{settings.SITE_URL}/click?ref={link.code}&spid=YOUR_SPID",
            "example": f"{settings.SITE_URL}/click?ref={link.code}&spid={quote('123456789')}",
        }
        for link in selectors.links_for_publisher(publisher)
    ]
    return render(
        request,
        "publishers/dashboard.html",
        {
            "publisher": publisher,
            "links": links,
            "templates": selectors.templates_for_publisher(publisher),
            "conversions": selectors.recent_conversions(publisher),
            "postbacks": selectors.recent_postbacks(publisher),
        },
    )
