"""The advertiser portal's pages. Every view goes through `advertiser_view`, which finds the
signed-in user's advertiser; every read takes it (`selectors`), so another advertiser's
objects are a 404 and a publisher's account gets a 403."""

import json
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from config.client_ip import client_ip
from postbacks.values import format_amount
from publishers.views.common import chosen_timezone, keyset_pager
from tracking.clickinput import click_params
from tracking.models import AdvertiserAPIKey, AdvertiserUser, Campaign, IntakeOutcome
from tracking.portal import selectors, services
from tracking.portal.forms import ConversionFilterForm, ConversionTestForm, KeyForm
from tracking.selectors import REPORT_TIMEZONES

View = Callable[..., HttpResponse]
PAGE_SIZE = 50
# Session key holding a just-created key's plaintext until the keys page shows it once
# (Post/Redirect/Get: a refresh never creates a second key, the plaintext is never in a URL).
NEW_KEY_SESSION = "advertiser.new_key"


def advertiser_view(view: View) -> View:
    """Signed in as an advertiser user: sets `request.advertiser_user` and
    `request.advertiser`. Anyone else signed in (a publisher's member, staff) gets a 403."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        advertiser_user = selectors.advertiser_user_for(request.user)
        if advertiser_user is None:
            raise PermissionDenied("This area is for advertiser accounts.")
        request.advertiser_user = advertiser_user
        request.advertiser = advertiser_user.advertiser
        return view(request, *args, **kwargs)

    return wrapper


def owner_view(view: View) -> View:
    """Like advertiser_view, and only the advertiser's owners may pass (403 for members)."""

    @advertiser_view
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not is_owner(request):
            raise PermissionDenied("Only the advertiser's owners can do this.")
        return view(request, *args, **kwargs)

    return wrapper


def is_owner(request: HttpRequest) -> bool:
    return request.advertiser_user.role == AdvertiserUser.Role.OWNER


@advertiser_view
def home(request: HttpRequest) -> HttpResponse:
    campaigns = selectors.campaigns_for_advertiser(request.advertiser)
    return render(
        request,
        "advertiser/home.html",
        {
            "nav": "campaigns",
            "campaigns": [
                {"campaign": c, "payout": format_amount(c.default_payout)} for c in campaigns
            ],
            "test_form": ConversionTestForm(campaigns=campaigns),
        },
    )


@advertiser_view
def conversions(request: HttpRequest) -> HttpResponse:
    campaigns = selectors.campaigns_for_advertiser(request.advertiser)
    form = ConversionFilterForm(request.GET or None, campaigns=campaigns)
    tz = chosen_timezone(request)
    cursor = request.GET.get("after", "")
    page = None
    query: dict[str, str] = {}
    if form.is_bound and not form.is_valid():
        rows = []
        next_cursor = ""
    else:
        data = form.cleaned_data if form.is_bound else {}
        campaign = None
        if data.get("campaign"):
            campaign = selectors.campaign_for_advertiser(request.advertiser, data["campaign"])
        filters = selectors.OutcomeFilters(
            campaign=campaign, start=data.get("start"), end=data.get("end"), tz=tz
        )
        page = selectors.outcome_log(request.advertiser, filters, cursor=cursor, limit=PAGE_SIZE)
        rows = page.items
        next_cursor = page.next_if_more
        query = {
            name: str(value)
            for name, value in (
                ("campaign", data.get("campaign")),
                ("start", data.get("start")),
                ("end", data.get("end")),
            )
            if value
        }
    if tz != "UTC":
        query["tz"] = tz
    return render(
        request,
        "advertiser/conversions.html",
        {
            "nav": "conversions",
            "form": form,
            "rows": [_row(row) for row in rows],
            "tz": tz,
            "timezones": REPORT_TIMEZONES,
            **keyset_pager(query, cursor, next_cursor),
        },
    )


def _row(row: IntakeOutcome) -> dict:
    conversion = row.conversion
    return {
        "row": row,
        "outcome_class": {
            IntakeOutcome.Outcome.ACCEPTED: "succeeded",
            IntakeOutcome.Outcome.STATUS_CHANGED: "succeeded",
            IntakeOutcome.Outcome.DUPLICATE: "pending",
            IntakeOutcome.Outcome.REFUSED: "failed",
        }.get(row.outcome, "pending"),
        "payout": format_amount(conversion.payout) if conversion else "",
        "currency": conversion.currency if conversion else "",
        "current_status": conversion.status if conversion else "",
    }


def _keys_page(request: HttpRequest, form: KeyForm, new_key: str = "") -> HttpResponse:
    return render(
        request,
        "advertiser/keys.html",
        {
            "nav": "keys",
            "keys": selectors.keys_for_advertiser(request.advertiser),
            "prefixes": {k.value: p for k, p in AdvertiserAPIKey.PREFIXES.items()},
            "form": form,
            "new_key": new_key,
            "can_manage": is_owner(request),
        },
    )


@advertiser_view
def keys(request: HttpRequest) -> HttpResponse:
    new_key = request.session.pop(NEW_KEY_SESSION, "")
    response = _keys_page(request, KeyForm(), new_key=new_key)
    if new_key:
        # The only response that carries the plaintext: never cached, never shown again.
        response["Cache-Control"] = "no-store"
    return response


@require_POST
@owner_view
def key_create(request: HttpRequest) -> HttpResponse:
    form = KeyForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, form)
    _, plaintext = services.advertiser_portal_key_create(
        advertiser=request.advertiser,
        kind=form.cleaned_data["kind"],
        name=form.cleaned_data["name"],
    )
    request.session[NEW_KEY_SESSION] = plaintext
    return redirect("advertiser_keys")


@require_POST
@owner_view
def key_revoke(request: HttpRequest, lookup: str) -> HttpResponse:
    key = selectors.key_for_advertiser(request.advertiser, lookup)
    if services.advertiser_key_revoke(key=key):
        messages.success(request, f"Key {key.name or key.lookup} revoked.")
    return redirect("advertiser_keys")


@advertiser_view
def integration(request: HttpRequest) -> HttpResponse:
    campaigns = selectors.campaigns_for_advertiser(request.advertiser)
    chosen = request.GET.get("campaign", "")
    campaign = next((c for c in campaigns if c.public_id == chosen), None)
    if campaign is None and campaigns:
        campaign = campaigns[0]
    return render(
        request,
        "advertiser/integration.html",
        {
            "nav": "integration",
            "campaigns": campaigns,
            "campaign": campaign,
            "snippets": integration_snippets(settings.SITE_URL, campaign) if campaign else {},
        },
    )


def integration_snippets(site: str, campaign: Campaign) -> dict[str, str]:
    """curl, Python and PHP for `POST /api/v1/conversions`, and the GET pixel, filled with the
    site's URL and the campaign's payout. The key is always a placeholder: it was shown once
    when it was created, and the portal does not have it."""
    name = " ".join(campaign.name.split())  # one line, so it stays inside a comment
    payout = format_amount(campaign.default_payout)
    body = {
        "click_id": "CLICK_ID",
        "event": "conversion",
        "txn_id": "ORDER_ID",
        "payout": payout,
        "currency": campaign.currency,
    }
    landing = " ".join(campaign.landing_url.split())
    about = (
        f"Campaign {name} ({campaign.public_id}): visitors arrive at {landing} "
        "with their click id where it says [click_id]"
    )
    api = f"{site}/api/v1/conversions"
    curl = (
        f"# {about}\n"
        f"curl -X POST {api} \\\n"
        '  -H "Authorization: Bearer $ROUNDTRIP_API_KEY" \\\n'
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d '{json.dumps(body)}'"
    )
    python = (
        f"# {about}\n"
        "import json, os, urllib.request\n\n"
        "def report_conversion(click_id: str, order_id: str) -> None:\n"
        "    request = urllib.request.Request(\n"
        f'        "{api}",\n'
        "        data=json.dumps({\n"
        '            "click_id": click_id, "event": "conversion", "txn_id": order_id,\n'
        f'            "payout": "{payout}", "currency": "{campaign.currency}",\n'
        "        }).encode(),\n"
        "        headers={\n"
        '            "Authorization": "Bearer " + os.environ["ROUNDTRIP_API_KEY"],\n'
        '            "Content-Type": "application/json",\n'
        "        },\n"
        '        method="POST",\n'
        "    )\n"
        "    with urllib.request.urlopen(request, timeout=10) as response:\n"
        "        print(response.status, response.read().decode())"
    )
    php = (
        "<?php\n"
        f"// {about}\n"
        "function report_conversion(string $clickId, string $orderId): void {\n"
        f"    $ch = curl_init('{api}');\n"
        "    curl_setopt_array($ch, [\n"
        "        CURLOPT_POST => true,\n"
        "        CURLOPT_HTTPHEADER => [\n"
        "            'Authorization: Bearer ' . getenv('ROUNDTRIP_API_KEY'),\n"
        "            'Content-Type: application/json',\n"
        "        ],\n"
        "        CURLOPT_POSTFIELDS => json_encode([\n"
        "            'click_id' => $clickId, 'event' => 'conversion', 'txn_id' => $orderId,\n"
        f"            'payout' => '{payout}', 'currency' => '{campaign.currency}',\n"
        "        ]),\n"
        "        CURLOPT_RETURNTRANSFER => true,\n"
        "        CURLOPT_TIMEOUT => 10,\n"
        "    ]);\n"
        "    $body = curl_exec($ch);\n"
        "    echo curl_getinfo($ch, CURLINFO_RESPONSE_CODE), ' ', $body, \"\\n\";\n"
        "}"
    )
    pixel = (
        f"{site}/postback?"
        + urlencode({"token": "YOUR_POSTBACK_TOKEN"})
        + f"&click_id=CLICK_ID&txn_id=ORDER_ID&payout={payout}&currency={campaign.currency}"
    )
    return {"curl": curl, "python": python, "php": php, "pixel": pixel}


@require_POST
@advertiser_view
def test_conversion(request: HttpRequest) -> HttpResponse:
    campaigns = selectors.campaigns_for_advertiser(request.advertiser)
    form = ConversionTestForm(request.POST, campaigns=campaigns)
    if not form.is_valid():
        messages.error(request, "Pick one of your campaigns and an event name to test.")
        return redirect("advertiser_home")
    campaign = selectors.campaign_for_advertiser(request.advertiser, form.cleaned_data["campaign"])
    sent = services.conversion_test_send(
        advertiser=request.advertiser,
        campaign=campaign,
        event=form.cleaned_data["event"],
        ip=client_ip(request),
        user_agent=click_params(request).user_agent,
    )
    if sent.outcome is not None:
        outcome = sent.outcome
        text = f"Test conversion on {campaign.name}: {outcome.get_outcome_display()}"
        if outcome.status:
            text += f", status {outcome.status}"
        if outcome.reason:
            text += f" ({outcome.reason_text})"
        messages.success(request, text + f". Test click {sent.click_id}.")
    else:
        messages.error(request, f"The test conversion was not recorded: {sent.error}")
    url = reverse("advertiser_conversions") + "?" + urlencode({"campaign": campaign.public_id})
    return redirect(url)
