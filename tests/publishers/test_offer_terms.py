"""The dashboard shows a publisher its own payout terms and the caps that concern it, and
conversions over a cap (unpaid or refused) with their reason; never another publisher's."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.tracking.helpers import click_stored
from tracking.models import Campaign, ConversionCap, PayoutTerm, TrackingLink
from tracking.services import IntakeError, conversion_record

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"


@pytest.fixture
def offers(publisher, other_publisher, campaign, link):
    """Publisher A: a fixed term and its own daily cap of 2; publisher C: a 90 % share and a
    cap of its own on the same campaign; the campaign: a monthly cap of 50 conversions."""
    earlier = timezone.now() - timedelta(days=1)
    PayoutTerm.objects.create(
        campaign=campaign,
        publisher=publisher,
        kind="fixed",
        amount=Decimal("1.75"),
        effective_from=earlier,
    )
    PayoutTerm.objects.create(
        campaign=campaign,
        publisher=other_publisher,
        kind="revshare",
        percent=Decimal("90"),
        effective_from=earlier,
    )
    ConversionCap.objects.create(
        campaign=campaign, publisher=publisher, period="daily", max_conversions=2
    )
    ConversionCap.objects.create(
        campaign=campaign, publisher=other_publisher, period="total", max_payout=Decimal(777)
    )
    ConversionCap.objects.create(campaign=campaign, period="monthly", max_conversions=50)
    TrackingLink.objects.create(publisher=other_publisher, campaign=campaign, code="linkc")
    return campaign


def convert(advertiser, link, spid: str):
    click = click_stored(link=link, spid=spid, user_agent=BROWSER)
    return conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id=spid)


def test_a_member_sees_its_own_terms_and_caps_only(member_client, advertiser, link, offers):
    convert(advertiser, link, "s1")
    html = member_client.get(reverse("links")).content.decode()
    assert "1.75 EUR per conversion" in html
    assert "Daily (since" in html and "UTC)" in html
    assert "1 / 2" in html  # conversions used of the publisher's daily cap
    assert "1 / 50" in html  # of the campaign's monthly cap
    assert "90 % of" not in html and "777" not in html


def test_a_full_cap_says_what_happens_to_further_conversions(
    owner_client, advertiser, link, offers
):
    convert(advertiser, link, "s1")
    convert(advertiser, link, "s2")
    with pytest.raises(IntakeError):
        convert(advertiser, link, "s3")
    html = owner_client.get(reverse("links")).content.decode()
    assert "cap reached" in html and "further conversions are refused" in html
    refused = owner_client.get(reverse("conversions") + "?view=refused").content.decode()
    assert "Cap reached: over a conversion cap or payout budget of the campaign" in refused
    offers.cap_policy = Campaign.CapPolicy.ACCEPT_UNPAID
    offers.save()
    unpaid = convert(advertiser, link, "s4").conversion
    assert (unpaid.payout, unpaid.reason) == (Decimal(0), "cap_reached")
    html = owner_client.get(reverse("links")).content.decode()
    assert "further conversions are recorded unpaid" in html
    listing = owner_client.get(reverse("conversions")).content.decode()
    assert "Cap reached: over a conversion cap or payout budget of the campaign" in listing
    overview = owner_client.get(reverse("dashboard")).content.decode()
    # Counted twice by reason: recorded unpaid (approved) and refused.
    assert (
        overview.count("Cap reached: over a conversion cap or payout budget of the campaign") == 2
    )
    trace = owner_client.get(reverse("trace") + "?q=s4").content.decode()
    assert "daily cap of 2 conversions for publisher Publisher A" in trace


def test_an_outsider_sees_its_own_share_not_the_other_publishers(
    outsider_client, advertiser, link, offers
):
    html = outsider_client.get(reverse("links")).content.decode()
    assert "90 % of the conversion's revenue (in EUR)" in html
    assert "777.00" in html  # its own total budget
    assert "1.75" not in html and "1 / 2" not in html


def test_without_a_term_the_card_shows_the_campaign_default(member_client, link):
    html = member_client.get(reverse("links")).content.decode()
    assert "the campaign's default, 2.50 EUR per conversion" in html
