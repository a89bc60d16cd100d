"""The conversion log and the spid trace."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from publishers.forms import ConversionFilterForm
from publishers.views.common import chosen_timezone, keyset_pager, member_view
from tracking import selectors as tracking_selectors


def postback_summary(postbacks: list) -> str:
    """One word for a conversion's postbacks: the worst state among them."""
    if not postbacks:
        return "none"
    states = {p.status for p in postbacks}
    for state in ("failed", "pending", "succeeded"):
        if state in states:
            return state
    return "none"


@member_view
def conversions(request: HttpRequest) -> HttpResponse:
    tz = chosen_timezone(request)
    form = ConversionFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    cursor = request.GET.get("after", "")
    rows, next_cursor = tracking_selectors.conversion_log(
        request.publisher,
        spid=filters.get("spid", ""),
        click_id=filters.get("click_id", ""),
        status=filters.get("status", ""),
        event=filters.get("event", ""),
        start=filters.get("start"),
        end=filters.get("end"),
        tz=tz,
        cursor=cursor,
    )
    for row in rows:
        row.postback_state = postback_summary(list(row.postbacks.all()))
    query = {k: v for k, v in request.GET.items() if k != "after" and v}
    return render(
        request,
        "publishers/conversions.html",
        {
            "nav": "conversions",
            "form": form,
            "rows": rows,
            "tz": tz,
            **keyset_pager(query, cursor, next_cursor),
        },
    )


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
