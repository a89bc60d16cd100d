"""Writes for postbacks: create them with a conversion, deliver one, sweep what is due.

The database is the source of truth and Celery only the trigger: rows are created in the
conversion's transaction, tasks are sent on commit, and the sweeper re-sends whatever is due
and was never sent, lost, or held by a worker that died (its lease expired).
"""

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from postbacks import health, http, metrics, retry, signing
from postbacks.models import Postback, PostbackAttempt
from postbacks.placeholders import TemplateError, expand_placeholders

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tracking.models import Click, Conversion

logger = logging.getLogger(__name__)


def format_amount(value: Decimal | None) -> str:
    """Money for a URL: at least two decimals, no trailing zeros beyond them.

    >>> format_amount(Decimal("1.500000")), format_amount(Decimal("0.125")), format_amount(None)
    ('1.50', '0.125', '')
    """
    if value is None:
        return ""
    text = f"{value:f}"
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"{whole}.{frac}"


def placeholder_values(
    conversion: "Conversion", click: "Click", event_id: str, now: datetime
) -> dict:
    campaign = conversion.campaign
    return {
        "spid": click.spid,
        "click_id": click.click_id,
        "conversion_id": conversion.public_id,
        "event_id": event_id,
        "event": conversion.event,
        "status": conversion.status,
        "payout": format_amount(conversion.payout),
        "currency": conversion.currency,
        "revenue": format_amount(conversion.revenue),
        "txn_id": conversion.txn_id,
        "campaign_id": campaign.public_id,
        "campaign": campaign.name,
        "creative_id": click.creative.public_id if click.creative_id else "",
        "placement": click.placement,
        "smart_ad_id": click.smart_ad_id,
        "keyword": click.keyword,
        "country": click.country,
        "device": click.device,
        "os": click.os,
        "browser": click.browser,
        "click_time": int(click.created_at.timestamp()),
        "conversion_time": int(conversion.created_at.timestamp()),
        "timestamp": int(now.timestamp()),
        "publisher_id": click.publisher.public_id,
    }


def postbacks_create_for_conversion(
    conversion: "Conversion",
    *,
    click: "Click",
    now: datetime | None = None,
    is_new: bool = False,
) -> list[Postback]:
    """Create one postback per matching template for the conversion's current status, unless
    the conversion has one already (`is_new`: created in this transaction, so it can't).

    Must run inside the conversion's transaction; the delivery tasks are sent on commit.
    Clicks without a spid have nobody to call back.
    """
    from publishers.models import CallbackTemplate

    now = now or timezone.now()
    if not click.spid:
        return []
    templates = [
        template
        for template in CallbackTemplate.objects.filter(publisher_id=conversion.publisher_id)
        if template.matches(
            event=conversion.event, status=conversion.status, campaign_id=conversion.campaign_id
        )
    ]
    existing = (
        set()
        if is_new
        else set(
            Postback.objects.filter(
                conversion=conversion, conversion_status=conversion.status
            ).values_list("template_id", flat=True)
        )
    )
    rows = []
    for template in templates:
        if template.pk in existing:
            continue
        postback = Postback(
            conversion=conversion,
            template=template,
            publisher_id=conversion.publisher_id,
            conversion_status=conversion.status,
            # A paused template's postbacks are kept, held until it is resumed (whatever
            # paused it: a 410, endpoint health or the publisher).
            next_attempt_at=health.HELD_UNTIL if template.paused_at else now,
            created_at=now,
            # The task goes out on commit; the sweeper leaves the row to it (see enqueue_deliveries).
            dispatched_at=now,
        )
        try:
            postback.url = expand_placeholders(
                template.url_template, placeholder_values(conversion, click, postback.event_id, now)
            )
        except TemplateError as exc:
            # Kept (and visible) as a failed postback rather than silently skipped.
            postback.url = template.url_template
            postback.status = Postback.Status.FAILED
            postback.last_error = str(exc)
        rows.append(postback)
    Postback.objects.bulk_create(rows)
    due = [
        row.pk
        for row in rows
        if row.status == Postback.Status.PENDING and row.next_attempt_at <= now
    ]
    if due:
        transaction.on_commit(lambda: enqueue_new_deliveries(due))
    return rows


def enqueue_new_deliveries(postback_ids: "list[int]") -> int:
    """On commit of new postbacks: in batch mode one coalesced "kick" for the first-attempt
    lane (a task per conversion would cap intake and delivery at Celery's ~1 k tasks/s),
    otherwise one task per postback."""
    if settings.POSTBACKS_DISPATCH_MODE != "batch":
        return enqueue_deliveries(postback_ids)
    from postbacks import dispatch

    if dispatch.kick(dispatch.Lane.FIRST):
        return len(postback_ids)
    # Nothing reached the broker: the sweeper sends these rows without waiting.
    Postback.objects.filter(pk__in=postback_ids).update(dispatched_at=None)
    return 0


# One immediate reconnect (a pooled connection may be stale after a Redis restart), then give
# up: with the broker down Celery's default policy adds ~0.6 s to every conversion request
# (and `retry=False` ~6 s, redis-py's own backoff), while the sweeper covers a failed send.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}


def enqueue_deliveries(postback_ids: "Iterable[int]") -> int:
    """Send one delivery task per id. A broker failure is logged, never raised: the rows it
    could not send are marked undispatched, so the next sweep sends them."""
    from postbacks.tasks import deliver_postback

    ids = list(postback_ids)
    sent = 0
    for postback_id in ids:
        try:
            deliver_postback.apply_async((postback_id,), retry_policy=PUBLISH_RETRY_POLICY)
            sent += 1
        except Exception:
            logger.exception("Could not enqueue postback %s; the sweeper will retry", postback_id)
            break
    if sent < len(ids):
        Postback.objects.filter(pk__in=ids[sent:]).update(dispatched_at=None)
    return sent


# --- Delivery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryOutcome:
    postback_id: int
    outcome: str  # PostbackAttempt.Outcome
    retry_in: float | None = None


def _claim(postback_id: int, now: datetime) -> int | None:
    """Take the row for one attempt (compare-and-swap). Returns the attempt number, or None
    when the row is not due, already delivered, or held by another worker's live lease."""
    lease = timedelta(seconds=settings.POSTBACKS_LEASE_SECONDS)
    # A countdown task may fire a hair before next_attempt_at; a second of slack avoids
    # leaving such a row to the sweeper.
    claimed = (
        Postback.objects.filter(
            pk=postback_id,
            status=Postback.Status.PENDING,
            next_attempt_at__lte=now + timedelta(seconds=1),
        )
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        # A paused template's postbacks wait for it to be resumed (postbacks/health.py).
        .exclude(template__paused_at__isnull=False)
        # The task that brought us here is consumed: clearing dispatched_at lets the sweeper
        # send a new one as soon as this lease expires, should this worker die.
        .update(leased_until=now + lease, attempts=F("attempts") + 1, dispatched_at=None)
    )
    if claimed != 1:
        return None
    return Postback.objects.filter(pk=postback_id).values_list("attempts", flat=True).get()


def signature_headers(postback: Postback, timestamp: int) -> dict[str, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(postback.url)
    path_qs = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return signed_headers(
        event_id=postback.event_id,
        path_qs=path_qs,
        secrets=postback.publisher.active_signing_secrets(),
        timestamp=timestamp,
    )


def signed_headers(
    *, event_id: str, path_qs: str, secrets: list[str], timestamp: int
) -> dict[str, str]:
    """Our headers for one request; the batch dispatcher calls this directly (no model)."""
    return {
        "User-Agent": settings.POSTBACKS_USER_AGENT,
        "Roundtrip-Event-Id": event_id,
        "Roundtrip-Timestamp": str(timestamp),
        "Roundtrip-Signature": signing.signature_header(secrets, event_id, timestamp, path_qs),
    }


def postback_deliver(
    postback_id: int, *, rng: random.Random | None = None
) -> DeliveryOutcome | None:
    """Make one delivery attempt if the row is due and free. Idempotent; safe to call twice."""
    now = timezone.now()
    attempt_number = _claim(postback_id, now)
    if attempt_number is None:
        return None
    postback = Postback.objects.select_related("publisher", "template").get(pk=postback_id)
    started_at = timezone.now()
    started = time.monotonic()
    result: http.DeliveryResult | None = None
    error: http.DeliveryError | None = None
    try:
        result = http.send_get(
            postback.url,
            headers=signature_headers(postback, int(time.time())),
            allow_private=settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS,
            connect_timeout=settings.POSTBACKS_CONNECT_TIMEOUT,
            total_timeout=settings.POSTBACKS_TOTAL_TIMEOUT,
            max_bytes=settings.POSTBACKS_MAX_RESPONSE_BYTES,
            excerpt_bytes=settings.POSTBACKS_EXCERPT_BYTES,
        )
    except http.DeliveryError as exc:
        error = exc
    finished = timezone.now()
    decision = attempt_decide(
        attempt_number=attempt_number,
        result=result,
        error=error,
        finished=finished,
        rng=rng,
        has_template=postback.template_id is not None,
    )
    outcome, retry_in, error_text = decision.outcome, decision.retry_in, decision.error_text

    with transaction.atomic():
        PostbackAttempt.objects.create(
            postback_id=postback_id,
            number=attempt_number,
            started_at=started_at,
            duration_ms=int((time.monotonic() - started) * 1000),
            url=postback.url,
            status_code=result.status_code if result else None,
            response_excerpt=result.body_excerpt if result else "",
            error_kind=error.kind if error else "",
            error=error_text,
            resolved_ip=(result.resolved_ip if result else error and error.resolved_ip) or None,
            outcome=outcome,
        )
        # Only the holder of the latest claim may write the row's state: if our lease ran out
        # and another worker claimed it, `attempts` moved on and this update matches nothing.
        current = Postback.objects.filter(pk=postback_id, attempts=attempt_number).update(
            **decision.changes
        )
        # A stale answer (the row was claimed again meanwhile) says nothing about the endpoint
        # now: it must not count toward health, nor pause the template on a late 410.
        if postback.template_id and current:
            health.endpoint_outcomes_record(
                {postback.template_id: health.Tally.of(decision.outcome)},
                gone={postback.template_id} if decision.gone else (),
                now=finished,
            )
    metrics.attempt_observe(outcome=outcome, duration_seconds=time.monotonic() - started)
    return DeliveryOutcome(postback_id, outcome, retry_in)


@dataclass(frozen=True)
class AttemptDecision:
    """What one attempt's answer (or error) means for its postback."""

    verdict: retry.Verdict
    outcome: str  # PostbackAttempt.Outcome
    retry_in: float | None  # seconds until the next attempt, when there is one
    error_text: str
    changes: dict  # Postback fields to write, guarded by the attempt number
    gone: bool  # 410: the template is paused too


def attempt_decide(
    *,
    attempt_number: int,
    result: http.DeliveryResult | None,
    error: http.DeliveryError | None,
    finished: datetime,
    rng: random.Random | None = None,
    has_template: bool = True,
) -> AttemptDecision:
    """Apply the retry policy to one attempt. Shared by `postback_deliver` and the batch
    dispatcher, so both paths retry, fail and succeed alike.

    A 410 Gone pauses the template (`gone`), and a pause holds rather than drops: the row
    stays pending on its schedule and the pause holds it until the template is resumed
    (should the pause not happen, the row is simply retried). Without a template (deleted)
    there is nothing to resume, and the 410 fails the row."""
    if result is not None:
        verdict = retry.classify_status(result.status_code)
    else:
        assert error is not None
        verdict = retry.classify_error(error.kind, error.permanent)
    gone = verdict is retry.Verdict.STOP and result is not None and has_template
    retry_in: float | None = None
    if verdict is retry.Verdict.SUCCESS:
        outcome = PostbackAttempt.Outcome.SUCCESS
    elif (verdict is retry.Verdict.STOP and not gone) or (
        verdict is retry.Verdict.LIMITED and attempt_number >= retry.LIMITED_MAX_ATTEMPTS
    ):
        outcome = PostbackAttempt.Outcome.FAILED
    else:
        retry_after = retry.parse_retry_after(result.retry_after if result else None, finished)
        retry_in = retry.retry_delay(
            attempt_number, settings.POSTBACKS_RETRY_SCHEDULE, rng=rng, retry_after=retry_after
        )
        outcome = (
            PostbackAttempt.Outcome.FAILED if retry_in is None else PostbackAttempt.Outcome.RETRY
        )

    error_text = error.message[:500] if error else ""
    if result and outcome != PostbackAttempt.Outcome.SUCCESS:
        error_text = f"HTTP {result.status_code}"
    changes: dict = {
        "leased_until": None,
        "last_status_code": result.status_code if result else None,
        "last_error": error_text,
    }
    if outcome == PostbackAttempt.Outcome.SUCCESS:
        changes |= {"status": Postback.Status.SUCCEEDED, "delivered_at": finished}
    elif outcome == PostbackAttempt.Outcome.FAILED:
        changes |= {"status": Postback.Status.FAILED}
    else:
        changes |= {"next_attempt_at": finished + timedelta(seconds=retry_in or 0)}
    return AttemptDecision(verdict, outcome, retry_in, error_text, changes, gone)


# --- Sweeper and replay ---------------------------------------------------------------------


def _due_for_sweep(now: datetime):
    grace = timedelta(seconds=settings.POSTBACKS_SWEEP_GRACE_SECONDS)
    redispatch = timedelta(seconds=settings.POSTBACKS_REDISPATCH_SECONDS)
    return (
        Postback.objects.filter(status=Postback.Status.PENDING, next_attempt_at__lte=now - grace)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=now - redispatch))
        .order_by("next_attempt_at")
    )


def postbacks_due_ids(*, now: datetime, limit: int) -> list[int]:
    """Pending rows due for longer than the grace period, not held by a live lease, and with
    no task sent for them within POSTBACKS_REDISPATCH_SECONDS."""
    return list(_due_for_sweep(now).values_list("pk", flat=True)[:limit])


def postbacks_sweep(
    *, now: datetime | None = None, enqueue: "Callable[[Iterable[int]], int] | None" = None
) -> int:
    """Send a task for every due postback (bounded per run). Returns how many were sent."""
    now = now or timezone.now()
    with transaction.atomic():
        # Marked before sending, under row locks that a concurrent sweep skips, so two sweeps
        # never send the same row and a backlog is sent once per redispatch interval.
        ids = list(
            _due_for_sweep(now)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[: settings.POSTBACKS_SWEEP_BATCH]
        )
        Postback.objects.filter(pk__in=ids).update(dispatched_at=now)
    if not ids:
        return 0
    sent = (enqueue or enqueue_deliveries)(ids)
    logger.info("Sweeper sent %d of %d due postbacks", sent, len(ids))
    return sent


def postbacks_retry(
    postback_ids: "Iterable[int]", *, now: datetime | None = None, publisher_id: int | None = None
) -> int:
    """Make postbacks due now (admin, dashboard and API replay): failed or waiting ones, and
    delivered ones too (a publisher whose own records were lost asks for them again). Each
    keeps its event id and gets a new attempt; it stays delivered (`delivered_at`) in the
    meantime only in the attempt log.

    With `publisher_id`, only that publisher's rows are touched. Postbacks held by a paused
    template are left alone: no worker may claim them until the template is resumed
    (`health.endpoint_resume` releases them), so making them due would only have the sweeper
    send tasks for them over and over.
    """
    now = now or timezone.now()
    rows = Postback.objects.filter(pk__in=list(postback_ids))
    if publisher_id is not None:
        rows = rows.filter(publisher_id=publisher_id)
    ids = list(
        rows.exclude(template__paused_at__isnull=False)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .values_list("pk", flat=True)
    )
    if not ids:
        return 0
    Postback.objects.filter(pk__in=ids).update(
        status=Postback.Status.PENDING, next_attempt_at=now, leased_until=None, dispatched_at=now
    )
    transaction.on_commit(lambda: enqueue_deliveries(ids))
    return len(ids)


# --- Test postbacks (dashboard "Send test postback", API) ----------------------------------

# What a test postback (and the dashboard's live preview) puts in each placeholder.
SAMPLE_VALUES: dict[str, str] = {
    "spid": "123456789",
    "click_id": "01kb2x7c3s8q4n6p9r1t5v7w9y",
    "conversion_id": "cnv_01kb2x9d4f6h8j0k2m4n6p8q0r",
    "event_id": "evt_01kb2x9d4f6h8j0k2m4n6p8q0s",
    "event": "conversion",
    "status": "approved",
    "payout": "2.50",
    "currency": "USD",
    "revenue": "4.00",
    "txn_id": "order-1001",
    "campaign_id": "01kb2w3a5c7e9g1j3l5n7q9s1u",
    "campaign": "Summer Sale",
    "creative_id": "01kb2w4b6d8f0h2k4m6p8r0t2w",
    "placement": "sidebar",
    "smart_ad_id": "1491",
    "keyword": "running shoes",
    "country": "DE",
    "device": "mobile",
    "os": "Android",
    "browser": "Chrome",
    "click_time": "1767225600",
    "conversion_time": "1767229200",
    "timestamp": "1767229201",
    "publisher_id": "01kb2v1z3x5v7t9r1p3n5l7j9g",
}


def postback_send_test(*, template, sample_values: dict | None = None) -> dict:
    """Fire one real, signed GET for a callback template now, with sample values, and report
    exactly what was sent and what came back. Nothing is stored; no conversion is involved.

    `template` is a `CallbackTemplate` (saved or not) whose `publisher` signs the request.
    Returns {"ok", "request": {method, url, headers}, "response": {...} | None,
    "error": {kind, message} | None}; "ok" means a 2xx answer. The request carries
    `Roundtrip-Test: 1` so a receiver can tell it from a real conversion.
    """
    from publishers.ids import new_event_id

    now = timezone.now()
    event_id = new_event_id()
    values = {
        **SAMPLE_VALUES,
        "event_id": event_id,
        "timestamp": str(int(now.timestamp())),
        "publisher_id": template.publisher.public_id,
        **(sample_values or {}),
    }
    from postbacks.placeholders import CALLBACK_PLACEHOLDERS, validate_template

    try:
        validate_template(template.url_template, CALLBACK_PLACEHOLDERS)
        url = expand_placeholders(template.url_template, values)
    except TemplateError as exc:
        return {
            "ok": False,
            "request": None,
            "response": None,
            "error": {"kind": "invalid_template", "message": str(exc)},
        }
    probe = Postback(publisher=template.publisher, url=url, event_id=event_id)
    headers = {**signature_headers(probe, int(now.timestamp())), "Roundtrip-Test": "1"}
    report: dict = {
        "ok": False,
        "request": {"method": "GET", "url": url, "headers": headers},
        "response": None,
        "error": None,
    }
    try:
        result = http.send_get(
            url,
            headers=headers,
            allow_private=settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS,
            connect_timeout=settings.POSTBACKS_CONNECT_TIMEOUT,
            total_timeout=settings.POSTBACKS_TOTAL_TIMEOUT,
            max_bytes=settings.POSTBACKS_MAX_RESPONSE_BYTES,
            excerpt_bytes=settings.POSTBACKS_EXCERPT_BYTES,
        )
    except http.DeliveryError as exc:
        report["error"] = {"kind": exc.kind, "message": exc.message}
        return report
    report["ok"] = 200 <= result.status_code < 300
    report["response"] = {
        "status_code": result.status_code,
        "duration_ms": result.duration_ms,
        "body_excerpt": result.body_excerpt,
        "resolved_ip": result.resolved_ip,
    }
    return report
