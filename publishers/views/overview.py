"""Overview: the period's numbers against the previous period, and a 30-day chart."""

from datetime import date, timedelta
from decimal import Decimal

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from publishers import selectors as publishers_selectors
from publishers.views.charts import daily_chart
from publishers.views.common import chosen_timezone, member_view, today_in
from tracking import selectors as tracking_selectors

PERIODS = {
    "today": "Today",
    "yesterday": "Yesterday",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
}


def home(request: HttpRequest) -> HttpResponse:
    """Each kind of account to its own area: publishers' members to the dashboard, advertiser
    users to their portal."""
    if not request.user.is_authenticated:
        return redirect("login")
    return redirect(
        "advertiser_home" if publishers_selectors.is_advertiser_user(request.user) else "dashboard"
    )


def period_bounds(period: str, today: date) -> tuple[date, date]:
    if period == "today":
        return today, today
    if period == "yesterday":
        return today - timedelta(days=1), today - timedelta(days=1)
    days = 30 if period == "30d" else 7
    return today - timedelta(days=days - 1), today


def _change(current: float | None, previous: float | None) -> float | None:
    """Relative change in percent; None when there is nothing to compare with."""
    if current is None or not previous:
        return None
    return 100.0 * (current - previous) / previous


def _metric_values(current, previous) -> list[tuple]:
    """(key, label, kind, value, previous value) of each KPI: one payout per currency paid in
    either period, never a sum across currencies."""
    values = [
        (key, label, kind, getattr(current, key), getattr(previous, key))
        for key, label, kind in (
            ("clicks", "Clicks", "int"),
            ("unique_clicks", "Unique clicks", "int"),
            ("bot_clicks", "Bot clicks", "int"),
            ("conversions", "Conversions", "int"),
            ("conversion_rate", "Conversion rate", "pct"),
        )
    ]
    for currency in sorted(set(current.payouts) | set(previous.payouts)) or [""]:
        values.append(
            (
                f"payout_{currency}" if currency else "payout",
                f"Payout {currency}".strip(),
                "money",
                current.payouts.get(currency, Decimal(0)),
                previous.payouts.get(currency, Decimal(0)),
            )
        )
    values.append(
        (
            "postback_success_rate",
            "Postback success",
            "pct",
            current.postback_success_rate,
            previous.postback_success_rate,
        )
    )
    return values


@member_view
def dashboard(request: HttpRequest) -> HttpResponse:
    publisher = request.publisher
    tz = chosen_timezone(request)
    today = today_in(tz)
    period = request.GET.get("period", "7d")
    if period not in PERIODS:
        period = "7d"
    start, end = period_bounds(period, today)
    length = (end - start).days + 1
    previous_start, previous_end = start - timedelta(days=length), start - timedelta(days=1)
    current = tracking_selectors.period_summary(publisher, start=start, end=end, tz=tz)
    previous = tracking_selectors.period_summary(
        publisher, start=previous_start, end=previous_end, tz=tz
    )
    metrics = []
    for key, label, kind, now_value, before in _metric_values(current, previous):
        metrics.append(
            {
                "key": key,
                "label": label,
                "kind": kind,
                "value": now_value,
                "previous": before,
                "definition": tracking_selectors.DEFINITIONS.get(key, ""),
                "change": _change(
                    float(now_value) if now_value is not None else None,
                    float(before) if before is not None else None,
                ),
            }
        )
    days = tracking_selectors.daily_totals(
        publisher, start=today - timedelta(days=29), end=today, tz=tz
    )
    return render(
        request,
        "publishers/overview.html",
        {
            "nav": "overview",
            "periods": PERIODS,
            "period": period,
            "start": start,
            "end": end,
            "previous_start": previous_start,
            "previous_end": previous_end,
            "tz": tz,
            "metrics": metrics,
            "current": current,
            "chart": daily_chart(days),
            "refusals": tracking_selectors.click_refusals(publisher, since=start, until=end),
            "outcomes": tracking_selectors.conversion_outcomes(
                publisher, start=start, end=end, tz=tz
            ),
            "definitions": tracking_selectors.DEFINITIONS,
            "timezones": tracking_selectors.REPORT_TIMEZONES,
        },
    )
