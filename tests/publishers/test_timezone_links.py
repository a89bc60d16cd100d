"""A time zone chosen on one page stays while the publisher moves between pages: every link
to another dashboard page, every form that reads days and every redirect after an action
carries `?tz=`; an unknown zone is never carried (each page checks it)."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse

from publishers.models import AuditEvent
from publishers.views.common import today_in

pytestmark = pytest.mark.django_db

PAGES = [
    "dashboard",
    "reports",
    "conversions",
    "trace",
    "callbacks",
    "deliveries",
    "links",
    "offers",
    "api_keys",
    "settings",
    "activity",
]
NAV = re.compile(r'<nav class="side".*?</nav>', re.S)


def _nav_links(html: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', NAV.search(html).group(0))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_carries_the_zone_to_every_other(owner_client, dashboard_data, page):
    html = owner_client.get(reverse(page) + "?tz=Asia/Kolkata").content.decode()
    links = _nav_links(html)
    assert len(links) == len(PAGES)
    assert all(link.endswith("?tz=Asia%2FKolkata") for link in links), links


def test_utc_and_unknown_zones_add_nothing(owner_client, dashboard_data):
    for query in ("", "?tz=UTC", "?tz=Mars/Olympus"):
        html = owner_client.get(reverse("callbacks") + query).content.decode()
        assert not any("tz=" in link for link in _nav_links(html)), query


def test_links_inside_pages_keep_the_zone(owner_client, dashboard_data):
    conversions = owner_client.get(reverse("conversions") + "?tz=Asia/Kolkata")
    assert conversions.context["tz"] == "Asia/Kolkata"
    html = conversions.content.decode()
    assert '<option value="Asia/Kolkata" selected>' in html
    assert "&amp;tz=Asia/Kolkata" in html  # each row's Trace link
    deliveries = owner_client.get(reverse("deliveries") + "?tz=Asia/Kolkata").content.decode()
    assert "?state=pending&amp;tz=Asia%2FKolkata" in deliveries
    assert reverse("deliveries_retry") + "?tz=Asia%2FKolkata" in deliveries
    trace = owner_client.get(reverse("trace") + "?tz=Asia/Kolkata").content.decode()
    assert '<input type="hidden" name="tz" value="Asia/Kolkata">' in trace


def test_a_report_day_leads_to_its_conversions_in_the_same_zone(owner_client, dashboard_data):
    today = today_in("Asia/Kolkata")
    start = today - timedelta(days=2)
    html = owner_client.get(
        reverse("reports") + f"?group_by=day&start={start}&end={today}&tz=Asia/Kolkata"
    ).content.decode()
    assert f"?start={today}&amp;end={today}&amp;tz=Asia/Kolkata" in html
    assert f"?start={start}&amp;end={today}&amp;tz=Asia/Kolkata&amp;group_by=day" in html


def test_a_range_replay_reads_days_in_the_zone_and_comes_back_to_it(member_client, dashboard_data):
    today = today_in("Asia/Kolkata")
    response = member_client.post(
        reverse("deliveries_retry") + "?tz=Asia/Kolkata",
        {"scope": "range", "start": today, "end": today, "states": ["failing"], "state": "failing"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("deliveries") + "?state=failing&tz=Asia%2FKolkata"
    # The replay read its days in the page's zone (the activity log keeps what was asked).
    event = AuditEvent.objects.filter(publisher=dashboard_data.publisher).latest("created_at")
    assert event.details["tz"] == "Asia/Kolkata"
