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

from postbacks import http, retry, signing
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
    conversion: "Conversion", *, click: "Click", now: datetime | None = None
) -> list[Postback]:
    """Create one postback per matching template for the conversion's current status.

    Must run inside the conversion's transaction; the delivery tasks are sent on commit.
    Clicks without a spid have nobody to call back.
    """
    from publishers.models import CallbackTemplate

    now = now or timezone.now()
    if not click.spid:
        return []
    templates = [
        template
        for template in CallbackTemplate.objects.filter(
            publisher_id=conversion.publisher_id, is_active=True
        )
        if template.matches(
            event=conversion.event, status=conversion.status, campaign_id=conversion.campaign_id
        )
    ]
    existing = set(
        Postback.objects.filter(
            conversion=conversion, conversion_status=conversion.status
        ).values_list("template_id", flat=True)
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
            next_attempt_at=now,
            created_at=now,
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
    due = [row.pk for row in rows if row.status == Postback.Status.PENDING]
    if due:
        transaction.on_commit(lambda: enqueue_deliveries(due))
    return rows


def enqueue_deliveries(postback_ids: "Iterable[int]") -> int:
    """Send one delivery task per id. A broker failure is logged, never raised: the sweeper
    finds the rows in the database and sends them later."""
    from postbacks.tasks import deliver_postback

    sent = 0
    for postback_id in postback_ids:
        try:
            deliver_postback.delay(postback_id)
            sent += 1
        except Exception:
            logger.exception("Could not enqueue postback %s; the sweeper will retry", postback_id)
            break
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
        .update(leased_until=now + lease, attempts=F("attempts") + 1)
    )
    if claimed != 1:
        return None
    return Postback.objects.filter(pk=postback_id).values_list("attempts", flat=True).get()


def signature_headers(postback: Postback, timestamp: int) -> dict[str, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(postback.url)
    path_qs = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    secrets = postback.publisher.active_signing_secrets()
    return {
        "User-Agent": settings.POSTBACKS_USER_AGENT,
        "Roundtrip-Event-Id": postback.event_id,
        "Roundtrip-Timestamp": str(timestamp),
        "Roundtrip-Signature": signing.signature_header(
            secrets, postback.event_id, timestamp, path_qs
        ),
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
        verdict = retry.classify_status(result.status_code)
    except http.DeliveryError as exc:
        error = exc
        verdict = retry.classify_error(exc.kind, exc.permanent)
    finished = timezone.now()

    retry_in: float | None = None
    if verdict is retry.Verdict.SUCCESS:
        outcome = PostbackAttempt.Outcome.SUCCESS
    elif verdict is retry.Verdict.STOP or (
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
        Postback.objects.filter(pk=postback_id, attempts=attempt_number).update(**changes)
        if verdict is retry.Verdict.STOP and result is not None and postback.template_id:
            # 410 Gone: the publisher retired this endpoint; stop calling it.
            type(postback.template).objects.filter(pk=postback.template_id).update(is_active=False)
    return DeliveryOutcome(postback_id, outcome, retry_in)


# --- Sweeper and replay ---------------------------------------------------------------------


def postbacks_due_ids(*, now: datetime, limit: int) -> list[int]:
    """Pending rows due for longer than the grace period, not held by a live lease."""
    grace = timedelta(seconds=settings.POSTBACKS_SWEEP_GRACE_SECONDS)
    return list(
        Postback.objects.filter(status=Postback.Status.PENDING, next_attempt_at__lte=now - grace)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def postbacks_sweep(
    *, now: datetime | None = None, enqueue: "Callable[[Iterable[int]], int] | None" = None
) -> int:
    """Send a task for every due postback (bounded per run). Returns how many were sent."""
    ids = postbacks_due_ids(now=now or timezone.now(), limit=settings.POSTBACKS_SWEEP_BATCH)
    if not ids:
        return 0
    sent = (enqueue or enqueue_deliveries)(ids)
    logger.info("Sweeper sent %d of %d due postbacks", sent, len(ids))
    return sent


def postbacks_retry(postback_ids: "Iterable[int]", *, now: datetime | None = None) -> int:
    """Make failed or waiting postbacks due now (admin, dashboard and API replay)."""
    now = now or timezone.now()
    ids = list(
        Postback.objects.filter(pk__in=list(postback_ids))
        .exclude(status=Postback.Status.SUCCEEDED)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .values_list("pk", flat=True)
    )
    if not ids:
        return 0
    Postback.objects.filter(pk__in=ids).update(
        status=Postback.Status.PENDING, next_attempt_at=now, leased_until=None
    )
    transaction.on_commit(lambda: enqueue_deliveries(ids))
    return len(ids)
