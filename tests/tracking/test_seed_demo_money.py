"""The demo seed shows the money features: a revenue-share publisher and a capped offer."""

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from tests.tracking.helpers import click_stored
from tracking.models import Campaign, ConversionCap, PayoutTerm, TrackingLink
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"


def seed() -> dict:
    out = StringIO()
    call_command(
        "seed_demo", "--json", "--callback-url", "https://publisher.example/cb?s=[spid]", stdout=out
    )
    return json.loads(out.getvalue())


def test_the_demo_has_a_revshare_publisher_and_a_capped_offer_and_reseeds_cleanly():
    first = seed()
    seed()
    term = PayoutTerm.objects.get()
    assert (term.kind, term.percent, term.publisher.name) == (
        "revshare",
        Decimal(50),
        "Demo Publisher",
    )
    cap = ConversionCap.objects.get()
    assert (cap.campaign.name, cap.period, cap.max_conversions, cap.publisher) == (
        "Demo Capped Offer",
        "daily",
        5,
        None,
    )
    assert cap.campaign.cap_policy == Campaign.CapPolicy.ACCEPT_UNPAID
    assert "ref=demo-capped" in first["capped_tracking_link"]
    # The demo link pays half of the default revenue, whatever payout the advertiser sends.
    link = TrackingLink.objects.get(code="demo")
    click = click_stored(link=link, spid="s", user_agent=BROWSER)
    outcome = conversion_record(
        advertiser=link.campaign.advertiser, click_id=click.click_id, payout=Decimal("9")
    )
    assert (outcome.conversion.payout, outcome.conversion.currency) == (Decimal("1.5"), "USD")
