"""Offer access and the campaign's bot and fraud policy on real processes (gunicorn with two
workers, a Celery worker and beat, PostgreSQL, Redis): click → conversion → the policy's
decision → the publisher's callback, or the click's refusal, each with its named reason; and a
click-rate cap that holds when concurrent clicks land on different web processes."""

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.db.models import Sum

from publishers.models import CallbackTemplate
from tests.e2e.processes import BROWSER_USER_AGENT, wait_until
from tracking import access
from tracking.models import (
    Campaign,
    CampaignPolicy,
    Click,
    ClickRejection,
    OfferAccess,
    TrackingLink,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack_settings() -> dict[str, str]:
    # A decision in the admin reaches the web processes within a second instead of five; the
    # client IP is taken from X-Forwarded-For sent by this test (its "proxy" is 127.0.0.1).
    return {"CLICKS_LINK_CACHE_SECONDS": "1", "TRUSTED_PROXIES": "127.0.0.1/32"}


def campaign_for(advertiser, name: str, **fields) -> Campaign:
    return Campaign.objects.create(
        advertiser=advertiser,
        name=name,
        landing_url="https://advertiser.example/go?click_id=[click_id]&s=[spid]",
        currency="EUR",
        **fields,
    )


def click(base_url: str, code: str, spid: str, *, ip: str = "203.0.113.7", agent=None):
    return requests.get(
        f"{base_url}/click",
        params={"ref": code, "spid": spid},
        headers={"User-Agent": agent or BROWSER_USER_AGENT, "X-Forwarded-For": ip},
        allow_redirects=False,
        timeout=10,
    )


def click_id_of(response: requests.Response) -> str:
    assert response.status_code == 302, (response.status_code, response.text[:300])
    return parse_qs(urlsplit(response.headers["Location"]).query)["click_id"][0]


def convert(base_url: str, api_key: str, click_id: str) -> dict:
    response = requests.post(
        f"{base_url}/api/v1/conversions",
        json={"click_id": click_id, "txn_id": f"order-{click_id}"},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text[:500]
    return response.json()


def refused(publisher, reason: str) -> int:
    rows = ClickRejection.objects.filter(publisher=publisher, reason=reason)
    return rows.aggregate(n=Sum("count"))["n"] or 0


def test_access_and_bot_policy_from_click_to_callback(
    roundtrip_stack, receiver, publisher, advertiser, api_key
):
    base = roundtrip_stack.base_url
    CallbackTemplate.objects.create(
        publisher=publisher,
        url_template=f"{receiver.base_url}/cb?spid=[spid]&status=[status]&reason=[reason]",
        statuses=["approved", "pending", "rejected"],
    )
    gated = campaign_for(advertiser, "Gated", access=Campaign.Access.APPROVAL)
    # A link staff made before the offer was gated: its clicks are refused until approval.
    gated_link = TrackingLink.objects.create(publisher=publisher, campaign=gated, code="gated")

    response = click(base, gated_link.code, "before-approval")
    assert response.status_code == 403, response.text[:300]
    assert response.headers["X-Roundtrip-Refused"] == "offer_not_approved"
    assert "Location" not in response.headers and "offer_not_approved" in response.text
    assert refused(publisher, "offer_not_approved") == 1

    access.offer_access_request(publisher=publisher, public_id=gated.public_id, message="e2e")
    row = OfferAccess.objects.get(publisher=publisher, campaign=gated)
    access.offer_access_decide(access_ids=[row.pk], approve=True)
    # Every web process reads it again once its cached answer is CLICKS_LINK_CACHE_SECONDS old.
    time.sleep(1.5)
    human = convert(base, api_key, click_id_of(click(base, gated_link.code, "human-1")))
    assert (human["status"], human["reason"]) == ("approved", "")

    # A campaign that rejects conversions of bot clicks.
    strict = campaign_for(advertiser, "Strict")
    CampaignPolicy.objects.create(campaign=strict, bot_action=CampaignPolicy.BotAction.REJECT)
    strict_link = access.tracking_link_create(publisher=publisher, public_id=strict.public_id)
    bot = click_id_of(click(base, strict_link.code, "bot-1", agent="python-requests/2.32"))
    rejected = convert(base, api_key, bot)
    assert (rejected["status"], rejected["reason"]) == ("rejected", "bot_rejected")

    def callbacks() -> dict[str, list[str]]:
        roundtrip_stack.check_alive()
        return {
            parse_qs(urlsplit(r.path).query, keep_blank_values=True)["spid"][0]: [
                parse_qs(urlsplit(r.path).query, keep_blank_values=True)[name][0]
                for name in ("status", "reason")
            ]
            for r in list(receiver.requests)
        }

    wait_until(lambda: len(callbacks()) == 2, timeout=30, interval=0.2, what="both callbacks")
    assert callbacks() == {"human-1": ["approved", ""], "bot-1": ["rejected", "bot_rejected"]}
    # Every refused click was counted with its reason, and none was stored.
    assert refused(publisher, "offer_not_approved") == 1
    wait_until(
        lambda: Click.objects.filter(campaign=gated).count() == 1,
        timeout=10,
        what="the gated offer's clicks to be flushed",
    )
    assert not Click.objects.filter(spid="before-approval").exists()


def test_block_list_and_a_rate_cap_shared_by_every_web_process(
    roundtrip_stack, publisher, advertiser
):
    base = roundtrip_stack.base_url
    capped = campaign_for(advertiser, "Capped")
    CampaignPolicy.objects.create(
        campaign=capped, blocked_ips="198.51.100.0/24", max_clicks_per_minute=30
    )
    link = TrackingLink.objects.create(publisher=publisher, campaign=capped, code="capped")

    blocked = click(base, link.code, "blocked", ip="198.51.100.23")
    assert (blocked.status_code, blocked.headers["X-Roundtrip-Refused"]) == (403, "ip_blocked")

    # All 120 clicks fall in one calendar minute (the cap's window).
    if time.time() % 60 > 40:
        time.sleep(61 - time.time() % 60)

    def one(n: int) -> int:
        return click(base, link.code, f"c{n}", ip=f"203.0.113.{n % 200}").status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(120)))
    assert (statuses.count(302), statuses.count(429)) == (30, 90), statuses
    assert refused(publisher, "rate_cap_minute") == 90
    assert refused(publisher, "ip_blocked") == 1
    # The 30 that went through are stored; the refused ones never were.
    wait_until(
        lambda: Click.objects.filter(campaign=capped).count() == 30,
        timeout=20,
        interval=0.3,
        what="the 30 clicks to be flushed",
    )
    time.sleep(1.5)  # another flush: still 30
    assert Click.objects.filter(campaign=capped).count() == 30
