"""Deliveries: failing and pending postbacks, and replay of one (delivered ones too: a
re-send), a selection or a range."""

import re

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from postbacks.models import Postback
from postbacks.waits import endpoint_waits
from publishers import selectors, services
from publishers.audit import Actor
from publishers.forms import RetryRangeForm
from publishers.views.common import chosen_timezone, keyset_pager, member_view, today_in
from tracking.selectors import local_day_range

# A selection is made on one page of the Deliveries list.
MAX_SELECTION = 100
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def delivery_state(postback: Postback) -> tuple[str, str]:
    """What a listed postback is doing, as a pill and a sentence: "failed" (given up),
    "held" (its callback is paused; the reason says by whom), "retrying" (tried, failed, tried
    again on schedule) or "waiting" (no attempt yet). Never "pending": it says too little."""
    template = postback.template
    if postback.status == Postback.Status.FAILED:
        return "failed", "Given up after the last retry; retry it by hand once the endpoint works."
    if template is not None and template.paused_at is not None:
        return (
            "held",
            f"{template.get_paused_reason_display()}: held until you resume the callback.",
        )
    if postback.attempts:
        return "retrying", f"Failed {postback.attempts} time(s); retried on schedule."
    return "waiting", "Waiting for its first attempt."


@member_view
def deliveries(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "failing")
    if state not in selectors.DELIVERY_STATES:
        state = "failing"
    cursor = request.GET.get("after", "")
    rows, next_cursor = selectors.deliveries(request.publisher, state=state, cursor=cursor)
    waits = endpoint_waits(publisher_id=request.publisher.pk)
    by_host = {w.host: w for w in waits}
    for row in rows:
        row.state, row.state_why = delivery_state(row)
        row.wait = by_host.get(row.host) if row.status == Postback.Status.PENDING else None
    tz = chosen_timezone(request)
    today = today_in(tz)
    templates = list(selectors.templates_for_publisher(request.publisher))
    return render(
        request,
        "publishers/deliveries.html",
        {
            "nav": "deliveries",
            "state": state,
            "rows": rows,
            "counts": selectors.delivery_counts(request.publisher),
            # Endpoint health paused these: their postbacks are held, not retried.
            "paused_templates": [t for t in templates if t.paused_at],
            "has_callbacks": bool(templates),
            **keyset_pager({"state": state, "tz": tz}, cursor, next_cursor),
            # Its endpoints that get no request now (slow, hanging, at their limit): their
            # postbacks wait, due, and go out oldest first once the endpoint has room.
            "waits": waits,
            "range_form": RetryRangeForm(
                initial={"start": today, "end": today, "states": ["failing"]}
            ),
            "tz": tz,
        },
    )


@require_POST
@member_view
def deliveries_retry(request: HttpRequest) -> HttpResponse:
    publisher = request.publisher
    # Validate everything before acting: an error answer must mean nothing was queued. The
    # page to go back to is one of ours, so the redirect stays short whatever was posted.
    state = request.POST.get("state", "failing")
    if state not in selectors.DELIVERY_STATES:
        state = "failing"
    tz = chosen_timezone(request)
    # Back to the page as it was: its tab and its time zone (the range was read in that zone).
    kept = {"tz": tz} if tz != "UTC" else {}
    back = reverse("deliveries") + "?" + urlencode({"state": state, **kept})
    wanted = set(request.POST.getlist("event_id"))
    if len(wanted) > MAX_SELECTION or not all(_EVENT_ID.fullmatch(e) for e in wanted):
        return HttpResponseBadRequest("Choose at most 100 postbacks from the Deliveries page.")
    if request.POST.get("scope") == "range":
        form = RetryRangeForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose a valid date range and at least one state.")
            return redirect(back)
        start, end = local_day_range(form.cleaned_data["start"], form.cleaned_data["end"], tz)
        states = form.cleaned_data["states"]
        matched, queued = services.postbacks_replay_range(
            publisher=publisher,
            start=start,
            end=end,
            condition=selectors.delivery_condition(states),
            details={
                "from": str(form.cleaned_data["start"]),
                "to": str(form.cleaned_data["end"]),
                "states": states,
                "tz": tz,
            },
            actor=Actor.dashboard(request),
        )
        _replay_message(request, queued)
        if matched > queued:
            messages.info(
                request,
                f"{matched - queued} more matched but were not queued (at most "
                f"{settings.POSTBACKS_REPLAY_MAX} per replay, none already being sent): "
                "run it again for more.",
            )
        return redirect(back)
    ids = selectors.postback_ids_for_publisher(publisher, sorted(wanted))
    if len(ids) != len(wanted):
        # Someone else's postback (or none at all): the same answer as for a missing one.
        raise Http404("No such postback.")
    scope = "one" if len(wanted) == 1 else "selection"
    # The ids a person picked by hand, a page at most: worth keeping.
    details = {"event_ids": sorted(wanted)[:100]}
    count = services.postbacks_replay(
        publisher=publisher,
        postback_ids=ids,
        scope=scope,
        details=details,
        actor=Actor.dashboard(request),
    )
    _replay_message(request, count)
    if scope == "one" and request.POST.get("back") == "trace":
        # The trace page's Retry / Re-send button: back to the postback's journey.
        return redirect(reverse("trace") + "?" + urlencode({"q": details["event_ids"][0], **kept}))
    return redirect(back)


def _replay_message(request: HttpRequest, count: int) -> None:
    if count:
        messages.success(request, f"{count} postback(s) queued for immediate delivery.")
    else:
        messages.info(request, "Nothing to retry.")
