"""Nothing hidden: gross, unique and bot clicks, refused clicks by reason and conversions by
status and reason, on Overview, Reports (and its CSV) and `/api/v1/stats`, each with a one-line
definition."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from tests.api.conftest import browser_click
from tests.tracking.helpers import click_stored
from tracking.models import ClickRejection, Conversion
from tracking.rollups import stats_pairs_build, stats_rebuild
from tracking.selectors import DEFINITIONS
from tracking.services import click_rejection_count, conversion_record

pytestmark = pytest.mark.django_db

BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture
def traffic(publisher, advertiser, link) -> str:
    human = browser_click(link, "spid-human", placement="footer")
    browser_click(link, "spid-human", placement="footer")  # a repeat: not unique
    bot = click_stored(link=link, spid="spid-bot", placement="footer", user_agent=BOT)
    assert bot.is_bot
    conversion_record(advertiser=advertiser, click_id=human.click_id, payout=Decimal("2"))
    held = conversion_record(advertiser=advertiser, click_id=bot.click_id).conversion
    assert (held.status, held.reason) == (Conversion.Status.PENDING, Conversion.Reason.BOT_CLICK)
    for _ in range(2):
        click_rejection_count(publisher_id=publisher.pk, reason=ClickRejection.Reason.SPID_TOO_LONG)
    click_rejection_count(publisher_id=publisher.pk, reason=ClickRejection.Reason.BAD_SIGNATURE)
    now = timezone.now()
    stats_rebuild(publisher_id=publisher.pk, start=now - timedelta(hours=3), end=now)
    return now.date().isoformat()


def test_the_stats_api_shows_bots_refusals_and_outcomes(api, traffic):
    body = api.get("/api/v1/stats", {"from": traffic, "to": traffic}).json()
    totals = body["totals"]
    assert (totals["clicks"], totals["unique_clicks"], totals["bot_clicks"]) == (3, 2, 1)
    assert totals["conversions"] == 1
    assert body["refused_clicks"] == [
        {"reason": "spid_too_long", "label": "Spid longer than 255 characters", "clicks": 2},
        {
            "reason": "bad_signature",
            "label": "Smart-ad link altered (bad signature)",
            "clicks": 1,
        },
    ]
    assert {(o["status"], o["reason"], o["count"]) for o in body["conversion_outcomes"]} == {
        ("approved", "", 1),
        ("pending", "bot_click", 1),
    }


@pytest.mark.parametrize(
    "query",
    [{"group_by": "placement"}, {"group_by": "placement", "campaign": None}, {"group_by": "day"}],
)
def test_bot_clicks_agree_on_every_report_path(api, traffic, publisher, campaign, query):
    if "campaign" in query:
        query = {**query, "campaign": campaign.public_id}
    # Two dimensions: the pair rollup for the built day, raw clicks after it.
    stats_pairs_build(
        publisher_id=publisher.pk,
        first=timezone.now().date(),
        last=timezone.now().date(),
        until=timezone.now(),
    )
    for extra in ({}, {"placement": "footer"} if query["group_by"] != "placement" else {}):
        body = api.get("/api/v1/stats", {"from": traffic, "to": traffic, **query, **extra}).json()
        assert body["totals"]["bot_clicks"] == 1
    paired = api.get(
        "/api/v1/stats",
        {"from": traffic, "to": traffic, "group_by": "country", "placement": "footer"},
    ).json()
    assert paired["source"] == "pairs" and paired["totals"]["bot_clicks"] == 1


def test_overview_shows_bots_refusals_and_outcomes_with_definitions(owner_client, traffic):
    page = owner_client.get(reverse("dashboard") + "?period=today")
    metrics = {m["key"]: m for m in page.context["metrics"]}
    assert metrics["bot_clicks"]["value"] == 1 and metrics["clicks"]["value"] == 3
    content = page.content.decode()
    for key in ("clicks", "unique_clicks", "bot_clicks", "conversion_outcomes"):
        assert escape(DEFINITIONS[key]) in content
    assert "Refused: Spid longer than 255 characters" in content
    assert 'data-status="pending" data-reason="bot_click"' in content
    assert "Bot click: held as pending for review" in content


def test_reports_and_the_csv_show_bot_clicks(owner_client, traffic):
    url = reverse("reports") + f"?start={traffic}&end={traffic}&group_by=placement&tz=UTC"
    page = owner_client.get(url)
    assert escape(DEFINITIONS["bot_clicks"]) in page.content.decode()
    rows = list(csv.reader(io.StringIO(owner_client.get(url + "&format=csv").content.decode())))
    column = rows[0].index("Bot clicks")
    assert {row[0]: row[column] for row in rows[1:]} == {"footer": "1", "Total": "1"}


def test_links_still_shows_refusals(owner_client, traffic):
    content = owner_client.get(reverse("links")).content.decode()
    assert "Refused: Smart-ad link altered (bad signature)" in content


def test_the_conversion_api_says_why_a_guard_changed_a_status(api, traffic, settings):
    settings.API_CONVERSIONS_SETTLE_SECONDS = 0  # list the conversions just recorded
    rows = api.get("/api/v1/conversions").json()["results"]
    assert sorted((row["spid"], row["status"], row["reason"]) for row in rows) == [
        ("spid-bot", "pending", "bot_click"),
        ("spid-human", "approved", ""),
    ]
