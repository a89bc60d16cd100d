"""Fresh and honest numbers: today's KPIs count a conversion as soon as it commits (rollup
plus the raw tail), the postback success rate counts every postback, settled or not, and each
callback shows its health instead of a green "active" while it fails."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from postbacks.models import Postback
from publishers.models import CallbackTemplate
from tests.api.conftest import browser_click, client_for
from tracking.models import HourlyStat
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db


def test_todays_kpis_count_a_conversion_before_any_rollup(
    owner_client, publisher, publisher_key, advertiser, link
):
    click = browser_click(link, "spid-fresh")
    conversion_record(advertiser=advertiser, click_id=click.click_id, payout=Decimal("1.25"))
    # Nothing rolled up yet: beat has not run.
    assert not HourlyStat.objects.filter(publisher=publisher).exists()
    page = owner_client.get(reverse("dashboard") + "?period=today")
    metrics = {m["key"]: m["value"] for m in page.context["metrics"]}
    assert (metrics["clicks"], metrics["conversions"]) == (1, 1)
    assert metrics["payout_EUR"] == Decimal("1.25")
    # The API says the same.
    today = timezone.now().date().isoformat()
    body = client_for(publisher_key).get("/api/v1/stats", {"from": today, "to": today}).json()
    assert (body["totals"]["clicks"], body["totals"]["conversions"]) == (1, 1)


def test_the_success_rate_counts_retrying_postbacks(owner_client, dashboard_data):
    page = owner_client.get(reverse("dashboard") + "?period=7d")
    current = page.context["current"]
    # Two conversions × two callbacks: the good one delivered, the bad one answered 500 and
    # is retrying. Half delivered, not "100 %" of the settled ones.
    assert (current.postbacks_succeeded, current.postbacks_retrying) == (2, 2)
    metrics = {m["key"]: m["value"] for m in page.context["metrics"]}
    assert metrics["postback_success_rate"] == 50.0
    content = page.content.decode()
    assert "<strong>2 retrying</strong>" in content
    Postback.objects.filter(template=dashboard_data.bad_template).update(
        status=Postback.Status.FAILED
    )
    page = owner_client.get(reverse("dashboard") + "?period=7d")
    assert "<strong>2 failed</strong>" in page.content.decode()
    assert {m["key"]: m["value"] for m in page.context["metrics"]}["postback_success_rate"] == 50.0


def test_each_callback_shows_its_health(owner_client, dashboard_data, publisher, receiver):
    idle = CallbackTemplate.objects.create(
        publisher=publisher,
        url_template=f"{receiver.base_url}/idle?id=[spid]",
        is_active=False,
        paused_at=timezone.now(),
        paused_reason=CallbackTemplate.PausedReason.MANUAL,
    )
    held = CallbackTemplate.objects.create(
        publisher=publisher,
        url_template=f"{receiver.base_url}/held?id=[spid]",
        is_active=False,
        paused_at=timezone.now() - timedelta(minutes=5),
        paused_reason=CallbackTemplate.PausedReason.FAILING,
    )
    Postback.objects.filter(pk=dashboard_data.postbacks[0].pk).update(template=held)
    page = owner_client.get(reverse("callbacks"))
    states = {t.pk: health for t, health in page.context["rows"]}
    assert states[dashboard_data.good_template.pk].state == "healthy"
    bad = states[dashboard_data.bad_template.pk]
    assert (bad.state, bad.retrying) == ("failing", 2)
    assert states[idle.pk].state == "paused"
    assert states[held.pk].state == "held"
    content = page.content.decode()
    assert ">active<" not in content
    assert "failing · 2 retrying" in content and "healthy" in content
    # The held callback's waiting postbacks are counted (the one moved to it was delivered).
    Postback.objects.filter(template=held).update(status=Postback.Status.PENDING)
    page = owner_client.get(reverse("callbacks"))
    assert "held (1)" in page.content.decode()


def test_it_checks_ownership_of_callback_health(outsider_client, dashboard_data):
    page = outsider_client.get(reverse("callbacks"))
    assert page.context["rows"] == []
