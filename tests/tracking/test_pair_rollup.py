"""Two-dimension reports: the daily pair rollup plus raw edges, and conversions read through
their copies of the click's dimensions, give exactly what raw clicks and joins give."""

import importlib
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from tracking import selectors
from tracking.models import Click, Conversion, Creative, DailyPairStat, PairStatDay
from tracking.rollups import (
    pair_dimension,
    stats_pairs_build,
    stats_pairs_extend,
    stats_refresh,
)
from tracking.selectors import ReportParams, report
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

COUNTRIES = ["US", "DE", "FR"]
PLACEMENTS = ["sidebar", "footer"]
KEYWORDS = ["", "vpn", "flights"]


@pytest.fixture
def traffic(publisher, link, campaign, advertiser, creative):
    """Clicks every 5 hours over 6 days (and a few minutes ago), a third of them converted
    (some of those hours later, one rejected), with values cycling through every dimension."""
    other = Creative.objects.create(campaign=campaign, name="Other")
    now = timezone.now()
    clicks = []
    for n in range(30):
        clicks.append(
            Click.objects.create(
                link=link,
                publisher=publisher,
                campaign=campaign,
                spid=f"s{n}",
                country=COUNTRIES[n % 3],
                placement=PLACEMENTS[n % 2],
                keyword=KEYWORDS[n % 3],
                smart_ad_id="1491" if n % 3 else "",
                creative=[creative, other, None][n % 3],
                is_unique=n % 4 != 0,
                created_at=now - timedelta(hours=5 * n, minutes=3),
            )
        )
    for n, click in enumerate(clicks):
        if n % 3 == 0:
            conversion_record(
                advertiser=advertiser,
                click_id=click.click_id,
                payout=Decimal(n + 1),
                status="rejected" if n == 9 else "approved",
                now=min(click.created_at + timedelta(hours=n % 7), now),
            )
    return clicks


def oracle(publisher, params: ReportParams) -> dict:
    """The report computed in Python from the clicks and, through the join, their
    conversions: what every path must agree with."""
    filters = selectors.reports._filter_ids(publisher, params.filters)
    start, end = params.utc_range()
    zone = ZoneInfo(params.tz)

    def key_of(click: Click, moment: datetime):
        if params.group_by == "day":
            return moment.astimezone(zone).date().isoformat()
        if params.group_by == "campaign":
            return click.campaign.public_id
        if params.group_by == "creative":
            return click.creative.public_id if click.creative else ""
        return getattr(click, selectors.REPORT_FILTERS[params.group_by]) or "(none)"

    def matches(click: Click) -> bool:
        return all(
            getattr(click, selectors.REPORT_FILTERS[name]) == value
            for name, value in filters.items()
        )

    rows: dict = defaultdict(lambda: [0, 0, 0, {}])
    for click in Click.objects.filter(publisher=publisher).select_related("campaign", "creative"):
        if matches(click) and start <= click.created_at < end:
            rows[key_of(click, click.created_at)][0] += 1
            rows[key_of(click, click.created_at)][1] += int(click.is_unique)
    for conversion in Conversion.objects.filter(publisher=publisher, status="approved"):
        click = Click.objects.select_related("campaign", "creative").get(pk=conversion.click_id)
        moment = click.created_at if params.attribution == "click" else conversion.created_at
        if matches(click) and start <= moment < end:
            rows[key_of(click, moment)][2] += 1
            payouts = rows[key_of(click, moment)][3]
            payouts[conversion.currency] = payouts.get(conversion.currency, 0) + conversion.payout
    return {key: tuple(values) for key, values in rows.items()}


def shown(result) -> dict:
    def key(row):
        if result.params.group_by in ("campaign", "creative"):
            return row.key
        return row.label

    return {key(r): (r.clicks, r.unique_clicks, r.conversions, r.payouts) for r in result.rows}


def build_pairs(publisher, *, until: datetime) -> None:
    today = until.astimezone(UTC).date()
    stats_pairs_build(
        publisher_id=publisher.pk, first=today - timedelta(days=8), last=today, until=until
    )


CASES = [
    ("country", {"placement": "sidebar"}),
    ("placement", {"country": "DE"}),
    ("keyword", {"country": "US"}),
    ("creative", {"smart_ad": "1491"}),
    ("smart_ad", {"keyword": "vpn"}),
    ("campaign", {"country": "FR", "placement": "footer"}),
    ("day", {"country": "US", "placement": "sidebar"}),
]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"])
@pytest.mark.parametrize("attribution", ["conversion", "click"])
def test_two_dimensions_agree_with_raw_rows(publisher, campaign, traffic, tz, attribution):
    # Built up to an hour ago: the latest clicks must come from the raw edge.
    build_pairs(publisher, until=timezone.now() - timedelta(hours=1))
    today = timezone.now().astimezone(ZoneInfo(tz)).date()
    for group_by, filters in CASES:
        filters = {**filters}
        if group_by == "campaign":
            filters["campaign"] = campaign.public_id
        for start, end in ((today - timedelta(days=7), today), (today - timedelta(days=3), today)):
            params = ReportParams(
                start=start,
                end=end,
                group_by=group_by,
                tz=tz,
                attribution=attribution,
                filters=filters,
            )
            result = report(publisher, params)
            expected = oracle(publisher, params)
            assert shown(result) == expected, (group_by, filters, start, end)
            assert result.source == ("raw" if group_by == "day" and tz != "UTC" else "pairs")
            raw = selectors.reports._report_from_raw(
                publisher, params, selectors.reports._filter_ids(publisher, filters)
            )
            selectors.reports._label_rows(raw, group_by)
            by_id = group_by in ("campaign", "creative")
            assert {
                (r.key if by_id else r.label): (r.clicks, r.unique_clicks, r.conversions, r.payouts)
                for r in raw
            } == expected
    assert expected  # the last case had traffic: not a comparison of empty reports


def test_the_plan_reads_built_days_and_only_edges_raw(publisher, traffic):
    now = timezone.now()
    build_pairs(publisher, until=now - timedelta(hours=1))
    today = now.astimezone(UTC).date()
    # Berlin days are UTC days shifted by an hour or two: the first UTC day is barely touched
    # (read raw), the others come from the rollup, less the hour or two after the range.
    start, end = selectors.local_day_range(
        today - timedelta(days=5), today - timedelta(days=2), "Europe/Berlin"
    )
    days, add, take = selectors.reports._pair_plan(publisher, start, end)
    midnight = datetime.combine(today - timedelta(days=5), time.min, UTC)
    assert days == [today - timedelta(days=n) for n in (5, 4, 3, 2)]
    assert add == [(start, midnight)]
    assert take == [(end, midnight + timedelta(days=4))]
    assert timedelta(hours=1) <= midnight - start <= timedelta(hours=2)
    # Without any built day everything is raw.
    PairStatDay.objects.all().delete()
    days, add, take = selectors.reports._pair_plan(publisher, start, end)
    assert (days, take, add) == ([], [], [(start, end)])


def test_adding_new_clicks_matches_a_full_rebuild(publisher, link, campaign, traffic):
    now = timezone.now()
    today = now.astimezone(UTC).date()
    midnight = datetime.combine(today, time.min, UTC)
    stats_pairs_extend(publisher_id=publisher.pk, day=today, until=midnight + (now - midnight) / 2)
    stats_pairs_extend(publisher_id=publisher.pk, day=today, until=now)
    stats_pairs_extend(publisher_id=publisher.pk, day=today, until=now)  # nothing new: no-op

    def pair_rows():
        return sorted(
            DailyPairStat.objects.filter(publisher=publisher, day=today).values_list(
                "dimension", "campaign_id", "value", "value2", "clicks", "unique_clicks"
            )
        )

    added = pair_rows()
    stats_pairs_build(publisher_id=publisher.pk, first=today, last=today, until=now)
    assert pair_rows() == added
    todays = [c for c in traffic if c.created_at >= midnight]
    name, _ = pair_dimension("country", "placement")
    assert sum(
        DailyPairStat.objects.filter(day=today, dimension=name).values_list("clicks", flat=True)
    ) == len(todays)
    assert PairStatDay.objects.get(publisher=publisher, day=today).built_until == now


def test_refresh_builds_yesterday_whole_and_today_so_far(publisher, link, campaign):
    now = timezone.now()
    Click.objects.create(link=link, publisher=publisher, campaign=campaign, spid="fresh")
    stats_refresh(now=now)
    today = now.astimezone(UTC).date()
    built = dict(PairStatDay.objects.filter(publisher=publisher).values_list("day", "built_until"))
    assert built[today - timedelta(days=1)] == datetime.combine(today, time.min, UTC)
    # Up to the refresh lookback, like the hourly rollup: later clicks are read raw.
    assert built[today] <= now


def test_conversions_copy_their_clicks_dimensions(publisher, link, campaign, creative, advertiser):
    click = Click.objects.create(
        link=link, publisher=publisher, campaign=campaign, spid="c", country="NL",
        placement="header", creative=creative, smart_ad_id="7", keyword="shoes",
        created_at=timezone.now() - timedelta(hours=2),
    )  # fmt: skip
    recorded = conversion_record(advertiser=advertiser, click_id=click.click_id).conversion
    saved = Conversion.objects.create(
        click=click, publisher=publisher, advertiser=advertiser, campaign=campaign,
        event="other", payout=Decimal(1), currency="USD",
    )  # fmt: skip
    expected = {
        "click_created_at": click.created_at,
        "click_country": "NL",
        "click_placement": "header",
        "click_creative_id": creative.pk,
        "click_smart_ad_id": "7",
        "click_keyword": "shoes",
    }
    for conversion in (recorded, saved):
        stored = Conversion.objects.filter(pk=conversion.pk).values(*expected).get()
        assert stored == expected


def test_the_migration_fills_the_copies_from_the_clicks(publisher, traffic):
    Conversion.objects.update(
        click_created_at=None, click_country="", click_placement="", click_keyword=""
    )
    migration = importlib.import_module("tracking.migrations.0007_conversion_click_dimensions")

    class Editor:
        pass

    editor = Editor()
    editor.connection = connection
    migration.copy_click_dimensions(None, editor)
    for conversion in Conversion.objects.select_related("click"):
        assert conversion.click_created_at == conversion.click.created_at
        assert conversion.click_country == conversion.click.country
        assert conversion.click_placement == conversion.click.placement
        assert conversion.click_keyword == conversion.click.keyword
