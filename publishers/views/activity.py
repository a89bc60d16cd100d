"""Activity: the publisher's audit trail, newest first, filtered by action."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from publishers.audit import audit_events_for_publisher
from publishers.models import AuditEvent
from publishers.views.common import chosen_timezone, keyset_pager, member_view

PAGE_SIZE = 50


@member_view
def activity(request: HttpRequest) -> HttpResponse:
    action = request.GET.get("action", "")
    if action not in AuditEvent.Action.values:
        action = ""
    cursor = request.GET.get("after", "")
    events, next_cursor = audit_events_for_publisher(
        request.publisher, action=action, cursor=cursor, limit=PAGE_SIZE
    )
    query = {"action": action} if action else {}
    return render(
        request,
        "publishers/activity.html",
        {
            "nav": "activity",
            "events": [{"event": e, "details": _details(e)} for e in events],
            "actions": AuditEvent.Action.choices,
            "action": action,
            **keyset_pager(query, cursor, next_cursor),
            "tz": chosen_timezone(request),
        },
    )


def _details(event: AuditEvent) -> list[tuple[str, str]]:
    """The event's details as (label, text) lines; an edit lists each field as from → to."""
    details = event.details or {}
    if "changed" in details:  # a callback edit, or a staff edit in the admin
        return [
            (name.replace("_", " "), _text(value))
            for name, value in details.items()
            if name != "changed"
        ] + [
            (name, f"{_text(change.get('from'))} → {_text(change.get('to'))}")
            for name, change in (details.get("changed") or {}).items()
        ]
    if "settings" in details:
        return [(name, _text(value)) for name, value in details["settings"].items()]
    return [
        (name.replace("_", " "), _text(value))
        for name, value in details.items()
        if value is not None
    ]


def _text(value: object) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)
