"""Conversion guards: minimum click-to-conversion time, bot clicks held for review, and the
named reasons staff see (and act on) in admin."""

from datetime import timedelta

import pytest

from postbacks.models import Postback
from tests.tracking.helpers import click_stored, isolate_tracking_state
from tracking.models import Click, Conversion
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture(autouse=True)
def isolated(settings):
    clean_up = isolate_tracking_state(settings)
    yield
    clean_up()


def visit(link, user_agent: str = BROWSER) -> Click:
    return click_stored(link=link, spid="s-1", ip="203.0.113.7", user_agent=user_agent)


def test_it_rejects_a_conversion_faster_than_the_campaigns_minimum(
    link, campaign, advertiser, template
):
    campaign.min_seconds_to_convert = 30
    campaign.save()
    click = visit(link)
    outcome = conversion_record(
        advertiser=advertiser,
        click_id=click.click_id,
        txn_id="fast",
        now=click.created_at + timedelta(seconds=4),
    )
    conversion = outcome.conversion
    assert (conversion.status, conversion.reason) == ("rejected", "too_fast")
    assert conversion.reason_detail == (
        "Converted 4 s after the click; the campaign requires at least 30 s."
    )
    # The publisher's template listens to approved conversions only: nothing is sent.
    assert not Postback.objects.exists()


def test_it_accepts_a_conversion_after_the_minimum(link, campaign, advertiser, template):
    campaign.min_seconds_to_convert = 30
    campaign.save()
    click = visit(link)
    outcome = conversion_record(
        advertiser=advertiser,
        click_id=click.click_id,
        txn_id="slow",
        now=click.created_at + timedelta(seconds=31),
    )
    assert (outcome.conversion.status, outcome.conversion.reason) == ("approved", "")
    assert Postback.objects.count() == 1


def test_it_keeps_a_guarded_conversion_rejected_when_sent_again(link, campaign, advertiser):
    campaign.min_seconds_to_convert = 30
    campaign.save()
    click = visit(link)
    first = conversion_record(
        advertiser=advertiser, click_id=click.click_id, txn_id="t", now=click.created_at
    )
    # The advertiser retries the same request later: a replay, not a 409 or an approval.
    again = conversion_record(
        advertiser=advertiser,
        click_id=click.click_id,
        txn_id="t",
        now=click.created_at + timedelta(minutes=5),
    )
    assert again.created is False
    assert again.conversion.pk == first.conversion.pk
    assert Conversion.objects.get().status == "rejected"


@pytest.mark.parametrize("user_agent", ["", "Mozilla/5.0 (compatible; Googlebot/2.1)"])
def test_it_holds_a_conversion_on_a_bot_click_for_review(link, advertiser, template, user_agent):
    click = visit(link, user_agent=user_agent)
    assert click.is_bot
    outcome = conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="b")
    assert (outcome.conversion.status, outcome.conversion.reason) == ("pending", "bot_click")
    assert not Postback.objects.exists()
    # Sending it again as approved doesn't release it ...
    again = conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="b")
    assert again.conversion.status == "pending"
    # ... but the advertiser may still reject it.
    rejected = conversion_record(
        advertiser=advertiser, click_id=click.click_id, txn_id="b", status="rejected"
    )
    assert rejected.conversion.status == "rejected"


def test_it_fires_callbacks_when_staff_approve_a_held_conversion(
    admin_client, link, advertiser, template
):
    held = conversion_record(
        advertiser=advertiser, click_id=visit(link, user_agent="").click_id, txn_id="h1"
    ).conversion
    fine = conversion_record(
        advertiser=advertiser, click_id=visit(link).click_id, txn_id="ok"
    ).conversion
    assert Postback.objects.filter(conversion=fine).count() == 1
    response = admin_client.post(
        "/admin/tracking/conversion/",
        {"action": "approve_held", "_selected_action": [held.pk, fine.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Approved 1 held conversion(s)." in response.content.decode()
    held.refresh_from_db()
    assert (held.status, held.reason) == ("approved", "bot_click")
    [postback] = Postback.objects.filter(conversion=held)
    assert postback.conversion_status == "approved"
    assert "id=s-1" in postback.url
    assert Postback.objects.filter(conversion=fine).count() == 1  # untouched


def test_it_lets_staff_reject_a_held_conversion(admin_client, link, advertiser, template):
    held = conversion_record(
        advertiser=advertiser, click_id=visit(link, user_agent="").click_id, txn_id="h2"
    ).conversion
    admin_client.post(
        "/admin/tracking/conversion/", {"action": "reject_held", "_selected_action": [held.pk]}
    )
    held.refresh_from_db()
    assert held.status == "rejected"
    assert not Postback.objects.exists()


def test_it_shows_each_reason_in_admin(admin_client, link, campaign, advertiser):
    campaign.min_seconds_to_convert = 60
    campaign.save()
    held = conversion_record(
        advertiser=advertiser,
        click_id=visit(link, user_agent="").click_id,
        txn_id="h3",
        now=None,
    ).conversion
    listing = admin_client.get("/admin/tracking/conversion/?reason=too_fast").content.decode()
    assert held.public_id in listing
    assert "Too fast" in listing
    detail = admin_client.get(f"/admin/tracking/conversion/{held.pk}/change/").content.decode()
    assert "the campaign requires at least 60 s" in detail
