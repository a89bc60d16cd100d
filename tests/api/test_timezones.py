"""Any IANA zone, cut exactly: Asia/Kolkata (+05:30) starts its days at 18:30 UTC, inside a
rollup hour, on every page, in the API and in the reconciliation file. The zone is the page's
own (`?tz=`), never carried over from another page."""

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from tracking.models import Click
from tracking.rollups import stats_rebuild
from tracking.selectors import ReportParams, hour_aligned, report
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db


@dataclass
class Boundary:
    before: date  # the Kolkata day of the click at 18:29 UTC
    after: date  # the Kolkata day of the click at 18:31 UTC


@pytest.fixture
def boundary(publisher, advertiser, campaign, link) -> Boundary:
    # Yesterday (UTC) at 18:29 and 18:31: 23:59 and 00:01 in Kolkata, both in one UTC hour.
    day = timezone.now().astimezone(UTC).date() - timedelta(days=1)
    for minute, spid in ((29, "spid-late"), (31, "spid-early")):
        moment = datetime.combine(day, time(18, minute), UTC)
        click = Click.objects.create(
            link=link, publisher=publisher, campaign=campaign, spid=spid, created_at=moment
        )
        conversion_record(
            advertiser=advertiser,
            click_id=click.click_id,
            payout=Decimal("1.00"),
            txn_id=spid,
            now=moment + timedelta(seconds=10),
        )
    now = timezone.now()
    stats_rebuild(publisher_id=publisher.pk, start=now - timedelta(days=3), end=now)
    return Boundary(before=day, after=day + timedelta(days=1))


def test_it_knows_which_zones_the_rollup_can_cut():
    assert hour_aligned(date(2026, 3, 1), date(2026, 4, 30), "America/New_York")
    assert not hour_aligned(date(2026, 1, 1), date(2026, 1, 1), "Asia/Kolkata")
    # +11:00 in its summer (January), +10:30 in its winter (June).
    assert hour_aligned(date(2026, 1, 1), date(2026, 1, 2), "Australia/Lord_Howe")
    assert not hour_aligned(date(2026, 6, 1), date(2026, 6, 2), "Australia/Lord_Howe")


def test_it_cuts_a_kolkata_day_at_local_midnight(publisher, boundary):
    params = ReportParams(start=boundary.before, end=boundary.after, tz="Asia/Kolkata")
    result = report(publisher, params)
    assert result.source == "raw"
    assert {row.key: (row.clicks, row.conversions) for row in result.rows} == {
        boundary.before: (1, 1),
        boundary.after: (1, 1),
    }
    # The same range in UTC puts both on one day, from the rollup.
    utc = report(publisher, ReportParams(start=boundary.before, end=boundary.after, tz="UTC"))
    assert utc.source == "rollup"
    assert {row.key: row.clicks for row in utc.rows} == {boundary.before: 2}


def test_the_stats_api_and_reconciliation_accept_kolkata(api, boundary):
    day = boundary.after.isoformat()
    body = api.get("/api/v1/stats", {"from": day, "to": day, "tz": "Asia/Kolkata"}).json()
    assert body["tz"] == "Asia/Kolkata"
    assert [(row["key"], row["clicks"], row["conversions"]) for row in body["rows"]] == [
        (day, 1, 1)
    ]
    recon = json.loads(
        api.get("/api/v1/reconciliation", {"date": day, "tz": "Asia/Kolkata"}).content
    )
    assert [row["spid"] for row in recon["rows"]] == ["spid-early"]


def test_reports_and_overview_pages_cut_kolkata_days(owner_client, boundary):
    query = f"start={boundary.after}&end={boundary.after}&tz=Asia/Kolkata"
    page = owner_client.get(reverse("reports") + "?" + query)
    assert page.status_code == 200
    assert page.context["report"].totals.clicks == 1
    assert "in Asia/Kolkata" in page.content.decode()
    overview = owner_client.get(reverse("dashboard") + "?period=30d&tz=Asia/Kolkata")
    assert overview.status_code == 200
    bars = [bar["title"] for bar in overview.context["chart"]["bars"]]
    assert f"{boundary.before:%b %d}: 1 clicks, 1 conversions" in bars
    assert f"{boundary.after:%b %d}: 1 clicks, 1 conversions" in bars
    assert "(Asia/Kolkata)" in overview.content.decode()


def test_a_zone_chosen_on_one_page_does_not_carry_over(owner_client, boundary):
    owner_client.get(reverse("reports") + "?tz=Asia/Kolkata")
    assert owner_client.get(reverse("dashboard")).context["tz"] == "UTC"
    assert owner_client.get(reverse("conversions")).context["tz"] == "UTC"
