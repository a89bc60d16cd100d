"""Reads for reports (dashboard and API): grouped, filtered totals from the rollups, and the
overview's period summary and daily series. Every read takes the publisher."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, available_timezones

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from postbacks.models import Postback
from publishers.models import Publisher
from tracking.models import (
    Campaign,
    Click,
    Conversion,
    ConversionRefusal,
    Creative,
    DailyPairStat,
    HourlyStat,
    PairStatDay,
    SmartAdImpression,
)
from tracking.rollups import (
    bot_clicks_aggregate,
    day_start,
    pair_dimension,
    pairs_supported,
    unique_clicks_aggregate,
)
from tracking.selectors.visible import campaigns_for_publisher, creatives_for_publisher

# --- Reports --------------------------------------------------------------------------------


def _report_timezones() -> tuple[str, ...]:
    # Every IANA zone of the tz database, UTC first; not the "posix/" and "right/" copies or
    # the system's aliases for its own zone.
    names = {
        name
        for name in available_timezones()
        if "/" in name and not name.startswith(("posix/", "right/", "Etc/"))
    }
    return ("UTC", *sorted(names))


# Any IANA zone. The hourly rollup cuts days exactly only where local midnight falls on a UTC
# hour (`hour_aligned`); other zones (Asia/Kolkata, +05:30) are read from raw rows.
REPORT_TIMEZONES = _report_timezones()

REPORT_GROUPS = {
    "day": "Day",
    "country": "Country",
    "placement": "Placement",
    "campaign": "Campaign",
    "creative": "Creative",
    "smart_ad": "Smart ad",
    "keyword": "Keyword",
}
# Filterable dimensions and the Click field each one reads.
REPORT_FILTERS = {
    "campaign": "campaign_id",
    "country": "country",
    "placement": "placement",
    "creative": "creative_id",
    "smart_ad": "smart_ad_id",
    "keyword": "keyword",
}
REPORT_SORTS = (
    "key",
    "impressions",
    "clicks",
    "ctr",
    "unique_clicks",
    "bot_clicks",
    "conversions",
    "conversion_rate",
    "payout",
)
ATTRIBUTIONS = {
    "conversion": "Conversion time: a conversion counts on the day it was recorded",
    "click": "Click time: a conversion counts on the day of its click",
}
REPORT_MAX_ROWS = 1000

# One line each, shown wherever the number is (dashboard, API schema, CSV documentation).
DEFINITIONS = {
    "clicks": "Gross clicks: every click stored on your links, repeats and bots included.",
    "unique_clicks": "Clicks that were the first from their IP and browser on that link within "
    "the unique window (24 hours by default).",
    "bot_clicks": "Clicks flagged as bots (a crawler, an automation client or no user agent): "
    "counted in clicks, never refused; their conversions follow the campaign's bot policy "
    "(by default they wait for review).",
    "refused_clicks": "Clicks refused at the edge and never stored, by reason: a spid that "
    "can't be kept exactly (the visitor still reached the landing page), or an offer your "
    "link is not approved for, a blocked IP or a click-rate cap (the visitor was not sent on).",
    "conversions": "Approved conversions (the ones that pay), counted when recorded.",
    "conversion_outcomes": "Every conversion the advertiser sent in the period, by status and "
    "reason: rejected too fast, pending bot clicks held for review, unpaid over a campaign "
    "cap (cap reached), and refused ones never recorded as conversions (expired: the click "
    "was older than the attribution window; cap reached: over a cap of a campaign that "
    "refuses those).",
    "refused_conversions": "Conversions the advertiser sent that were refused (HTTP 422) and "
    "not counted: nothing is paid and no postback is sent.",
    "impressions": "Smart-ad views by people: a bot's view is not counted.",
}


@dataclass(frozen=True)
class ReportParams:
    """What to show. Dates are calendar days in `tz`, both inclusive. Filter values are what a
    publisher sees: campaign and creative by public id, the others as recorded."""

    start: date
    end: date
    group_by: str = "day"
    tz: str = "UTC"
    attribution: str = "conversion"
    filters: Mapping[str, str] = field(default_factory=dict)
    sort: str = "key"
    descending: bool = False

    def __post_init__(self) -> None:
        if self.group_by not in REPORT_GROUPS:
            raise ValueError(f"Unknown grouping {self.group_by!r}.")
        if self.tz not in REPORT_TIMEZONES:
            raise ValueError(f"Unsupported time zone {self.tz!r}.")
        if self.attribution not in ATTRIBUTIONS:
            raise ValueError(f"Unknown attribution {self.attribution!r}.")
        if self.sort not in REPORT_SORTS:
            raise ValueError(f"Unknown sort {self.sort!r}.")
        unknown = set(self.filters) - set(REPORT_FILTERS)
        if unknown:
            raise ValueError(f"Unknown filter {sorted(unknown)[0]!r}.")
        if self.end < self.start:
            raise ValueError("The end date is before the start date.")

    def utc_range(self) -> tuple[datetime, datetime]:
        return local_day_range(self.start, self.end, self.tz)


def local_day_range(start: date, end: date, tz: str) -> tuple[datetime, datetime]:
    """[start 00:00, day after end 00:00) in `tz`, as aware datetimes."""
    zone = ZoneInfo(tz)
    return (
        datetime.combine(start, time.min, zone),
        datetime.combine(end + timedelta(days=1), time.min, zone),
    )


def hour_aligned(start: date, end: date, tz: str) -> bool:
    """Whether every local midnight from `start` to the day after `end` falls on a whole UTC
    hour, so that the hourly rollup can cut those days exactly.

    >>> hour_aligned(date(2026, 1, 1), date(2026, 1, 31), "Europe/Berlin")
    True
    >>> hour_aligned(date(2026, 1, 1), date(2026, 1, 1), "Asia/Kolkata")
    False
    """
    zone = ZoneInfo(tz)
    day = start
    while day <= end + timedelta(days=1):
        offset = datetime.combine(day, time.min, zone).utcoffset()
        if offset is None or offset.total_seconds() % 3600:
            return False
        day += timedelta(days=1)
    return True


@dataclass
class ReportRow:
    key: object
    label: str
    clicks: int = 0
    unique_clicks: int = 0
    bot_clicks: int = 0
    conversions: int = 0
    # Payout per currency (ISO code -> amount): money is never added across currencies.
    payouts: dict[str, Decimal] = field(default_factory=dict)
    # Smart-ad impressions; None where the report can't know them (see `_add_impressions`).
    impressions: int | None = None
    # The row's clicks that came from smart ads, when the report can tell them apart (grouped
    # by or filtered on smart ad): CTR counts only those, as impressions are smart ads' only.
    smart_clicks: int | None = None

    @property
    def conversion_rate(self) -> float | None:
        """Conversions per 100 clicks, None without clicks."""
        return 100.0 * self.conversions / self.clicks if self.clicks else None

    def add_payout(self, currency: str, amount: Decimal | None) -> None:
        if amount:
            self.payouts[currency] = self.payouts.get(currency, Decimal(0)) + amount

    @property
    def ctr(self) -> float | None:
        """Smart-ad clicks per 100 impressions; None without impressions or without a known
        count of smart-ad clicks."""
        if not self.impressions or self.smart_clicks is None:
            return None
        return 100.0 * self.smart_clicks / self.impressions


@dataclass
class Report:
    params: ReportParams
    rows: list[ReportRow]
    totals: ReportRow
    # "rollup" when served from HourlyStat, "pairs" from DailyPairStat (two dimensions), "raw"
    # from raw rows (more dimensions).
    source: str
    truncated: bool = False
    # Whether the rows carry smart-ad impressions (`_add_impressions`).
    impressions: bool = False

    @property
    def currencies(self) -> list[str]:
        """The currencies paid out in the report, in order: one payout column each."""
        return sorted(self.totals.payouts)


# Filters that name a row by its public id, and where the publisher's rows of that kind are.
_BY_PUBLIC_ID = {"campaign": campaigns_for_publisher, "creative": creatives_for_publisher}


def _filter_ids(publisher: Publisher, filters: Mapping[str, str]) -> dict[str, object] | None:
    """Filters with public ids turned into primary keys; None when one names nothing of the
    publisher's (the report is then empty, never another tenant's)."""
    resolved: dict[str, object] = {}
    for name, value in filters.items():
        if value == "":
            continue
        if name in _BY_PUBLIC_ID:
            rows = _BY_PUBLIC_ID[name](publisher).filter(public_id=value)
            value = rows.values_list("pk", flat=True).first()
            if value is None:
                return None
        resolved[name] = value
    return resolved


def report(publisher: Publisher, params: ReportParams) -> Report:
    """A publisher's report: one row per group, with totals.

    Served from the hourly rollup whenever at most one dimension besides the campaign is
    involved and the time zone's days start on whole UTC hours; with two (filter on one, group by another), clicks come from the daily pair
    rollup for its whole built UTC days and from raw clicks for the hours around them, and
    conversions from their copies of the click's dimensions; beyond that, from raw rows.
    """
    filters = _filter_ids(publisher, params.filters)
    if filters is None:
        return Report(params, [], ReportRow(None, "Total"), source="rollup")
    dimensions = {name for name in filters if name != "campaign"}
    if params.group_by in HourlyStat.DIMENSIONS:
        dimensions.add(params.group_by)
    if len(dimensions) <= 1 and hour_aligned(params.start, params.end, params.tz):
        rows = _report_from_rollup(publisher, params, filters, next(iter(dimensions), ""))
        source = "rollup"
    elif (
        len(dimensions) == 2
        and pairs_supported()
        and (params.group_by != "day" or params.tz == "UTC")
    ):
        rows = _report_from_pairs(publisher, params, filters, sorted(dimensions))
        source = "pairs"
    else:
        rows = _report_from_raw(publisher, params, filters)
        source = "raw"
    with_impressions = _add_impressions(rows, publisher, params, filters)
    _label_rows(rows, params.group_by)
    totals = ReportRow(None, "Total")
    if with_impressions:
        totals.impressions = 0
        if "smart_ad" in filters or params.group_by == "smart_ad":
            totals.smart_clicks = 0
    for row in rows:
        totals.clicks += row.clicks
        totals.unique_clicks += row.unique_clicks
        totals.bot_clicks += row.bot_clicks
        totals.conversions += row.conversions
        for currency, amount in row.payouts.items():
            totals.add_payout(currency, amount)
        if with_impressions:
            totals.impressions += row.impressions or 0
            if totals.smart_clicks is not None:
                totals.smart_clicks += row.smart_clicks or 0
    currencies = sorted(totals.payouts)
    # Ties in the chosen column come in the label's order, whichever the direction: a page and
    # its export list the same rows in the same order, whatever the rows came from (the rollup
    # or raw rows, which depends on the hour).
    rows.sort(key=lambda row: _sort_key(row, "key", currencies))
    rows.sort(key=lambda row: _sort_key(row, params.sort, currencies), reverse=params.descending)
    truncated = len(rows) > REPORT_MAX_ROWS
    return Report(
        params,
        rows[:REPORT_MAX_ROWS],
        totals,
        source=source,
        truncated=truncated,
        impressions=with_impressions,
    )


# SmartAdImpression field of each grouping and filter that it records.
IMPRESSION_FIELDS = {
    "day": "day",
    "campaign": "creative__campaign_id",
    "creative": "creative_id",
    "smart_ad": "smart_ad_id",
    "country": "country",
}


def _add_impressions(
    rows: list[ReportRow], publisher: Publisher, params: ReportParams, filters: dict
) -> bool:
    """Give the rows their smart-ad impressions where the counters can say: they are kept per
    UTC day × smart ad × creative × country (`SmartAdImpression`), so only for UTC reports,
    grouped and filtered by those (or the creative's campaign); never for placements or
    keywords, which impressions don't record. Impressions without any click become rows of
    their own. Returns whether impressions were added."""
    if (
        params.tz != "UTC"
        or params.group_by not in IMPRESSION_FIELDS
        or not set(filters) <= set(IMPRESSION_FIELDS)
    ):
        return False
    impressions = SmartAdImpression.objects.filter(
        publisher=publisher, day__gte=params.start, day__lte=params.end
    )
    for name, value in filters.items():
        if name == "smart_ad" and not str(value).isdigit():
            impressions = impressions.none()  # smart ad ids are numbers: none shown
        else:
            impressions = impressions.filter(**{IMPRESSION_FIELDS[name]: value})
    group = IMPRESSION_FIELDS[params.group_by]
    counts = {}
    for item in impressions.values(group).annotate(n=Sum("impressions")).order_by():
        counts[_row_key(params.group_by, item[group])] = item["n"]
    smart_only = "smart_ad" in filters
    for row in rows:
        row.impressions = counts.pop(row.key, 0)
        if smart_only or (params.group_by == "smart_ad" and row.key):
            row.smart_clicks = row.clicks
    for key, count in counts.items():
        rows.append(
            ReportRow(key, "", impressions=count, smart_clicks=0 if smart_only or key else None)
        )
    return True


def _sort_key(row: ReportRow, sort: str, currencies: list[str]) -> tuple:
    if sort == "key":
        return (row.label.lower() if isinstance(row.key, str | int) else row.key,)
    if sort == "payout":
        # By the first currency's amount, then the next: amounts are never added up.
        return tuple(row.payouts.get(currency, Decimal(0)) for currency in currencies)
    value = getattr(row, sort)
    # Rows without a value (no clicks: no rate) sort below every number.
    return (value is not None, value if value is not None else 0)


def rollup_tail_start(now: datetime | None = None) -> datetime:
    """Where the raw tail begins: the previous UTC hour's start. Beat rebuilds recent hours
    every minute, so the hours before it are complete in the rollup; the current and
    previous hour are read from raw rows, and a conversion counts as soon as it commits."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def _report_from_rollup(
    publisher: Publisher, params: ReportParams, filters: dict, dimension: str
) -> list[ReportRow]:
    """Hours before `rollup_tail_start` from the rollup, the rest from raw rows."""
    start, end = params.utc_range()
    tail = max(start, rollup_tail_start())
    stats = HourlyStat.objects.filter(
        publisher=publisher, dimension=dimension, hour__gte=start, hour__lt=min(end, tail)
    )
    if "campaign" in filters:
        stats = stats.filter(campaign_id=filters["campaign"])
    if dimension and dimension in filters:
        stats = stats.filter(value=str(filters[dimension]))
    if params.group_by == "day":
        stats = stats.annotate(k=TruncDate("hour", tzinfo=ZoneInfo(params.tz)))
        key = "k"
    elif params.group_by == "campaign":
        key = "campaign_id"
    else:
        key = "value"
    by_click = params.attribution == "click"
    grouped = (
        stats.values(key, "currency")
        .annotate(
            c=Sum("clicks"),
            u=Sum("unique_clicks"),
            b=Sum("bot_clicks"),
            n=Sum("click_time_conversions" if by_click else "conversions"),
            p=Sum("click_time_payout" if by_click else "payout"),
        )
        .order_by()
    )
    rows: dict[object, ReportRow] = {}
    for item in grouped:
        if not (item["c"] or item["n"]):
            continue
        row = rows.setdefault(item[key], ReportRow(key=item[key], label=""))
        row.clicks += item["c"] or 0
        row.unique_clicks += item["u"] or 0
        row.bot_clicks += item["b"] or 0
        row.conversions += item["n"] or 0
        row.add_payout(item["currency"], item["p"])
    if tail < end:
        _add_raw_clicks(rows, publisher, params, filters, [(tail, end)])
        _add_conversions(rows, publisher, params, filters, span=(tail, end))
    return list(rows.values())


# Conversion fields holding the copies of the click's dimensions (no join to clicks).
CONVERSION_FILTERS = {
    "campaign": "campaign_id",
    "country": "click_country",
    "placement": "click_placement",
    "creative": "click_creative_id",
    "smart_ad": "click_smart_ad_id",
    "keyword": "click_keyword",
}
_TEXT_KEYS = ("creative", "smart_ad", "keyword", "country", "placement")


def _row_key(group_by: str, key: object) -> object:
    # The rollups store dimension values as text; so do these rows (creative: the pk).
    if group_by in _TEXT_KEYS:
        return "" if key is None else str(key)
    return key


def _add_raw_clicks(
    rows: dict[object, ReportRow],
    publisher: Publisher,
    params: ReportParams,
    filters: dict,
    spans: list[tuple[datetime, datetime]],
    sign: int = 1,
) -> None:
    """Add (or with sign -1 take away) the raw clicks created in `spans`, grouped."""
    if not spans:
        return
    within = Q()
    for begin, finish in spans:
        within |= Q(created_at__gte=begin, created_at__lt=finish)
    click_filter = Q()
    for name, value in filters.items():
        click_filter &= Q(**{REPORT_FILTERS[name]: value})
    clicks = Click.objects.filter(within, click_filter, publisher=publisher)
    group_field = REPORT_FILTERS.get(params.group_by)
    if group_field is None:
        clicks = clicks.annotate(k=TruncDate("created_at", tzinfo=ZoneInfo(params.tz)))
    key = group_field or "k"
    for item in (
        clicks.values(key)
        .annotate(c=Count("pk"), u=unique_clicks_aggregate(), b=bot_clicks_aggregate())
        .order_by()
    ):
        row_key = _row_key(params.group_by, item[key])
        row = rows.setdefault(row_key, ReportRow(row_key, ""))
        row.clicks += sign * item["c"]
        row.unique_clicks += sign * item["u"]
        row.bot_clicks += sign * item["b"]


def _add_conversions(
    rows: dict[object, ReportRow],
    publisher: Publisher,
    params: ReportParams,
    filters: dict,
    span: tuple[datetime, datetime] | None = None,
) -> None:
    """Approved conversions (counted in `span`, default the report's range), grouped, read
    through their copies of the click's dimensions."""
    start, end = span or params.utc_range()
    time_field = "click_created_at" if params.attribution == "click" else "created_at"
    conversion_filter = Q()
    for name, value in filters.items():
        conversion_filter &= Q(**{CONVERSION_FILTERS[name]: value})
    conversions = Conversion.objects.filter(
        conversion_filter,
        publisher=publisher,
        status=Conversion.Status.APPROVED,
        **{f"{time_field}__gte": start, f"{time_field}__lt": end},
    )
    if params.group_by == "day":
        conversions = conversions.annotate(k=TruncDate(time_field, tzinfo=ZoneInfo(params.tz)))
        key = "k"
    else:
        key = CONVERSION_FILTERS[params.group_by]
    for item in (
        conversions.values(key, "currency").annotate(n=Count("pk"), p=Sum("payout")).order_by()
    ):
        row_key = _row_key(params.group_by, item[key])
        row = rows.setdefault(row_key, ReportRow(row_key, ""))
        row.conversions += item["n"]
        row.add_payout(item["currency"], item["p"])


def _report_from_raw(publisher: Publisher, params: ReportParams, filters: dict) -> list[ReportRow]:
    rows: dict[object, ReportRow] = {}
    _add_raw_clicks(rows, publisher, params, filters, [params.utc_range()])
    _add_conversions(rows, publisher, params, filters)
    return list(rows.values())


def _pair_plan(
    publisher: Publisher, start: datetime, end: datetime
) -> tuple[list[date], list[tuple[datetime, datetime]], list[tuple[datetime, datetime]]]:
    """How to count the clicks of [start, end): the UTC days to take from the pair rollup, and
    the spans of raw clicks to add and to take away around them.

    A built day counts its clicks before `built_until`; it is used when the raw clicks that
    correct it to the range (the hours before `start`, those between `end` and `built_until`
    or after `built_until`) are fewer hours than reading the day's part of the range raw. So
    a report in another time zone reads at most half a day of raw clicks at each edge.
    """
    first, last = (
        start.astimezone(UTC).date(),
        (end - timedelta(microseconds=1)).astimezone(UTC).date(),
    )
    built = dict(
        PairStatDay.objects.filter(publisher=publisher, day__gte=first, day__lte=last).values_list(
            "day", "built_until"
        )
    )
    days, add, take = [], [], []
    day = first
    while day <= last:
        midnight = day_start(day)
        begin, finish = max(start, midnight), min(end, midnight + timedelta(days=1))
        until = built.get(day)
        if until is not None:
            corrections = (begin - midnight) + abs(finish - until)
            if corrections < finish - begin:
                days.append(day)
                if begin > midnight:
                    take.append((midnight, begin))
                if finish > until:
                    add.append((until, finish))
                elif finish < until:
                    take.append((finish, until))
                day += timedelta(days=1)
                continue
        add.append((begin, finish))
        day += timedelta(days=1)
    return days, _merged(add), _merged(take)


def _merged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for begin, finish in sorted(spans):
        if merged and merged[-1][1] >= begin:
            merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
        else:
            merged.append((begin, finish))
    return merged


def _report_from_pairs(
    publisher: Publisher, params: ReportParams, filters: dict, dimensions: list[str]
) -> list[ReportRow]:
    """Two dimensions: whole UTC days from `DailyPairStat`, the rest from raw clicks (see
    `_pair_plan`), conversions from their copies of the click's dimensions."""
    start, end = params.utc_range()
    days, add, take = _pair_plan(publisher, start, end)
    rows: dict[object, ReportRow] = {}
    if days:
        name, swapped = pair_dimension(*dimensions)
        column = {dimensions[0]: "value2" if swapped else "value"}
        column[dimensions[1]] = "value" if swapped else "value2"
        stats = DailyPairStat.objects.filter(
            publisher=publisher, dimension=name, day__gte=days[0], day__lte=days[-1]
        )
        if len(days) != (days[-1] - days[0]).days + 1:
            stats = stats.filter(day__in=days)
        for dimension in dimensions:
            if dimension in filters:
                stats = stats.filter(**{column[dimension]: str(filters[dimension])})
        if "campaign" in filters:
            stats = stats.filter(campaign_id=filters["campaign"])
        if params.group_by == "day":
            key = "day"
        elif params.group_by == "campaign":
            key = "campaign_id"
        else:
            key = column[params.group_by]
        for item in (
            stats.values(key)
            .annotate(c=Sum("clicks"), u=Sum("unique_clicks"), b=Sum("bot_clicks"))
            .order_by()
        ):
            rows[item[key]] = ReportRow(
                item[key], "", clicks=item["c"], unique_clicks=item["u"], bot_clicks=item["b"]
            )
    _add_raw_clicks(rows, publisher, params, filters, add)
    _add_raw_clicks(rows, publisher, params, filters, take, sign=-1)
    _add_conversions(rows, publisher, params, filters)
    # Keys whose clicks the corrections took away entirely, and that had no conversions.
    return [row for row in rows.values() if row.clicks or row.conversions]


def _label_rows(rows: list[ReportRow], group_by: str) -> None:
    if group_by == "day":
        for row in rows:
            row.label = row.key.isoformat()
        return
    if group_by == "campaign":
        names = dict(
            Campaign.objects.filter(pk__in=[r.key for r in rows]).values_list("pk", "name")
        )
        ids = dict(
            Campaign.objects.filter(pk__in=[r.key for r in rows]).values_list("pk", "public_id")
        )
        for row in rows:
            row.label = names.get(row.key, "(deleted)")
            row.key = ids.get(row.key, "")
        return
    if group_by == "creative":
        creatives = {
            str(pk): (public_id, name)
            for pk, public_id, name in Creative.objects.filter(
                pk__in=[int(r.key) for r in rows if r.key]
            ).values_list("pk", "public_id", "name")
        }
        for row in rows:
            public_id, name = creatives.get(row.key, ("", "(none)"))
            row.key, row.label = public_id, name
        return
    for row in rows:
        row.label = row.key or "(none)"


# --- Overview -------------------------------------------------------------------------------


# The status of a conversion the intake refused (ConversionRefusal): never a Conversion status.
REFUSED = "refused"


@dataclass(frozen=True)
class ConversionOutcome:
    status: str
    reason: str  # "" when none was recorded
    label: str  # the reason as a sentence
    count: int


def conversion_outcomes(
    publisher: Publisher, *, start: date, end: date, tz: str
) -> list[ConversionOutcome]:
    """Every conversion recorded on calendar days [start, end] in `tz`, by status and reason,
    then those refused (status "refused", e.g. expired; first refused in the period)."""
    begin, finish = local_day_range(start, end, tz)
    labels = dict(Conversion.Reason.choices)
    recorded = [
        ConversionOutcome(item["status"], item["reason"], labels.get(item["reason"], ""), item["n"])
        for item in Conversion.objects.filter(
            publisher=publisher, created_at__gte=begin, created_at__lt=finish
        )
        .values("status", "reason")
        .annotate(n=Count("pk"))
        .order_by("status", "reason")
    ]
    refused_labels = dict(ConversionRefusal.Reason.choices)
    refused = [
        ConversionOutcome(REFUSED, reason, refused_labels.get(reason, reason), n)
        for reason, n in ConversionRefusal.objects.filter(
            publisher=publisher, created_at__gte=begin, created_at__lt=finish
        )
        .values_list("reason")
        .annotate(n=Count("pk"))
        .order_by("reason")
    ]
    return recorded + refused


@dataclass
class PeriodSummary:
    clicks: int = 0
    unique_clicks: int = 0
    bot_clicks: int = 0
    conversions: int = 0
    # Per currency, never added across them.
    payouts: dict[str, Decimal] = field(default_factory=dict)
    postbacks_succeeded: int = 0
    postbacks_failed: int = 0
    # Pending: not tried yet, or (`postbacks_retrying`) tried and answered with a failure.
    postbacks_pending: int = 0
    postbacks_retrying: int = 0

    @property
    def conversion_rate(self) -> float | None:
        return 100.0 * self.conversions / self.clicks if self.clicks else None

    @property
    def postbacks_waiting(self) -> int:
        return self.postbacks_pending - self.postbacks_retrying

    @property
    def postbacks_total(self) -> int:
        return self.postbacks_succeeded + self.postbacks_failed + self.postbacks_pending

    @property
    def postback_success_rate(self) -> float | None:
        """Delivered among every postback of the period, settled or not (one still retrying
        is not a success yet), in percent."""
        total = self.postbacks_total
        return 100.0 * self.postbacks_succeeded / total if total else None


def period_summary(publisher: Publisher, *, start: date, end: date, tz: str) -> PeriodSummary:
    """Totals for calendar days [start, end] in `tz` (conversions by conversion time): the
    report's totals, so Overview and Reports never disagree."""
    totals = report(publisher, ReportParams(start=start, end=end, tz=tz)).totals
    summary = PeriodSummary(
        clicks=totals.clicks,
        unique_clicks=totals.unique_clicks,
        bot_clicks=totals.bot_clicks,
        conversions=totals.conversions,
        payouts=dict(sorted(totals.payouts.items())),
    )
    begin, finish = local_day_range(start, end, tz)
    for status, retrying, count in (
        Postback.objects.filter(publisher=publisher, created_at__gte=begin, created_at__lt=finish)
        .annotate(retrying=Q(status=Postback.Status.PENDING, attempts__gt=0))
        .values_list("status", "retrying")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        setattr(summary, f"postbacks_{status}", getattr(summary, f"postbacks_{status}") + count)
        if retrying:
            summary.postbacks_retrying += count
    return summary


def daily_totals(publisher: Publisher, *, start: date, end: date, tz: str) -> list[dict]:
    """Clicks and conversions per calendar day in [start, end] (days without traffic included,
    as zeros), from the same report as Reports grouped by day."""
    rows = report(publisher, ReportParams(start=start, end=end, tz=tz)).rows
    return days_filled(rows, start, end)


def days_filled(rows: list[ReportRow], start: date, end: date) -> list[dict]:
    """Rows of a report grouped by day as {"day", "clicks", "conversions"}: every day of
    [start, end], a day without a row as zeros."""
    found = {row.key: row for row in rows if isinstance(row.key, date)}
    days = []
    day = start
    while day <= end:
        row = found.get(day)
        days.append(
            {
                "day": day,
                "clicks": row.clicks if row else 0,
                "conversions": row.conversions if row else 0,
            }
        )
        day += timedelta(days=1)
    return days
