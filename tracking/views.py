"""The public endpoints: `/click` (record, then redirect: every visitor of every publisher hits it)
and `/smart` (the iframe ad unit)."""

import secrets

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET

from config.client_ip import client_ip
from config.outage import answers_outage_with
from postbacks.placeholders import TemplateError, expand_placeholders
from postbacks.values import click_values
from tracking import access, clickinput, intelligence, policy, selectors, services, smart
from tracking.models import Campaign, ClickRejection, SmartAd, TrackingLink


def _landing_url(campaign: Campaign, values: dict[str, str]) -> str:
    try:
        return expand_placeholders(campaign.landing_url, values)
    except TemplateError:
        return campaign.landing_url


@require_GET
def click(request: HttpRequest) -> HttpResponse:
    params = clickinput.click_params(request)
    link = selectors.link_for_click(params.ref)
    if link is None:
        return render(
            request,
            "tracking/click_error.html",
            {"title": "Link not found", "message": "This link is unknown or no longer active."},
            status=404,
        )
    if params.spid_problem is not None:
        # The spid comes back byte-exact in callbacks, so it is never altered: the click is
        # refused and counted with its reason, and the visitor still reaches the landing page.
        services.click_rejection_count(publisher_id=link.publisher_id, reason=params.spid_problem)
        return HttpResponseRedirect(
            _landing_url(link.campaign, {"publisher_id": link.publisher.public_id})
        )
    smart_click = None
    if smart.is_smart_click(params.query):
        # A smart-ad link: its creative (hence campaign), smart ad and keyword are signed.
        try:
            smart_click = smart.smart_click_verify(params.query)
        except smart.BadSmartLink:
            services.click_rejection_count(
                publisher_id=link.publisher_id, reason=ClickRejection.Reason.BAD_SIGNATURE
            )
            return render(
                request,
                "tracking/click_error.html",
                {"title": "Invalid link", "message": "This ad link has been altered."},
                status=400,
            )
        if smart_click is None:
            return render(
                request,
                "tracking/click_error.html",
                {"title": "Ad not found", "message": "This ad is no longer running."},
                status=404,
            )
    ip = client_ip(request)
    refusal = _click_refusal(link, smart_click, ip=ip, spid=params.spid)
    if refusal is not None:
        services.click_rejection_count(publisher_id=link.publisher_id, reason=refusal)
        return _click_refused(request, refusal)
    recorded = services.click_record(
        link=link,
        spid=params.spid,
        placement=params.placement,
        creative_code=params.creative,
        smart=smart_click,
        ip=ip,
        user_agent=params.user_agent,
        referer=params.referer,
        cdn_country=intelligence.cdn_country(request.META),
        # A click's keyword comes signed in its link, never from `q`.
        cleaned=[name for name in params.cleaned if name != "keyword"],
    )
    campaign = recorded.campaign  # the link's, or a smart ad's creative's
    values = click_values(
        recorded,
        publisher_public_id=link.publisher.public_id,
        campaign_public_id=campaign.public_id,
    )
    return HttpResponseRedirect(_landing_url(campaign, values))


def _click_refusal(
    link: TrackingLink, smart_click: smart.SmartClick | None, *, ip: str | None, spid: str
) -> str | None:
    """Why the click must not go through (a ClickRejection reason), else None: the publisher
    may not run the campaign (tracking/access.py), or the campaign's policy refuses it
    (tracking/policy.py). Both read per-process caches; only a campaign with rate caps costs
    a Redis round trip."""
    campaign = smart_click.creative.campaign if smart_click is not None else link.campaign
    if not access.click_access_allowed(campaign, link.publisher_id):
        return ClickRejection.Reason.OFFER_NOT_APPROVED
    return policy.click_refusal(campaign=campaign, publisher_id=link.publisher_id, ip=ip, spid=spid)


# What a refused visitor reads, and the status: never the landing page (no click was recorded,
# so the advertiser could not attribute anything to it).
_REFUSED_PAGES = {
    ClickRejection.Reason.OFFER_NOT_APPROVED: (
        403,
        "Offer not available",
        "This link's publisher is not approved to run this offer.",
    ),
    ClickRejection.Reason.IP_BLOCKED: (
        403,
        "Not available",
        "This offer is not available from your network.",
    ),
}
_RATE_CAPPED_PAGE = (429, "Too many clicks", "Too many clicks on this offer; try again shortly.")


def _click_refused(request: HttpRequest, reason: str) -> HttpResponse:
    status, title, message = _REFUSED_PAGES.get(reason, _RATE_CAPPED_PAGE)
    response = render(
        request,
        "tracking/click_error.html",
        {"title": title, "message": message, "reason": reason},
        status=status,
    )
    response["X-Roundtrip-Refused"] = reason
    if status == 429:
        response["Retry-After"] = str(policy.WINDOW_SECONDS)
    add_never_cache_headers(response)
    return response


def _smart_response(
    request: HttpRequest, template: str, context: dict, status: int = 200
) -> HttpResponse:
    """An ad unit document: framable by any site, and able to do nothing but show text.

    CSP: nothing may load (`default-src 'none'`), only our own inline style block runs (by
    nonce), no <base>, no forms; `frame-ancestors *` replaces X-Frame-Options, which is left
    out (it can't express "any site"). CORP lets pages with COEP embed the unit.
    """
    nonce = secrets.token_urlsafe(16)
    response = render(request, template, {**context, "nonce": nonce}, status=status)
    response["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors *"
    )
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


def _smart_unavailable(request: HttpRequest) -> HttpResponse:
    """The unit's answer when the database is down and nothing cached can serve it: blank."""
    response = _smart_response(request, "tracking/smart_ad_blank.html", {}, status=503)
    response.xframe_options_exempt = True  # type: ignore[attr-defined]
    add_never_cache_headers(response)
    return response


@answers_outage_with(_smart_unavailable)
@require_GET
@xframe_options_exempt
@never_cache
def smart_ad(request: HttpRequest) -> HttpResponse:
    """`/smart?ref=<code>&smart_ad_id=<id>&q=<keyword>&spid=<spid>`: the iframe ad unit.

    Never an error page inside a publisher's site: an unknown ref or smart ad answers 404 and
    an invalid spid 400, each with an empty transparent document (nothing shows, the status
    is there for monitoring); no eligible creative answers 200 with the same blank unit. During
    a database outage the unit is served from the last known smart ad and creatives; when
    there are none, 503 with the blank unit.
    """
    params = clickinput.click_params(request)
    link = selectors.link_for_click(params.ref)
    smart_ad_id = smart.parse_smart_ad_id(params.smart_ad_id)
    if link is None or smart_ad_id is None:
        return _smart_response(request, "tracking/smart_ad_blank.html", {}, status=404)
    if params.spid_problem is not None:
        # Its ads' links would carry the spid: refused and counted as on /click.
        services.click_rejection_count(publisher_id=link.publisher_id, reason=params.spid_problem)
        return _smart_response(request, "tracking/smart_ad_blank.html", {}, status=400)
    country = intelligence.visitor_country(
        client_ip(request), intelligence.cdn_country(request.META)
    )
    unit = smart.smart_ad_serve(
        link=link,
        smart_ad_id=smart_ad_id,
        query=params.keyword,
        spid=params.spid,
        placement=params.placement,
        country=country,
        # A bot's view is not an impression: it would inflate them and lower the CTR.
        count_impressions=not intelligence.parse_user_agent(params.user_agent).is_bot,
        # Never an ad whose click would be refused (offer_not_approved).
        may_run=lambda campaign: access.click_access_allowed(campaign, link.publisher_id),
    )
    if unit is None:
        return _smart_response(request, "tracking/smart_ad_blank.html", {}, status=404)
    if not unit.ads:
        return _smart_response(request, "tracking/smart_ad_blank.html", {})
    return _smart_response(
        request,
        "tracking/smart_ad.html",
        {
            "ads": unit.ads,
            "width": unit.smart_ad.width,
            "height": unit.smart_ad.height,
            "show_body": unit.smart_ad.template == SmartAd.Template.TEXT,
        },
    )
