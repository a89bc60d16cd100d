"""Reads for the conversion log (keyset pages) and the spid trace. Every read takes the publisher."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import Count, F, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate, TruncHour

from postbacks.models import Postback, PostbackAttempt
from publishers.keyset import Keyset
from publishers.models import CallbackTemplate, Publisher
from tracking.models import (
    Campaign,
    Click,
    ClickDeadLetter,
    ClickRejection,
    Conversion,
    ConversionRefusal,
)
from tracking.selectors.reports import local_day_range

# --- Conversion log -------------------------------------------------------------------------


# Newest first; public ids are unique, so they break ties.
CONVERSION_LOG = Keyset("created_at", "public_id", descending=True)


SPID_MATCHES = {"exact": "is exactly", "prefix": "starts with", "contains": "contains"}
CONVERSION_GROUPS = {
    "day": "Day",
    "hour": "Hour",
    "campaign": "Campaign",
    "country": "Country",
    "device": "Device",
    "spid": "spid",
}
# Groups with a place for every period: a day or hour without conversions is a zero row.
TIME_GROUPS = ("day", "hour")
# Rows of one grouped view at most (spids are many; days and hours are bounded by the form).
GROUPS_MAX_ROWS = 1000
# The refused conversions listed on one page (newest first; the CSV has them all).
REFUSALS_SHOWN = 100


@dataclass(frozen=True)
class ConversionFilters:
    """What the conversion log, its groups and its CSV are narrowed to. Dates are calendar
    days in `tz`, both inclusive."""

    spid: str = ""
    spid_match: str = "exact"
    click_id: str = ""
    txn_id: str = ""
    status: str = ""
    event: str = ""
    start: date | None = None
    end: date | None = None
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.spid_match not in SPID_MATCHES:
            raise ValueError(f"Unknown spid match {self.spid_match!r}.")


def _spid_condition(field: str, filters: ConversionFilters) -> Q:
    if filters.spid_match == "prefix":
        return Q(**{f"{field}__startswith": filters.spid})
    if filters.spid_match == "contains":
        return Q(**{f"{field}__contains": filters.spid})
    return Q(**{field: filters.spid})


def _narrowed(
    queryset: QuerySet, filters: ConversionFilters, *, spid_field: str, click_id_field: str
) -> QuerySet:
    """`queryset` narrowed by what conversions and refused conversions share: spid, click id,
    transaction id (a part of one finds it: advertisers' ids often carry prefixes), event and
    days."""
    if filters.spid:
        queryset = queryset.filter(_spid_condition(spid_field, filters))
    if filters.click_id:
        queryset = queryset.filter(**{click_id_field: filters.click_id})
    if filters.txn_id:
        queryset = queryset.filter(txn_id__contains=filters.txn_id)
    if filters.event:
        queryset = queryset.filter(event=filters.event)
    if filters.start:
        begin = local_day_range(filters.start, filters.start, filters.tz)[0]
        queryset = queryset.filter(created_at__gte=begin)
    if filters.end:
        queryset = queryset.filter(
            created_at__lt=local_day_range(filters.end, filters.end, filters.tz)[1]
        )
    return queryset


def conversions_matching(publisher: Publisher, filters: ConversionFilters) -> QuerySet:
    """The publisher's conversions narrowed by `filters`: what the log lists, groups and
    exports."""
    conversions = Conversion.objects.filter(publisher=publisher)
    if filters.spid:
        # Through the click's (publisher, spid) index (a prefix or part of a spid scans the
        # publisher's clicks in the chosen days).
        conversions = conversions.filter(click__publisher=publisher)
    if filters.status:
        conversions = conversions.filter(status=filters.status)
    return _narrowed(
        conversions, filters, spid_field="click__spid", click_id_field="click__click_id"
    )


def conversion_log(
    publisher: Publisher,
    filters: ConversionFilters | None = None,
    *,
    cursor: str = "",
    limit: int = 50,
) -> tuple[list[Conversion], str]:
    """One page of conversions, newest first, and the cursor of the next page ("" at the end).

    Keyset pagination on (created_at, public_id) walks the (publisher, created_at) index, so
    page 1,000 costs what page 1 does; an offset would read every skipped row.
    """
    conversions = conversions_matching(publisher, filters or ConversionFilters())
    page = CONVERSION_LOG.page(
        conversions.select_related("click", "campaign").prefetch_related(
            Prefetch("postbacks", queryset=Postback.objects.order_by("created_at", "pk"))
        ),
        cursor=cursor,
        limit=limit,
    )
    return page.items, page.next_if_more


def conversions_export(
    publisher: Publisher, filters: ConversionFilters, *, chunk: int = 2000
) -> Iterator[Conversion]:
    """Every conversion the filters match, newest first, read in chunks (a server-side cursor
    would hold a transaction open while a slow client downloads)."""
    cursor = ""
    while True:
        page, cursor = conversion_log(publisher, filters, cursor=cursor, limit=chunk)
        yield from page
        if not cursor:
            return


@dataclass
class ConversionGroup:
    key: object
    label: str
    # Conversions by status (every status present, zeros included).
    statuses: dict[str, int]
    # Approved conversions' payout per currency, never added across currencies.
    payouts: dict[str, Decimal]

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


@dataclass
class ConversionGroups:
    group_by: str
    rows: list[ConversionGroup]
    currencies: list[str]
    truncated: bool = False


def _period_keys(group_by: str, filters: ConversionFilters) -> list:
    zone = ZoneInfo(filters.tz)
    days = []
    day = filters.start
    while day is not None and filters.end is not None and day <= filters.end:
        days.append(day)
        day += timedelta(days=1)
    if group_by == "day":
        return days
    hours = []
    if days:
        moment, finish = local_day_range(days[0], days[-1], filters.tz)
        while moment < finish:
            # Local hours as the database truncates them (a DST day has 23 or 25).
            local = moment.astimezone(zone).replace(minute=0, second=0, microsecond=0)
            if not hours or hours[-1] != local:
                hours.append(local)
            moment += timedelta(hours=1)
    return hours


def conversion_groups(
    publisher: Publisher, filters: ConversionFilters, group_by: str
) -> ConversionGroups:
    """Conversions matching `filters` counted per `group_by` and status, with approved payouts
    per currency. Day and hour groups list every period of [start, end], zeros included (the
    caller gives both dates); others list what was found, most conversions first."""
    if group_by not in CONVERSION_GROUPS:
        raise ValueError(f"Unknown grouping {group_by!r}.")
    zone = ZoneInfo(filters.tz)
    column = {
        "day": TruncDate("created_at", tzinfo=zone),
        "hour": TruncHour("created_at", tzinfo=zone),
        "campaign": F("campaign_id"),
        "country": F("click_country"),
        "device": F("click__device"),
        "spid": F("click__spid"),
    }[group_by]
    conversions = conversions_matching(publisher, filters).annotate(group=column)
    statuses = [value for value, _ in Conversion.Status.choices]
    rows: dict[object, ConversionGroup] = {}
    currencies: set[str] = set()

    def row_for(key: object) -> ConversionGroup:
        if key not in rows:
            rows[key] = ConversionGroup(key, "", dict.fromkeys(statuses, 0), {})
        return rows[key]

    truncated = False
    if group_by in TIME_GROUPS:
        for key in _period_keys(group_by, filters):
            row_for(key)
    else:
        # The groups with most conversions, one query; then only theirs are counted.
        top = list(
            conversions.values("group")
            .annotate(n=Count("pk"))
            .order_by("-n", "group")[: GROUPS_MAX_ROWS + 1]
        )
        truncated = len(top) > GROUPS_MAX_ROWS
        conversions = conversions.filter(group__in=[t["group"] for t in top[:GROUPS_MAX_ROWS]])
    found = (
        conversions.values("group", "status", "currency")
        .annotate(n=Count("pk"), paid=Sum("payout", filter=Q(status=Conversion.Status.APPROVED)))
        .order_by()
    )
    for item in found:
        key = item["group"]
        if group_by == "hour":
            key = key.astimezone(zone)
        row = row_for(key)
        row.statuses[item["status"]] = row.statuses.get(item["status"], 0) + item["n"]
        if item["paid"] is not None:
            currencies.add(item["currency"])
            row.payouts[item["currency"]] = (
                row.payouts.get(item["currency"], Decimal(0)) + item["paid"]
            )
    result = list(rows.values())
    if group_by in TIME_GROUPS:
        result.sort(key=lambda r: r.key)
    else:
        result.sort(key=lambda r: (-r.total, str(r.key)))
    _label_groups(result, group_by, publisher)
    return ConversionGroups(group_by, result, sorted(currencies), truncated)


def _label_groups(rows: list[ConversionGroup], group_by: str, publisher: Publisher) -> None:
    if group_by == "campaign":
        campaigns = {
            pk: (public_id, name)
            for pk, public_id, name in Campaign.objects.filter(
                pk__in=[r.key for r in rows], conversions__publisher=publisher
            )
            .distinct()
            .values_list("pk", "public_id", "name")
        }
        for row in rows:
            row.key, row.label = campaigns.get(row.key, ("", "(deleted)"))
        return
    for row in rows:
        if group_by == "day":
            row.label = row.key.isoformat()
        elif group_by == "hour":
            row.label = row.key.strftime("%Y-%m-%d %H:00")
        else:
            row.label = row.key if row.key else "(none)"


def conversion_refusals(
    publisher: Publisher, filters: ConversionFilters, *, limit: int | None = REFUSALS_SHOWN
) -> QuerySet:
    """Conversions the intake refused (ConversionRefusal), newest first, narrowed by the
    filters that apply to them (spid, click id, transaction id, event, days)."""
    refusals = _narrowed(
        ConversionRefusal.objects.filter(publisher=publisher),
        filters,
        spid_field="spid",
        click_id_field="click_id",
    ).select_related("campaign")
    refusals = refusals.order_by("-created_at", "-pk")
    return refusals[:limit] if limit else refusals


# --- Spid trace -----------------------------------------------------------------------------


@dataclass
class Trace:
    query: str
    clicks: list[Click]
    conversions: list[Conversion]
    # Conversion pk -> its postbacks (each with `attempt_log` prefetched, oldest first).
    postbacks: dict[int, list[Postback]]
    truncated: bool = False

    @property
    def found(self) -> bool:
        return bool(self.clicks)


def trace(publisher: Publisher, query: str, *, limit: int = 50) -> Trace:
    """Everything that happened to a spid (or to one click, conversion or postback id): its
    clicks, their conversions, and every postback with every attempt."""
    # A spid is matched exactly as the publisher sent it, spaces included; our own ids never
    # hold spaces, so a pasted one is trimmed.
    an_id = query.strip()
    clicks_of = Click.objects.filter(publisher=publisher).select_related("campaign", "creative")

    def newest(clicks) -> list[Click]:
        return list(clicks.order_by("-created_at", "-pk")[: limit + 1]) if query else []

    found = []
    if an_id.startswith("cnv_"):
        found = newest(clicks_of.filter(conversions__public_id=an_id))
    elif an_id.startswith("evt_"):
        found = newest(clicks_of.filter(conversions__postbacks__event_id=an_id))
    if not found:
        # A spid may look like an id ("cnv_…" is a fine spid): what no id matched is a spid.
        # Two indexed probes: (publisher, spid) and the unique click_id.
        found = newest(clicks_of.filter(Q(spid=query) | Q(click_id=an_id)))
    truncated = len(found) > limit
    found = found[:limit]
    conversions = list(
        Conversion.objects.filter(publisher=publisher, click__in=found)
        .select_related("campaign", "click")
        .order_by("-created_at", "-pk")
    )
    postbacks: dict[int, list[Postback]] = {}
    for postback in (
        Postback.objects.filter(publisher=publisher, conversion__in=conversions)
        .select_related("template")
        .prefetch_related(
            Prefetch("attempt_log", queryset=PostbackAttempt.objects.order_by("number"))
        )
        .order_by("created_at", "pk")
    ):
        postbacks.setdefault(postback.conversion_id, []).append(postback)
    return Trace(query, found, conversions, postbacks, truncated)


# --- Clicks refused or set aside ------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    reason: str  # the ClickRejection.Reason code
    label: str  # the reason as a sentence
    clicks: int


@dataclass(frozen=True)
class ClickRefusals:
    """Clicks of a publisher's links that were not stored as sent, on UTC days
    [since, until]."""

    since: date
    until: date
    refused: list[Refusal]  # refused at the edge, most first
    set_aside: int  # stored clicks the database refused (dead letters; staff are alerted)


def click_refusals(
    publisher: Publisher, *, since: date, until: date | None = None
) -> ClickRefusals:
    until = until or datetime.now(UTC).date()
    counts = (
        ClickRejection.objects.filter(publisher=publisher, day__gte=since, day__lte=until)
        .values("reason")
        .annotate(clicks=Sum("count"))
        .order_by("-clicks", "reason")
    )
    labels = dict(ClickRejection.Reason.choices)
    return ClickRefusals(
        since=since,
        until=until,
        refused=[
            Refusal(row["reason"], labels.get(row["reason"], row["reason"]), row["clicks"])
            for row in counts
        ],
        set_aside=ClickDeadLetter.objects.filter(
            publisher_id=publisher.pk, created_at__date__gte=since, created_at__date__lte=until
        ).count(),
    )


# --- Callback health ------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackHealth:
    """What a callback's deliveries look like now: `state` is "healthy" (its latest tried
    postback was delivered, or none was tried yet), "failing" (that one is retrying or failed),
    "paused" (paused by the publisher) or "held" (paused by endpoint health or a 410); while
    paused or held, `held` postbacks wait for a resume."""

    state: str
    held: int = 0
    retrying: int = 0


def callback_health(publisher: Publisher, template_ids: list[int]) -> dict[int, CallbackHealth]:
    """Health of each of the publisher's callbacks in `template_ids`, by template id."""
    templates = CallbackTemplate.objects.filter(publisher=publisher, pk__in=template_ids)
    postbacks = Postback.objects.filter(publisher=publisher, template_id__in=template_ids)
    waiting = dict(
        postbacks.filter(status=Postback.Status.PENDING)
        .values_list("template_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    retrying = dict(
        postbacks.filter(status=Postback.Status.PENDING, attempts__gt=0)
        .values_list("template_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    latest_tried = (
        Postback.objects.filter(template=OuterRef("pk"), attempts__gt=0)
        .order_by("-created_at", "-pk")
        .values("status")[:1]
    )
    health = {}
    for pk, paused_at, paused_reason, latest in templates.annotate(
        latest=Subquery(latest_tried)
    ).values_list("pk", "paused_at", "paused_reason", "latest"):
        if paused_at is not None:
            manual = paused_reason == CallbackTemplate.PausedReason.MANUAL
            state = "paused" if manual else "held"
        elif latest is not None and latest != Postback.Status.SUCCEEDED:
            state = "failing"
        else:
            state = "healthy"
        health[pk] = CallbackHealth(
            state,
            held=waiting.get(pk, 0) if state in ("held", "paused") else 0,
            retrying=retrying.get(pk, 0),
        )
    return health
