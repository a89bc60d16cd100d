"""Money is never added across currencies: a publisher paid in USD and EUR sees one amount per
currency on Overview, Reports, the report CSV, `/api/v1/stats` and the reconciliation file."""

import csv
import io
import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.api.conftest import browser_click, record_conversion
from tracking.rollups import stats_rebuild

pytestmark = pytest.mark.django_db

# USD 2.50 + 3.00 and EUR 4.00: a total across currencies would read 9.50, 6.50 or 7.00.
MIXED = ("9.50", "6.50", "7.00")


@dataclass
class Money:
    day: str


@pytest.fixture
def money(publisher, advertiser, link) -> Money:
    now = timezone.now()
    for spid, placement, payout, currency in (
        ("spid-usd-1", "footer", "2.50", "USD"),
        ("spid-usd-2", "sidebar", "3.00", "USD"),
        ("spid-eur-1", "footer", "4.00", "EUR"),
    ):
        click = browser_click(link, spid, placement=placement, cdn_country="DE")
        record_conversion(advertiser, click, payout=Decimal(payout), currency=currency, txn_id=spid)
    browser_click(link, "spid-idle", placement="sidebar")
    stats_rebuild(
        publisher_id=publisher.pk, start=now - timedelta(hours=2), end=now + timedelta(hours=1)
    )
    return Money(day=timezone.now().date().isoformat())


EXPECTED = [{"currency": "EUR", "amount": "4.00"}, {"currency": "USD", "amount": "5.50"}]


@pytest.mark.parametrize(
    "query",
    [
        {"group_by": "day"},
        {"group_by": "placement"},
        {"group_by": "campaign"},
        # Two dimensions: the pair rollup and raw clicks.
        {"group_by": "placement", "country": "DE"},
        {"group_by": "day", "country": "DE", "placement": "footer"},
    ],
)
def test_it_reports_stats_per_currency(api, money, query):
    body = api.get("/api/v1/stats", {"from": money.day, "to": money.day, **query}).json()
    assert body["currencies"] == ["EUR", "USD"] or query.get("placement") == "footer"
    if query.get("placement") == "footer":
        assert body["totals"]["payouts"] == [
            {"currency": "EUR", "amount": "4.00"},
            {"currency": "USD", "amount": "2.50"},
        ]
    else:
        assert body["totals"]["payouts"] == EXPECTED
    assert body["totals"]["conversions"] == 3 - (query.get("placement") == "footer")
    assert not any(value in json.dumps(body) for value in MIXED)


def test_it_splits_each_row_by_currency(api, money):
    body = api.get(
        "/api/v1/stats", {"from": money.day, "to": money.day, "group_by": "placement"}
    ).json()
    rows = {row["key"]: row["payouts"] for row in body["rows"]}
    assert rows == {
        "footer": [{"currency": "EUR", "amount": "4.00"}, {"currency": "USD", "amount": "2.50"}],
        "sidebar": [{"currency": "USD", "amount": "3.00"}],
    }


def test_it_shows_one_payout_column_per_currency_on_reports_and_the_csv(owner_client, money):
    url = reverse("reports") + f"?start={money.day}&end={money.day}&group_by=placement&tz=UTC"
    page = owner_client.get(url)
    assert page.status_code == 200
    content = page.content.decode()
    assert "Payout EUR" in content and "Payout USD" in content
    assert page.context["totals"][-2:] == ["4.00", "5.50"]
    assert not any(f">{value}<" in content for value in MIXED)
    rows = list(csv.reader(io.StringIO(owner_client.get(url + "&format=csv").content.decode())))
    assert rows[0][-2:] == ["Payout EUR", "Payout USD"]
    assert rows[-1][0] == "Total" and rows[-1][-2:] == ["4.00", "5.50"]
    body = {row[0]: row[-2:] for row in rows[1:-1]}
    assert body == {
        "footer": ["4.00", "2.50"],
        "sidebar": ["0.00", "3.00"],
    }
    assert not any(value in cell for row in rows for cell in row for value in MIXED)
    # Sorting by payout orders by the first currency, then the next; never by a sum.
    by_payout = owner_client.get(url + "&sort=payout&dir=desc").context["report"]
    assert [row.label for row in by_payout.rows] == ["footer", "sidebar"]


def test_it_shows_one_payout_kpi_per_currency_on_overview(owner_client, money):
    page = owner_client.get(reverse("dashboard") + "?period=today&tz=UTC")
    metrics = {m["key"]: m["value"] for m in page.context["metrics"]}
    assert metrics["payout_EUR"] == Decimal("4.00")
    assert metrics["payout_USD"] == Decimal("5.50")
    assert "payout" not in metrics
    content = page.content.decode()
    assert "Payout EUR" in content and "Payout USD" in content
    assert not any(f">{value}<" in content for value in MIXED)


def test_it_gives_each_reconciliation_row_its_currency(api, money):
    body = json.loads(api.get("/api/v1/reconciliation", {"date": money.day}).content)
    assert sorted((row["payout"], row["currency"]) for row in body["rows"]) == [
        ("2.50", "USD"),
        ("3.00", "USD"),
        ("4.00", "EUR"),
    ]
    assert "total" not in json.dumps(body)
