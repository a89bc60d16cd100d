"""Writes for the reporting rollup (`HourlyStat`): rebuild hours from raw rows, mark dirty hours.

Rows are never incremented in place: an hour is recomputed from the clicks and conversions it
holds and swapped in whole, so a rebuild is idempotent, repairs any drift, and costs the click
endpoint nothing. Two triggers keep the rollup fresh:

- clicks: `stats_refresh` (Celery beat, every minute) rebuilds the last few minutes' hours of
  every publisher that had traffic then; a click written by any path (the view, a buffered
  bulk load) is counted within a minute or so;
- conversions: `stats_mark_conversion` runs in the conversion's transaction and queues its
  click's hour and its own hour (both may be old: a click converts days later), which the
  next refresh rebuilds. The mark commits with the conversion, so none is ever missed.

The daily pair rollup (`DailyPairStat`, clicks only, PostgreSQL) is maintained incrementally:
each refresh adds the clicks settled since the last one (`stats_pairs_extend`), and the first
refresh after a UTC day ends rebuilds that day whole (`stats_pairs_build`).

>>> hour_floor(datetime(2026, 1, 2, 3, 45, 7, tzinfo=UTC))
datetime.datetime(2026, 1, 2, 3, 0, tzinfo=datetime.timezone.utc)
"""

import logging
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import combinations

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from publishers.models import Publisher
from tracking.models import (
    Click,
    Conversion,
    DailyPairStat,
    HourlyStat,
    PairStatDay,
    StatsDirtyHour,
)

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)

# Rollup dimension -> the Click field that holds its value.
DIMENSION_FIELDS = {
    HourlyStat.TOTAL: None,
    "country": "country",
    "placement": "placement",
    "creative": "creative_id",
    "smart_ad": "smart_ad_id",
    "keyword": "keyword",
}


def hour_floor(moment: datetime) -> datetime:
    """The start of the UTC hour holding `moment`."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _has_unique_flag() -> bool:
    # Click intelligence flags repeated clicks with `is_unique`; without that flag every
    # click counts as unique.
    return "is_unique" in {f.name for f in Click._meta.get_fields()}


def unique_clicks_aggregate() -> Count:
    if _has_unique_flag():
        return Count("pk", filter=Q(is_unique=True))
    return Count("pk")


def bot_clicks_aggregate() -> Count:
    return Count("pk", filter=Q(is_bot=True))


def _value(raw: object) -> str:
    return "" if raw is None else str(raw)


def _aggregate(publisher_id: int, start: datetime, end: datetime) -> dict[tuple, dict]:
    """Counts per (hour, campaign, dimension, value, currency) for hours in [start, end):
    clicks under currency "", conversions and payouts under their own currency."""
    rows: dict[tuple, dict] = defaultdict(
        lambda: {
            "clicks": 0,
            "unique_clicks": 0,
            "bot_clicks": 0,
            "click_time_conversions": 0,
            "click_time_payout": Decimal(0),
            "conversions": 0,
            "payout": Decimal(0),
        }
    )
    clicks = Click.objects.filter(
        publisher_id=publisher_id, created_at__gte=start, created_at__lt=end
    )
    approved = Conversion.objects.filter(
        publisher_id=publisher_id, status=Conversion.Status.APPROVED
    )
    by_click_time = approved.filter(click_created_at__gte=start, click_created_at__lt=end)
    by_conversion_time = approved.filter(created_at__gte=start, created_at__lt=end)
    for dimension, field in DIMENSION_FIELDS.items():
        group = ["h", "campaign_id"] + ([field] if field else [])
        for row in (
            clicks.annotate(h=TruncHour("created_at", tzinfo=UTC))
            .values(*group)
            .annotate(n=Count("pk"), u=unique_clicks_aggregate(), b=bot_clicks_aggregate())
            .order_by()
        ):
            key = (row["h"], row["campaign_id"], dimension, _value(row.get(field)), "")
            rows[key]["clicks"] += row["n"]
            rows[key]["unique_clicks"] += row["u"]
            rows[key]["bot_clicks"] += row["b"]
        # Conversions carry copies of their click's dimensions: no join to clicks.
        click_group = ["h", "campaign_id", "currency"] + ([f"click_{field}"] if field else [])
        for source, hour_field, count_key, payout_key in (
            (by_click_time, "click_created_at", "click_time_conversions", "click_time_payout"),
            (by_conversion_time, "created_at", "conversions", "payout"),
        ):
            for row in (
                source.annotate(h=TruncHour(hour_field, tzinfo=UTC))
                .values(*click_group)
                .annotate(n=Count("pk"), p=Sum("payout"))
                .order_by()
            ):
                value = _value(row.get(f"click_{field}")) if field else ""
                key = (row["h"], row["campaign_id"], dimension, value, row["currency"])
                rows[key][count_key] += row["n"]
                rows[key][payout_key] += row["p"] or Decimal(0)
    return rows


def stats_rebuild(*, publisher_id: int, start: datetime, end: datetime) -> int:
    """Recompute the rollup of every hour overlapping [start, end). Returns rows written.

    Serialised per publisher (a row lock that doesn't block conversion inserts), so two
    refreshes never interleave their delete and insert.
    """
    start = hour_floor(start)
    end = hour_floor(end) + (HOUR if end != hour_floor(end) else timedelta(0))
    if end <= start:
        return 0
    with transaction.atomic():
        # FOR NO KEY UPDATE: conversions referencing the publisher take FOR KEY SHARE, which
        # this lock lets through.
        Publisher.objects.select_for_update(no_key=True).filter(pk=publisher_id).first()
        HourlyStat.objects.filter(publisher_id=publisher_id, hour__gte=start, hour__lt=end).delete()
        if connection.vendor == "postgresql":
            return _insert_aggregates_sql(publisher_id, start, end)
        return _insert_aggregates_orm(publisher_id, start, end)


def _insert_aggregates_sql(publisher_id: int, start: datetime, end: datetime) -> int:
    """PostgreSQL: one INSERT … SELECT with GROUPING SETS, one pass over the raw rows and no
    row through Python (a month of a million clicks rebuilds in seconds)."""
    unique = "CASE WHEN c.is_unique THEN 1 ELSE 0 END" if _has_unique_flag() else "1"
    dims = "c.campaign_id, c.country, c.placement, COALESCE(c.creative_id::text, '') AS creative, c.smart_ad_id, c.keyword"
    # Conversions carry copies of their click's dimensions: no join to the clicks table.
    copies = "v.campaign_id, v.click_country, v.click_placement, COALESCE(v.click_creative_id::text, ''), v.click_smart_ad_id, v.click_keyword"
    hour = "date_trunc('hour', {} AT TIME ZONE 'UTC')"
    sql = f"""
        WITH facts AS (
            SELECT {hour.format("c.created_at")} AS h, {dims},
                   '' AS currency, 1 AS n_clicks, {unique} AS n_unique,
                   CASE WHEN c.is_bot THEN 1 ELSE 0 END AS n_bot, 0 AS ct_n, 0::numeric AS ct_p, 0 AS cv_n, 0::numeric AS cv_p
              FROM tracking_click c
             WHERE c.publisher_id = %(p)s AND c.created_at >= %(s)s AND c.created_at < %(e)s
            UNION ALL
            SELECT {hour.format("v.click_created_at")}, {copies}, v.currency, 0, 0, 0, 1, v.payout, 0, 0
              FROM tracking_conversion v
             WHERE v.publisher_id = %(p)s AND v.status = 'approved'
               AND v.click_created_at >= %(s)s AND v.click_created_at < %(e)s
            UNION ALL
            SELECT {hour.format("v.created_at")}, {copies}, v.currency, 0, 0, 0, 0, 0, 1, v.payout
              FROM tracking_conversion v
             WHERE v.publisher_id = %(p)s AND v.status = 'approved'
               AND v.created_at >= %(s)s AND v.created_at < %(e)s
        )
        INSERT INTO tracking_hourlystat (
            publisher_id, hour, campaign_id, dimension, value, currency, clicks, unique_clicks,
            bot_clicks, click_time_conversions, click_time_payout, conversions, payout)
        SELECT %(p)s, h AT TIME ZONE 'UTC', campaign_id,
               CASE WHEN GROUPING(country) = 0 THEN 'country'
                    WHEN GROUPING(placement) = 0 THEN 'placement'
                    WHEN GROUPING(creative) = 0 THEN 'creative'
                    WHEN GROUPING(smart_ad_id) = 0 THEN 'smart_ad'
                    WHEN GROUPING(keyword) = 0 THEN 'keyword'
                    ELSE '' END,
               LEFT(COALESCE(country, placement, creative, smart_ad_id, keyword, ''), 255),
               currency,
               SUM(n_clicks), SUM(n_unique), SUM(n_bot), SUM(ct_n), SUM(ct_p), SUM(cv_n), SUM(cv_p)
          FROM facts
         GROUP BY GROUPING SETS (
               (h, campaign_id, currency), (h, campaign_id, currency, country),
               (h, campaign_id, currency, placement), (h, campaign_id, currency, creative),
               (h, campaign_id, currency, smart_ad_id), (h, campaign_id, currency, keyword))
         -- Stored in the order reports read them (one dimension, a range of hours): a
         -- report then touches a few pages instead of one page per row.
         ORDER BY 4, 2
    """  # noqa: S608 - no user input is formatted in, only fixed fragments
    with connection.cursor() as cursor:
        cursor.execute(sql, {"p": publisher_id, "s": start, "e": end})
        return cursor.rowcount


def _insert_aggregates_orm(publisher_id: int, start: datetime, end: datetime) -> int:
    """Any database (SQLite in local mode): aggregate per dimension, merge in Python."""
    aggregated = _aggregate(publisher_id, start, end)
    HourlyStat.objects.bulk_create(
        (
            HourlyStat(
                publisher_id=publisher_id,
                hour=hour,
                campaign_id=campaign_id,
                dimension=dimension,
                value=value[:255],
                currency=currency,
                **counts,
            )
            for (hour, campaign_id, dimension, value, currency), counts in aggregated.items()
        ),
        batch_size=5000,
    )
    return len(aggregated)


def stats_mark_conversion(conversion: Conversion, *, click: Click) -> None:
    """Queue the hours a conversion counts in (its click's and its own) for the next refresh.

    Call inside the transaction that records the conversion or changes its status.
    """
    StatsDirtyHour.objects.bulk_create(
        stats_dirty_marks(conversion, click=click), ignore_conflicts=True
    )


def stats_dirty_marks(conversion: Conversion, *, click: Click) -> list[StatsDirtyHour]:
    """The unsaved marks `stats_mark_conversion` inserts (a mark already queued is kept: insert
    them ignoring conflicts)."""
    hours = {hour_floor(click.created_at), hour_floor(conversion.created_at)}
    return [StatsDirtyHour(publisher_id=conversion.publisher_id, hour=hour) for hour in hours]


def stats_refresh(*, now: datetime | None = None) -> int:
    """Rebuild recent hours of active publishers and every queued dirty hour. Returns the
    number of hours rebuilt."""
    now = now or timezone.now()
    since = now - timedelta(minutes=settings.STATS_REFRESH_LOOKBACK_MINUTES)
    rebuilt = 0
    for publisher_id in Publisher.objects.values_list("pk", flat=True):
        # One indexed probe per publisher: (publisher, created_at).
        recent = Click.objects.filter(publisher_id=publisher_id, created_at__gte=since).exists()
        if recent:
            stats_rebuild(publisher_id=publisher_id, start=since, end=now)
            rebuilt += int((hour_floor(now) - hour_floor(since)) / HOUR) + 1
            if pairs_supported():
                stats_pairs_refresh(publisher_id=publisher_id, now=now)
    while True:
        with transaction.atomic():
            # Taken and deleted in the rebuild's transaction: a failure puts them back.
            batch = list(
                StatsDirtyHour.objects.select_for_update(skip_locked=True).order_by("pk")[:200]
            )
            if not batch:
                break
            # Delete before reading: a conversion committing meanwhile either is seen by the
            # rebuild below or re-inserts its mark (it waits on our delete) for the next run.
            StatsDirtyHour.objects.filter(pk__in=[mark.pk for mark in batch]).delete()
            for mark in batch:
                stats_rebuild(publisher_id=mark.publisher_id, start=mark.hour, end=mark.hour + HOUR)
            rebuilt += len(batch)
    if rebuilt:
        logger.info("Rebuilt %d rollup hours", rebuilt)
    return rebuilt


# --- Daily pair rollup (clicks per UTC day × two dimensions) ---------------------------------

DAY = timedelta(days=1)
# SQL expression of each dimension over tracking_click (the rollup's text values).
_PAIR_COLUMNS = {
    "country": "country",
    "placement": "placement",
    "creative": "COALESCE(creative_id::text, '')",
    "smart_ad": "smart_ad_id",
    "keyword": "keyword",
}
PAIRS = tuple(combinations(HourlyStat.DIMENSIONS, 2))


def pair_dimension(first: str, second: str) -> tuple[str, bool]:
    """The `DailyPairStat.dimension` of two dimensions, and whether `first` is stored in
    `value2` (pairs are named in `HourlyStat.DIMENSIONS` order).

    >>> pair_dimension("placement", "country")
    ('country+placement', True)
    """
    order = HourlyStat.DIMENSIONS
    a, b = sorted((first, second), key=order.index)
    return f"{a}+{b}", a != first


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def pairs_supported() -> bool:
    """Grouping sets and upserts: PostgreSQL only (elsewhere two-dimension reports read raw
    clicks, which is fine at local-mode volumes)."""
    return connection.vendor == "postgresql"


def _pairs_add_sql(publisher_id: int, start: datetime, end: datetime) -> int:
    """Add the clicks created in [start, end) to their days' pair rows: one pass, one upsert.
    Clicks only ever arrive, so adding is exact for a range not added before."""
    unique = "CASE WHEN is_unique THEN 1 ELSE 0 END" if _has_unique_flag() else "1"
    columns = ", ".join(f"{sql} AS {name}" for name, sql in _PAIR_COLUMNS.items())
    sets = ", ".join(f"(d, campaign_id, {a}, {b})" for a, b in PAIRS)

    def case(pick) -> str:
        whens = " ".join(
            f"WHEN GROUPING({a}) = 0 AND GROUPING({b}) = 0 THEN {pick(a, b)}" for a, b in PAIRS
        )
        return f"CASE {whens} END"

    sql = f"""
        WITH c AS (
            SELECT (created_at AT TIME ZONE 'UTC')::date AS d, campaign_id, {columns},
                   {unique} AS u, CASE WHEN is_bot THEN 1 ELSE 0 END AS b
              FROM tracking_click
             WHERE publisher_id = %(p)s AND created_at >= %(s)s AND created_at < %(e)s
        )
        INSERT INTO tracking_dailypairstat (
            publisher_id, day, campaign_id, dimension, value, value2, clicks, unique_clicks,
            bot_clicks)
        SELECT %(p)s, d, campaign_id, {case(lambda a, b: f"'{a}+{b}'")},
               {case(lambda a, b: a)}, {case(lambda a, b: b)}, COUNT(*), SUM(u), SUM(b)
          FROM c
         GROUP BY GROUPING SETS ({sets})
        ON CONFLICT (publisher_id, dimension, day, campaign_id, value, value2) DO UPDATE
           SET clicks = tracking_dailypairstat.clicks + EXCLUDED.clicks,
               unique_clicks = tracking_dailypairstat.unique_clicks + EXCLUDED.unique_clicks,
               bot_clicks = tracking_dailypairstat.bot_clicks + EXCLUDED.bot_clicks
    """  # noqa: S608 - only fixed fragments are formatted in
    with connection.cursor() as cursor:
        cursor.execute(sql, {"p": publisher_id, "s": start, "e": end})
        return cursor.rowcount


def stats_pairs_build(*, publisher_id: int, first: date, last: date, until: datetime) -> int:
    """Rebuild the pair rows of UTC days `first`..`last` from raw clicks, counting clicks
    created before `until` (the end of `last` at most). Returns rows written."""
    if not pairs_supported():
        return 0
    end = min(until, day_start(last) + DAY)
    with transaction.atomic():
        # The lock stats_rebuild takes: one writer per publisher at a time.
        Publisher.objects.select_for_update(no_key=True).filter(pk=publisher_id).first()
        DailyPairStat.objects.filter(
            publisher_id=publisher_id, day__gte=first, day__lte=last
        ).delete()
        written = _pairs_add_sql(publisher_id, day_start(first), end)
        day = first
        while day <= last:
            PairStatDay.objects.update_or_create(
                publisher_id=publisher_id,
                day=day,
                defaults={"built_until": max(min(end, day_start(day) + DAY), day_start(day))},
            )
            day += DAY
    return written


def stats_pairs_extend(*, publisher_id: int, day: date, until: datetime) -> int:
    """Add the clicks of UTC day `day` created since its last build, up to `until`: the
    incremental step, proportional to the new clicks only."""
    if not pairs_supported():
        return 0
    until = min(until, day_start(day) + DAY)
    with transaction.atomic():
        Publisher.objects.select_for_update(no_key=True).filter(pk=publisher_id).first()
        marker = PairStatDay.objects.filter(publisher_id=publisher_id, day=day).first()
        if marker is None:
            DailyPairStat.objects.filter(publisher_id=publisher_id, day=day).delete()
            since = day_start(day)
            marker = PairStatDay(publisher_id=publisher_id, day=day, built_until=since)
        if until <= marker.built_until:
            return 0
        written = _pairs_add_sql(publisher_id, marker.built_until, until)
        marker.built_until = until
        marker.save()
    return written


def stats_pairs_refresh(*, publisher_id: int, now: datetime) -> None:
    """Keep a publisher's pair rollup current: today's clicks are added as they settle (older
    than the refresh lookback, like the hourly rollup's), and yesterday is rebuilt once in
    full after it ends, which repairs anything the additions missed."""
    settled = now - timedelta(minutes=settings.STATS_REFRESH_LOOKBACK_MINUTES)
    today = settled.astimezone(UTC).date()
    yesterday = today - DAY
    marker = PairStatDay.objects.filter(publisher_id=publisher_id, day=yesterday).first()
    if marker is None or marker.built_until < day_start(today):
        stats_pairs_build(publisher_id=publisher_id, first=yesterday, last=yesterday, until=settled)
    stats_pairs_extend(publisher_id=publisher_id, day=today, until=settled)
