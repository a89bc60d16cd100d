"""Reads for tracking: links and keys for the public endpoints (`endpoints`); reports and the
overview (`reports`); the conversion log and the spid trace (`logs`). Those for the dashboard
and the API always take the publisher."""

from tracking.selectors.endpoints import advertiser_for_key, link_for_click
from tracking.selectors.logs import (
    CallbackHealth,
    ClickRefusals,
    Trace,
    callback_health,
    click_refusals,
    conversion_log,
    trace,
)
from tracking.selectors.reports import (
    ATTRIBUTIONS,
    DEFINITIONS,
    REPORT_FILTERS,
    REPORT_GROUPS,
    REPORT_MAX_ROWS,
    REPORT_SORTS,
    REPORT_TIMEZONES,
    ConversionOutcome,
    PeriodSummary,
    Report,
    ReportParams,
    ReportRow,
    conversion_outcomes,
    daily_totals,
    hour_aligned,
    local_day_range,
    period_summary,
    report,
)

__all__ = [
    "ATTRIBUTIONS",
    "DEFINITIONS",
    "REPORT_FILTERS",
    "REPORT_GROUPS",
    "REPORT_MAX_ROWS",
    "REPORT_SORTS",
    "REPORT_TIMEZONES",
    "CallbackHealth",
    "ClickRefusals",
    "ConversionOutcome",
    "PeriodSummary",
    "Report",
    "ReportParams",
    "ReportRow",
    "Trace",
    "advertiser_for_key",
    "callback_health",
    "click_refusals",
    "conversion_log",
    "conversion_outcomes",
    "daily_totals",
    "hour_aligned",
    "link_for_click",
    "local_day_range",
    "period_summary",
    "report",
    "trace",
]
