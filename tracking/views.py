"""The public click endpoint: record, then redirect. Every visitor of every publisher hits it."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_GET

from postbacks.placeholders import TemplateError, expand_placeholders
from tracking import selectors, services
from tracking.models import ClickRejection

_REJECTION_MESSAGES = {
    ClickRejection.Reason.SPID_TOO_LONG: (
        f"The spid is longer than {settings.CLICKS_SPID_MAX_LENGTH} characters."
    ),
    ClickRejection.Reason.SPID_CONTROL_CHARS: "The spid contains control characters.",
}


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the nearest untrusted X-Forwarded-For hop when the peer is our proxy."""
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = settings.TRUSTED_PROXY_NETWORKS
    if not remote or not proxies:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    chain = [hop.strip() for hop in forwarded.split(",") if hop.strip()] + [remote]
    # Walk from the nearest hop outwards while the hop is one of our proxies.
    for hop in reversed(chain):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return remote
        if not any(address in network for network in proxies):
            return hop
    return chain[0]


@require_GET
def click(request: HttpRequest) -> HttpResponse:
    link = selectors.link_for_click(request.GET.get("ref", ""))
    if link is None:
        return render(
            request,
            "tracking/click_error.html",
            {"title": "Link not found", "message": "This link is unknown or no longer active."},
            status=404,
        )
    spid = request.GET.get("spid", "")
    problem = services.spid_problem(spid)
    if problem is not None:
        services.click_rejection_count(publisher_id=link.publisher_id, reason=problem)
        return render(
            request,
            "tracking/click_error.html",
            {"title": "Invalid link", "message": _REJECTION_MESSAGES[problem]},
            status=400,
        )
    recorded = services.click_record(
        link=link,
        spid=spid,
        placement=request.GET.get("placement", ""),
        creative_code=request.GET.get("creative", ""),
        ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        referer=request.META.get("HTTP_REFERER", ""),
    )
    values = {
        "click_id": recorded.click_id,
        "spid": recorded.spid,
        "publisher_id": link.publisher.public_id,
        "campaign_id": link.campaign.public_id,
        "placement": recorded.placement,
        "smart_ad_id": recorded.smart_ad_id,
        "keyword": recorded.keyword,
        "country": recorded.country,
        "device": recorded.device,
        "creative_id": recorded.creative.public_id if recorded.creative else "",
    }
    try:
        target = expand_placeholders(link.campaign.landing_url, values)
    except TemplateError:
        target = link.campaign.landing_url
    return HttpResponseRedirect(target)
