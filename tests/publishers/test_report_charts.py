"""Reports draw a chart of the chosen range and grouping, from the table's own numbers: per day
(every day a bar, zeros included) or the groups with most clicks; an SVG drawn on the server,
with nothing loaded from another site."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse

from publishers.views import charts
from publishers.views.common import today_in

pytestmark = pytest.mark.django_db


def test_a_day_report_charts_every_day_of_the_range(owner_client, dashboard_data):
    today = today_in("Asia/Kolkata")
    start = today - timedelta(days=4)
    response = owner_client.get(
        reverse("reports") + f"?group_by=day&start={start}&end={today}&tz=Asia/Kolkata"
    )
    chart = response.context["chart"]
    assert len(chart["bars"]) == 5 and response.context["ranking"] is None
    report = response.context["report"]
    drawn = [bar["title"] for bar in chart["bars"]]
    assert drawn[0] == f"{start:%b %d}: 0 clicks, 0 conversions"
    assert chart["max_clicks"] == max(r.clicks for r in report.rows)
    content = response.content.decode()
    assert 'id="report-chart"' in content and "Asia/Kolkata" in content


def test_a_grouped_report_charts_the_groups_with_most_clicks(
    owner_client, dashboard_data, monkeypatch
):
    wide = f"start={today_in('UTC') - timedelta(days=30)}&end={today_in('UTC')}"
    response = owner_client.get(reverse("reports") + f"?group_by=country&{wide}")
    ranking = response.context["ranking"]
    assert [(b["label"], b["clicks"], b["conversions"]) for b in ranking["bars"]] == [
        ("DE", 2, 1),
        ("FR", 1, 1),
        ("US", 1, 0),
    ]
    assert "3 of 3 country groups with most clicks" in response.content.decode()
    monkeypatch.setattr(charts, "RANKED_ROWS", 2)
    fewer = owner_client.get(reverse("reports") + f"?group_by=country&{wide}")
    assert (fewer.context["ranking"]["shown"], fewer.context["ranking"]["of"]) == (2, 3)


def test_the_charts_load_nothing_from_another_site(owner_client, dashboard_data):
    for query in ("?group_by=day", "?group_by=placement"):
        html = owner_client.get(reverse("reports") + query).content.decode()
        assert "<svg" in html
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not url.startswith(("http:", "https:", "//")), url
