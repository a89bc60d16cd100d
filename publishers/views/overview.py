"""Overview: the period's numbers against the previous period, and a 30-day chart."""

from datetime import date, timedelta
from decimal import Decimal

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from publishers.views.common import chosen_timezone, member_view, today_in
from tracking import selectors as tracking_selectors

PERIODS = {
    "today": "Today",
    "yesterday": "Yesterday",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
}


def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard" if request.user.is_authenticated else "login")


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


def chart(days: list[dict], width: int = 760, height: int = 220) -> dict:
    """Geometry of an SVG chart: clicks as bars (left scale), conversions as a line (right
    scale). Computed here so the page needs no script and no charting library."""
    left, right, top, bottom = 44, 44, 12, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    max_clicks = max([d["clicks"] for d in days] + [1])
    max_conv = max([d["conversions"] for d in days] + [1])
    step = plot_w / max(len(days), 1)
    bars, points, labels = [], [], []
    for i, day in enumerate(days):
        bar_h = plot_h * day["clicks"] / max_clicks
        x = left + i * step
        bars.append(
            {
                "x": round(x + step * 0.15, 1),
                "y": round(top + plot_h - bar_h, 1),
                "w": round(step * 0.7, 1),
                "h": round(bar_h, 1),
                "title": f"{day['day']:%b %d}: {day['clicks']} clicks, "
                f"{day['conversions']} conversions",
            }
        )
        cx = x + step / 2
        cy = top + plot_h - plot_h * day["conversions"] / max_conv
        points.append((round(cx, 1), round(cy, 1)))
        if i % 5 == 0 or i == len(days) - 1:
            labels.append({"x": round(cx, 1), "text": f"{day['day']:%b %d}"})
    return {
        "width": width,
        "height": height,
        "plot": {"left": left, "top": top, "right": width - right, "bottom": top + plot_h},
        "bars": bars,
        "line": " ".join(f"{x},{y}" for x, y in points),
        "dots": [{"x": x, "y": y} for x, y in points],
        "labels": labels,
        "label_y": height - 8,
        "max_clicks": max_clicks,
        "max_conversions": max_conv,
    }


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
            "chart": chart(days),
            "refusals": tracking_selectors.click_refusals(publisher, since=start, until=end),
            "outcomes": tracking_selectors.conversion_outcomes(
                publisher, start=start, end=end, tz=tz
            ),
            "definitions": tracking_selectors.DEFINITIONS,
            "timezones": tracking_selectors.REPORT_TIMEZONES,
        },
    )
