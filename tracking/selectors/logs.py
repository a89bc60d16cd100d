"""Reads for the conversion log (keyset pages) and the spid trace. Every read takes the publisher."""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.db.models import Count, OuterRef, Prefetch, Q, Subquery, Sum

from postbacks.models import Postback, PostbackAttempt
from publishers.keyset import Keyset
from publishers.models import CallbackTemplate, Publisher
from tracking.models import (
    Click,
    ClickDeadLetter,
    ClickRejection,
    Conversion,
)
from tracking.selectors.reports import local_day_range

# --- Conversion log -------------------------------------------------------------------------

# Newest first; public ids are unique, so they break ties.
CONVERSION_LOG = Keyset("created_at", "public_id", descending=True)


def conversion_log(
    publisher: Publisher,
    *,
    spid: str = "",
    click_id: str = "",
    status: str = "",
    event: str = "",
    start: date | None = None,
    end: date | None = None,
    tz: str = "UTC",
    cursor: str = "",
    limit: int = 50,
) -> tuple[list[Conversion], str]:
    """One page of conversions, newest first, and the cursor of the next page ("" at the end).

    Keyset pagination on (created_at, public_id) walks the (publisher, created_at) index, so
    page 1,000 costs what page 1 does; an offset would read every skipped row.
    """
    conversions = Conversion.objects.filter(publisher=publisher)
    if spid:
        # Through the click's (publisher, spid) index.
        conversions = conversions.filter(click__publisher=publisher, click__spid=spid)
    if click_id:
        conversions = conversions.filter(click__click_id=click_id)
    if status:
        conversions = conversions.filter(status=status)
    if event:
        conversions = conversions.filter(event=event)
    if start:
        conversions = conversions.filter(created_at__gte=local_day_range(start, start, tz)[0])
    if end:
        conversions = conversions.filter(created_at__lt=local_day_range(end, end, tz)[1])
    page = CONVERSION_LOG.page(
        conversions.select_related("click", "campaign").prefetch_related(
            Prefetch("postbacks", queryset=Postback.objects.order_by("created_at", "pk"))
        ),
        cursor=cursor,
        limit=limit,
    )
    return page.items, page.next_if_more


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
