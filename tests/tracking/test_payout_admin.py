"""Staff manage payout terms and caps in the campaign's admin page: terms are added, never
edited; caps carry their period and limits and show what they used."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.publishers.test_audit import change_form
from tests.tracking.helpers import click_stored
from tracking.models import CapCounter, ConversionCap, PayoutTerm
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    client.force_login(staff)
    return client


def page_of(campaign) -> str:
    return f"/admin/tracking/campaign/{campaign.pk}/change/"


def add_row(form: dict, prefix: str, values: dict) -> None:
    index = int(form[f"{prefix}-TOTAL_FORMS"])
    for name, value in values.items():
        form[f"{prefix}-{index}-{name}"] = value
    form[f"{prefix}-TOTAL_FORMS"] = str(index + 1)


def test_staff_add_a_revshare_term_a_cap_a_time_zone_and_a_policy(
    admin_client, campaign, publisher
):
    page = page_of(campaign)
    form = change_form(admin_client.get(page).content.decode())
    form.update(time_zone="Europe/Berlin", cap_policy="accept_unpaid")
    start = timezone.now()
    add_row(
        form,
        "payout_terms",
        {
            "publisher": str(publisher.pk),
            "kind": "revshare",
            "percent": "40",
            "effective_from_0": start.strftime("%Y-%m-%d"),
            "effective_from_1": start.strftime("%H:%M:%S"),
        },
    )
    add_row(form, "caps", {"publisher": "", "period": "daily", "max_conversions": "100"})
    response = admin_client.post(page, form)
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    campaign.refresh_from_db()
    assert (campaign.time_zone, campaign.cap_policy) == ("Europe/Berlin", "accept_unpaid")
    term = PayoutTerm.objects.get()
    assert (term.publisher, term.kind, term.percent, term.amount) == (
        publisher,
        "revshare",
        Decimal(40),
        None,
    )
    cap = ConversionCap.objects.get()
    assert (cap.publisher, cap.period, cap.max_conversions) == (None, "daily", 100)


def test_existing_terms_are_read_only_and_a_backdated_term_is_refused(
    admin_client, advertiser, campaign, publisher, link
):
    PayoutTerm.objects.create(
        campaign=campaign,
        publisher=publisher,
        kind="fixed",
        amount=Decimal(1),
        effective_from=timezone.now() - timedelta(days=2),
    )
    click = click_stored(link=link, spid="s", user_agent="Mozilla/5.0 Chrome/126.0")
    conversion_record(advertiser=advertiser, click_id=click.click_id)
    page = page_of(campaign)
    html = admin_client.get(page).content.decode()
    assert 'name="payout_terms-0-amount"' not in html  # shown, not editable
    assert "Fixed amount per conversion" in html
    form = change_form(html)
    yesterday = timezone.now() - timedelta(days=1)
    add_row(
        form,
        "payout_terms",
        {
            "publisher": str(publisher.pk),
            "kind": "fixed",
            "amount": "5",
            "effective_from_0": yesterday.strftime("%Y-%m-%d"),
            "effective_from_1": yesterday.strftime("%H:%M:%S"),
        },
    )
    response = admin_client.post(page, form)
    assert response.status_code == 200
    assert "a new term can only start after the latest of them" in response.content.decode()
    assert PayoutTerm.objects.count() == 1


def test_a_cap_without_a_limit_or_a_bad_time_zone_is_a_form_error(admin_client, campaign):
    page = page_of(campaign)
    form = change_form(admin_client.get(page).content.decode())
    form["time_zone"] = "Mars/Olympus"
    add_row(form, "caps", {"publisher": "", "period": "total"})
    response = admin_client.post(page, form)
    assert response.status_code == 200
    body = response.content.decode()
    assert "is not an IANA time zone" in body
    assert not ConversionCap.objects.exists()


def test_the_cap_inline_shows_what_the_period_used(admin_client, advertiser, campaign, link):
    ConversionCap.objects.create(campaign=campaign, period="monthly", max_conversions=10)
    click = click_stored(link=link, spid="s", user_agent="Mozilla/5.0 Chrome/126.0")
    conversion_record(advertiser=advertiser, click_id=click.click_id)
    assert CapCounter.objects.get().conversions == 1
    html = admin_client.get(page_of(campaign)).content.decode()
    assert "1 conversions, 2.50 EUR since" in html
    assert admin_client.get("/admin/tracking/capcounter/").status_code == 200
