"""The Conversions page as a reconciler uses it: transaction ids, partial searches, groups with
zero days, the refused conversions (expired), and a streaming CSV of exactly the filtered rows,
never another publisher's."""

import csv
import io
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from publishers.views.common import today_in
from tracking.models import Click, ConversionRefusal
from tracking.selectors import logs
from tracking.services import IntakeError, conversion_record

pytestmark = pytest.mark.django_db


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def c_client(other_publisher):
    """The owner of publisher C, in a browser of their own (beside A's owner_client)."""
    client = Client()
    client.force_login(get_user_model().objects.get(username="owner-c"))
    return client


def _page(client, **query):
    return client.get(reverse("conversions") + "?" + urlencode(query))


@pytest.fixture
def expired(dashboard_data, advertiser, campaign):
    """An expired conversion for A (sent twice) and one for C."""
    old = timezone.now() - campaign.attribution_window - timedelta(days=1)
    refused = {}
    for publisher, link, spid in (
        (dashboard_data.publisher, dashboard_data.link, "spid-a-late"),
        (dashboard_data.other, dashboard_data.other.links.get(), "spid-c-late"),
    ):
        click = Click.objects.create(
            link=link, publisher=publisher, campaign=campaign, spid=spid, created_at=old
        )
        for _ in range(2 if spid == "spid-a-late" else 1):
            with pytest.raises(IntakeError) as caught:
                conversion_record(
                    advertiser=advertiser,
                    click_id=click.click_id,
                    txn_id=f"late-{spid}",
                    payout=Decimal("9.99"),
                )
            assert caught.value.status == 422
        refused[spid] = click
    return refused


def test_it_shows_and_searches_transaction_ids(owner_client, dashboard_data):
    conversion = dashboard_data.conversions[0]
    page = _page(owner_client)
    assert conversion.txn_id in page.content.decode()
    # A part of the transaction id finds it, and only it.
    found = _page(owner_client, txn_id=conversion.txn_id[2:])
    assert [c.public_id for c in found.context["rows"]] == [conversion.public_id]


def test_it_finds_a_spid_by_its_start_or_a_part(owner_client, dashboard_data):
    def spids(**query) -> list[str]:
        return sorted(c.click.spid for c in _page(owner_client, **query).context["rows"])

    # Exact by default: a part of a spid finds nothing.
    assert spids(spid="spid-a") == []
    assert spids(spid="spid-a", spid_match="prefix") == ["spid-a-alpha", "spid-a-beta"]
    assert spids(spid="beta", spid_match="contains") == ["spid-a-beta"]
    # C's spid has the same shape: never in A's results.
    assert spids(spid="spid-", spid_match="prefix") == ["spid-a-alpha", "spid-a-beta"]


def test_it_groups_by_day_with_zero_days_in_the_chosen_zone(owner_client, dashboard_data):
    today = today_in("Asia/Kolkata")
    start = today - timedelta(days=4)
    response = _page(
        owner_client, group_by="day", start=start, end=today, tz="Asia/Kolkata", status=""
    )
    groups = response.context["groups"]
    assert [r.key for r in groups.rows] == [start + timedelta(days=n) for n in range(5)]
    assert sum(r.statuses["approved"] for r in groups.rows) == 2
    assert [r.total for r in groups.rows[:3]] == [0, 0, 0]  # days without traffic are rows
    assert groups.currencies == ["EUR"]
    content = response.content.decode()
    assert "Day (Asia/Kolkata)" in content and "Approved payout EUR" in content


def test_it_groups_by_hour_campaign_country_device_and_spid(owner_client, dashboard_data):
    today = timezone.now().date()
    hours = _page(owner_client, group_by="hour", start=today, end=today).context["groups"]
    assert len(hours.rows) == 24 and sum(r.total for r in hours.rows) == 2
    expected = {
        "campaign": {"Campaign": 2},
        "country": {"DE": 1, "FR": 1},
        "device": {"mobile": 2},
        "spid": {"spid-a-alpha": 1, "spid-a-beta": 1},
    }
    for group_by, totals in expected.items():
        rows = _page(owner_client, group_by=group_by).context["groups"].rows
        assert {r.label: r.total for r in rows} == totals, group_by
        assert sum(sum(r.payouts.values(), Decimal(0)) for r in rows) == Decimal("6.5")


def test_grouping_by_hour_is_bounded(owner_client, dashboard_data):
    today = timezone.now().date()
    response = _page(owner_client, group_by="hour", start=today - timedelta(days=40), end=today)
    assert response.status_code == 200
    assert "at most 31 days" in response.content.decode()
    # The export refuses instead of sending something else than what was asked.
    assert (
        _page(
            owner_client, group_by="hour", start=today - timedelta(days=40), end=today, format="csv"
        ).status_code
        == 400
    )


def test_the_csv_streams_every_filtered_conversion_of_the_publisher(
    owner_client, c_client, dashboard_data
):
    rows = _csv(_page(owner_client, format="csv", tz="Asia/Kolkata"))
    assert rows[0][:6] == ["time", "conversion_id", "click_id", "spid", "txn_id", "event"]
    assert {r[1] for r in rows[1:]} == {c.public_id for c in dashboard_data.conversions}
    assert all(r[0].endswith("+05:30") for r in rows[1:])
    assert {r[9] for r in rows[1:]} == {"2.50", "4.00"}
    # The same filters as the page.
    narrowed = _csv(_page(owner_client, format="csv", spid="spid-a-beta"))
    assert [r[3] for r in narrowed[1:]] == ["spid-a-beta"]
    # C's export holds C's conversion only.
    theirs = _csv(_page(c_client, format="csv"))
    assert len(theirs) == 2
    assert not set(dashboard_data.a_ids()) & {cell for row in theirs for cell in row}


def test_the_grouped_csv_is_the_grouped_table(owner_client, dashboard_data):
    today = timezone.now().date()
    query = {"group_by": "day", "start": today - timedelta(days=2), "end": today}
    rows = _csv(_page(owner_client, format="csv", **query))
    assert rows[0] == [
        "Day (UTC)",
        "approved",
        "pending",
        "rejected",
        "reversed",
        "total",
        "payout_EUR",
    ]
    assert [r[0] for r in rows[1:]] == [str(today - timedelta(days=n)) for n in (2, 1, 0)]
    assert rows[1][1:6] == ["0", "0", "0", "0", "0"]


def test_a_csv_cell_never_runs_as_a_formula(owner_client, dashboard_data, advertiser):
    click = dashboard_data.clicks[3]
    conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="=HYPERLINK(1)")
    rows = _csv(_page(owner_client, format="csv", txn_id="HYPERLINK"))
    assert rows[1][4] == "'=HYPERLINK(1)"


def test_expired_conversions_are_listed_as_refused(owner_client, c_client, dashboard_data, expired):
    refusal = ConversionRefusal.objects.get(spid="spid-a-late")
    assert refusal.attempts == 2 and refusal.reason == "expired"
    page = _page(owner_client, view="refused")
    assert [r.pk for r in page.context["refusals"]] == [refusal.pk]
    content = page.content.decode()
    assert "spid-a-late" in content and "late-spid-a-late" in content
    assert "spid-c-late" not in content
    # Overview counts them with the other outcomes, and says what they are.
    overview = owner_client.get(reverse("dashboard"))
    outcomes = {(o.status, o.reason): o.count for o in overview.context["outcomes"]}
    assert outcomes[("refused", "expired")] == 1
    assert "?view=refused" in overview.content.decode()
    # The CSV of refusals, C's own only for C.
    rows = _csv(_page(owner_client, view="refused", format="csv"))
    assert [(r[2], r[5], r[9]) for r in rows[1:]] == [("2", "spid-a-late", "expired")]
    theirs = _csv(_page(c_client, view="refused", format="csv"))
    assert [r[5] for r in theirs[1:]] == ["spid-c-late"]
    # A spid search narrows the refusals too.
    assert list(_page(owner_client, view="refused", spid="nope").context["refusals"]) == []


def test_the_stats_api_counts_expired_conversions(publisher_key, expired, client):
    today = timezone.now().date().isoformat()
    body = client.get(
        "/api/v1/stats",
        {"from": today, "to": today},
        HTTP_AUTHORIZATION=f"Bearer {publisher_key}",
    ).json()
    refused = [o for o in body["conversion_outcomes"] if o["status"] == "refused"]
    assert [(o["reason"], o["count"]) for o in refused] == [("expired", 1)]
    assert refused[0]["label"].startswith("Expired")


@pytest.mark.parametrize(
    "query",
    [
        {"start": "not-a-day"},
        {"spid_match": "regex"},
        {"group_by": "everything"},
        {"tz": "Mars/Olympus"},
        {"view": "sideways"},
        {"after": "%%%"},
        {"start": "2026-05-02", "end": "2026-05-01"},
    ],
)
def test_bad_filters_get_a_form_error_never_a_500(owner_client, dashboard_data, query):
    assert _page(owner_client, **query).status_code == 200
    assert _page(owner_client, format="csv", **query).status_code in (200, 400)


def test_time_groups_without_dates_cover_the_last_days(owner_client, dashboard_data):
    today = timezone.now().date()
    days = _page(owner_client, group_by="day").context["groups"].rows
    assert [r.key for r in days] == [today - timedelta(days=n) for n in range(29, -1, -1)]
    hours = _page(owner_client, group_by="hour").context["groups"].rows
    assert len(hours) == 24 and hours[0].key.date() == today


def test_other_groups_list_those_with_most_conversions_and_say_so(
    owner_client, dashboard_data, monkeypatch
):
    monkeypatch.setattr(logs, "GROUPS_MAX_ROWS", 1)
    response = _page(owner_client, group_by="spid")
    groups = response.context["groups"]
    assert groups.truncated and len(groups.rows) == 1
    assert "Only the 1 groups with most conversions are shown" in response.content.decode()
