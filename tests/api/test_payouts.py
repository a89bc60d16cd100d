"""`GET /api/v1/payouts`: a publisher's payout terms and the caps that concern it, per campaign
it has a link to; never another publisher's terms, caps or campaigns."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.api.conftest import browser_click, record_conversion
from tracking.models import Campaign, ConversionCap, PayoutTerm, TrackingLink

pytestmark = pytest.mark.django_db


@pytest.fixture
def offers(publisher, other_publisher, advertiser, campaign, link):
    since = timezone.now() - timedelta(days=1)
    PayoutTerm.objects.create(
        campaign=campaign,
        publisher=publisher,
        kind="fixed",
        amount=Decimal("1"),
        effective_from=since - timedelta(days=1),
    )
    # The newer term supersedes the older one.
    PayoutTerm.objects.create(
        campaign=campaign,
        publisher=publisher,
        kind="revshare",
        percent=Decimal("40"),
        effective_from=since,
    )
    PayoutTerm.objects.create(
        campaign=campaign,
        publisher=other_publisher,
        kind="fixed",
        amount=Decimal("9"),
        effective_from=since,
    )
    ConversionCap.objects.create(campaign=campaign, period="daily", max_conversions=100)
    ConversionCap.objects.create(
        campaign=campaign, publisher=publisher, period="total", max_payout=Decimal("50")
    )
    ConversionCap.objects.create(
        campaign=campaign, publisher=other_publisher, period="monthly", max_conversions=7
    )
    TrackingLink.objects.create(publisher=other_publisher, campaign=campaign, code="linkc")
    # A campaign publisher A has no link to: not its business.
    Campaign.objects.create(
        advertiser=advertiser, name="Elsewhere", landing_url="https://a.example/?c=[click_id]"
    )
    return campaign


def test_it_lists_the_publishers_current_terms_and_its_caps(api, advertiser, link, offers):
    record_conversion(advertiser, browser_click(link, "s1"), revenue=Decimal("10"))
    body = api.get("/api/v1/payouts").json()
    assert [r["campaign"]["name"] for r in body["results"]] == ["Campaign"]
    offer = body["results"][0]
    assert (offer["currency"], offer["time_zone"], offer["cap_policy"]) == ("EUR", "UTC", "reject")
    payout = offer["payout"]
    assert (payout["kind"], payout["amount"], payout["percent"], payout["default_payout"]) == (
        "revshare",
        None,
        "40.00",
        "2.50",
    )
    assert [
        (
            c["scope"],
            c["period"],
            c["max_conversions"],
            c["max_payout"],
            c["conversions"],
            c["payout"],
        )
        for c in offer["caps"]
    ] == [
        ("campaign", "daily", 100, None, 1, "4.00"),
        ("publisher", "total", None, "50.00", 1, "4.00"),
    ]
    assert offer["caps"][0]["period_start"] == timezone.now().date().isoformat()
    assert offer["caps"][1]["period_start"] is None
    assert not any(c["reached"] for c in offer["caps"])


def test_another_publisher_sees_only_its_own(other_api, offers):
    offer = other_api.get("/api/v1/payouts").json()["results"][0]
    assert (offer["payout"]["kind"], offer["payout"]["amount"]) == ("fixed", "9.00")
    assert [(c["scope"], c["period"]) for c in offer["caps"]] == [
        ("campaign", "daily"),
        ("publisher", "monthly"),
    ]


def test_without_terms_it_says_default(api, link):
    offer = api.get("/api/v1/payouts").json()["results"][0]
    assert offer["payout"] == {
        "kind": "default",
        "amount": None,
        "percent": None,
        "effective_from": None,
        "default_payout": "2.50",
    }
    assert offer["caps"] == []


def test_it_needs_a_key(client):
    response = client.get("/api/v1/payouts")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
