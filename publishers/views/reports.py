"""Reports: group, filter, sort; the CSV export is the table on the screen, row for row."""

import csv

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import urlencode

from publishers.forms import ReportForm
from publishers.views.charts import daily_chart, ranking_chart
from publishers.views.common import chosen_timezone, csv_safe, member_view, today_in
from tracking import selectors as tracking_selectors
from tracking.selectors import REPORT_GROUPS, ReportParams

COLUMNS = [
    ("impressions", "Impressions"),
    ("clicks", "Clicks"),
    ("ctr", "CTR %"),
    ("unique_clicks", "Unique clicks"),
    ("bot_clicks", "Bot clicks"),
    ("conversions", "Conversions"),
    ("conversion_rate", "Conv. rate %"),
]
# Shown where the report has no impression data for the grouping (not zero: unknown).
UNKNOWN = "–"


def _columns(result: tracking_selectors.Report) -> list[tuple[str, str]]:
    """The table's columns: the counts, then one payout column per currency of the report
    (none without conversions), so amounts in two currencies are never added up."""
    return COLUMNS + [
        (f"payout:{currency}", f"Payout {currency}") for currency in result.currencies
    ]


def _format(row, column: str) -> str:
    if column.startswith("payout:"):
        return f"{row.payouts.get(column.removeprefix('payout:'), 0):.2f}"
    value = getattr(row, column)
    if column == "impressions":
        return UNKNOWN if value is None else str(value)
    if column == "ctr":
        if row.impressions is None or (row.impressions and row.smart_clicks is None):
            return UNKNOWN
        return "" if value is None else f"{value:.2f}"
    if column == "conversion_rate":
        return "" if value is None else f"{value:.2f}"
    return str(value)


@member_view
def reports(request: HttpRequest) -> HttpResponse:
    publisher = request.publisher
    tz = chosen_timezone(request)
    form = ReportForm(request.GET, publisher=publisher, today=today_in(tz), tz=tz)
    result = chart = ranking = None
    if form.is_valid():
        data = form.cleaned_data
        params = ReportParams(
            start=data["start"],
            end=data["end"],
            group_by=data["group_by"],
            tz=data["tz"],
            attribution=data["attribution"],
            filters=form.filters(),
            sort=data["sort"] or "key",
            descending=data["dir"] == "desc",
        )
        result = tracking_selectors.report(publisher, params)
        if request.GET.get("format") == "csv":
            return _csv(result, publisher.public_id)
        if params.group_by == "day":
            chart = daily_chart(
                tracking_selectors.days_filled(result.rows, params.start, params.end)
            )
        else:
            ranking = ranking_chart(result.rows)
    query = {k: v for k, v in form.data.items() if k not in ("sort", "dir", "format")}
    sort = (result.params.sort if result else "") or "key"
    direction = "desc" if result and result.params.descending else "asc"
    columns = _columns(result) if result else COLUMNS
    headers = []
    for column, label in [("key", None), *columns]:
        sort_column = "payout" if column.startswith("payout:") else column
        descending_next = not (sort == column and direction == "desc")
        headers.append(
            {
                "column": column,
                "label": label or REPORT_GROUPS.get(form.data.get("group_by"), "Group"),
                "url": "?"
                + urlencode(
                    {**query, "sort": sort_column, "dir": "desc" if descending_next else "asc"}
                ),
                "active": sort == sort_column,
                "direction": direction,
            }
        )
    table = []
    if result:
        for row in result.rows:
            table.append({"row": row, "cells": [_format(row, column) for column, _ in columns]})
    return render(
        request,
        "publishers/reports.html",
        {
            "nav": "reports",
            "form": form,
            "report": result,
            "chart": chart,
            "ranking": ranking,
            "group_label": REPORT_GROUPS.get(result.params.group_by, "") if result else "",
            "headers": headers,
            "table": table,
            "totals": [_format(result.totals, column) for column, _ in columns] if result else [],
            "csv_url": "?" + urlencode({**form.data, "format": "csv"}),
            "attributions": tracking_selectors.ATTRIBUTIONS,
            "definitions": tracking_selectors.DEFINITIONS,
        },
    )


def _csv(result: tracking_selectors.Report, publisher_code: str) -> HttpResponse:
    params = result.params
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    filename = f"roundtrip-report-{params.group_by}-{params.start}-{params.end}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    columns = _columns(result)
    group_label = REPORT_GROUPS[params.group_by]
    with_id = params.group_by in ("campaign", "creative")
    writer.writerow(
        [group_label] + ([f"{group_label} id"] if with_id else []) + [c[1] for c in columns]
    )
    for row in result.rows:
        writer.writerow(
            [csv_safe(row.label)]
            + ([row.key] if with_id else [])
            + [_format(row, column) for column, _ in columns]
        )
    writer.writerow(
        ["Total"] + ([""] if with_id else []) + [_format(result.totals, c) for c, _ in columns]
    )
    return response
