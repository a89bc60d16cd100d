"""The conversion log (each conversion, grouped, or refused; on screen or as CSV) and the spid
trace."""

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils.http import urlencode

from postbacks.values import format_amount
from publishers.forms import ConversionFilterForm
from publishers.views.common import (
    Echo,
    chosen_timezone,
    csv_safe,
    keyset_pager,
    member_view,
    today_in,
)
from tracking import selectors as tracking_selectors
from tracking.models import Conversion
from tracking.selectors import ConversionFilters


def postback_summary(postbacks: list) -> str:
    """One word for a conversion's postbacks: the worst state among them."""
    if not postbacks:
        return "none"
    states = {p.status for p in postbacks}
    for state in ("failed", "pending", "succeeded"):
        if state in states:
            return state
    return "none"


# Columns of the conversion CSV; times are in the page's time zone.
CSV_COLUMNS = [
    "time",
    "conversion_id",
    "click_id",
    "spid",
    "txn_id",
    "event",
    "campaign",
    "status",
    "reason",
    "payout",
    "currency",
    "postback",
]
REFUSAL_CSV_COLUMNS = [
    "first_refused",
    "last_refused",
    "attempts",
    "click_id",
    "click_time",
    "spid",
    "txn_id",
    "event",
    "campaign",
    "reason",
    "payout_asked",
    "currency_asked",
]
VIEWS = ("recorded", "refused")


def _local(moment: datetime, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")


def _stream(filename: str, header: list[str], rows: Iterable[list]) -> StreamingHttpResponse:
    writer = csv.writer(Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([csv_safe(v) if isinstance(v, str) else v for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _conversions_csv(request: HttpRequest, filters: ConversionFilters) -> StreamingHttpResponse:
    tz = filters.tz
    rows = (
        [
            _local(c.created_at, tz),
            c.public_id,
            c.click.click_id,
            c.click.spid,
            c.txn_id,
            c.event,
            c.campaign.name,
            c.status,
            c.reason,
            format_amount(c.payout),
            c.currency,
            postback_summary(list(c.postbacks.all())),
        ]
        for c in tracking_selectors.conversions_export(request.publisher, filters)
    )
    return _stream("roundtrip-conversions.csv", CSV_COLUMNS, rows)


def _refusals_csv(request: HttpRequest, filters: ConversionFilters) -> StreamingHttpResponse:
    tz = filters.tz
    rows = (
        [
            _local(r.created_at, tz),
            _local(r.last_refused_at, tz),
            r.attempts,
            r.click_id,
            _local(r.click_created_at, tz),
            r.spid,
            r.txn_id,
            r.event,
            r.campaign.name,
            r.reason,
            "" if r.payout is None else format_amount(r.payout),
            r.currency,
        ]
        for r in tracking_selectors.conversion_refusals(
            request.publisher, filters, limit=None
        ).iterator(chunk_size=2000)
    )
    return _stream("roundtrip-refused-conversions.csv", REFUSAL_CSV_COLUMNS, rows)


def _groups_csv(groups: tracking_selectors.ConversionGroups, tz: str) -> StreamingHttpResponse:
    statuses = [value for value, _ in Conversion.Status.choices]
    label = tracking_selectors.CONVERSION_GROUPS[groups.group_by]
    if groups.group_by in tracking_selectors.TIME_GROUPS:
        label = f"{label} ({tz})"
    header = [label, *statuses, "total", *(f"payout_{c}" for c in groups.currencies)]
    rows = (
        [
            row.label,
            *(row.statuses[s] for s in statuses),
            row.total,
            *(format_amount(row.payouts.get(c, Decimal(0))) for c in groups.currencies),
        ]
        for row in groups.rows
    )
    return _stream(f"roundtrip-conversions-by-{groups.group_by}.csv", header, rows)


@member_view
def conversions(request: HttpRequest) -> HttpResponse:
    tz = chosen_timezone(request)
    view = request.GET.get("view", "recorded")
    if view not in VIEWS:
        view = "recorded"
    form = ConversionFilterForm(request.GET or None, initial={"tz": tz})
    valid = form.is_valid()
    wants_csv = request.GET.get("format") == "csv"
    if wants_csv and not valid:
        # An export must be exactly what was asked for, never everything instead.
        errors = "; ".join(f"{field}: {' '.join(e)}" for field, e in form.errors.items())
        return HttpResponseBadRequest(f"Fix the filters first ({errors}).")
    filters = form.conversion_filters(today=today_in(tz)) if valid else ConversionFilters(tz=tz)
    group_by = form.cleaned_data.get("group_by", "") if valid else ""
    if view == "refused":
        if wants_csv:
            return _refusals_csv(request, filters)
        group_by = ""
    elif group_by:
        groups = tracking_selectors.conversion_groups(request.publisher, filters, group_by)
        if wants_csv:
            return _groups_csv(groups, tz)
    elif wants_csv:
        return _conversions_csv(request, filters)

    query = {k: v for k, v in request.GET.items() if k not in ("after", "format") and v}
    context = {
        "nav": "conversions",
        "form": form,
        "tz": tz,
        "view": view,
        "filters": filters,
        "group_by": group_by,
        "csv_url": "?" + urlencode({**query, "format": "csv"}),
        "view_urls": {
            name: "?" + urlencode({**{k: v for k, v in query.items() if k != "view"}, "view": name})
            for name in VIEWS
        },
        "definitions": tracking_selectors.DEFINITIONS,
        "statuses": [value for value, _ in Conversion.Status.choices],
    }
    if view == "refused":
        context["refusals"] = list(
            tracking_selectors.conversion_refusals(request.publisher, filters)
        )
        context["refusals_shown"] = tracking_selectors.REFUSALS_SHOWN
    elif group_by:
        for row in groups.rows:
            row.payout_cells = [row.payouts.get(c, Decimal(0)) for c in groups.currencies]
        context["groups"] = groups
        context["group_label"] = tracking_selectors.CONVERSION_GROUPS[group_by]
        context["periods"] = group_by in tracking_selectors.TIME_GROUPS
    else:
        cursor = request.GET.get("after", "")
        rows, next_cursor = tracking_selectors.conversion_log(
            request.publisher, filters, cursor=cursor
        )
        for row in rows:
            row.postback_state = postback_summary(list(row.postbacks.all()))
        context["rows"] = rows
        context.update(keyset_pager(query, cursor, next_cursor))
    return render(request, "publishers/conversions.html", context)


@member_view
def trace(request: HttpRequest) -> HttpResponse:
    # Exactly as typed: spids may begin or end with spaces (tracking.selectors.trace).
    query = request.GET.get("q", "")
    result = tracking_selectors.trace(request.publisher, query) if query else None
    for conversion in result.conversions if result else []:
        conversion.trace_postbacks = result.postbacks.get(conversion.pk, [])
    return render(
        request,
        "publishers/trace.html",
        {"nav": "trace", "q": query, "trace": result, "tz": chosen_timezone(request)},
    )
