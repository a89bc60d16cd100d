"""Writes for postbacks: create them with a conversion, replay them, send a test postback.

The database is the source of truth and Celery only the trigger: rows are created in the
conversion's transaction and a dispatch is kicked on commit; the beat sweeper kicks whatever
is due and was never sent, lost, or held by a worker that died (its lease expired).
"""

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from postbacks import dispatch, health, http
from postbacks.models import Postback
from postbacks.placeholders import (
    CALLBACK_PLACEHOLDERS,
    TemplateError,
    expand_placeholders,
    validate_template,
)
from publishers.ids import new_event_id

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tracking.models import Click, Conversion


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
    if any(row.status == Postback.Status.PENDING and row.next_attempt_at <= now for row in rows):
        # One coalesced kick of the first-attempt lane, not a task per postback (that would
        # cap intake and delivery at Celery's ~1 k tasks/s). Should it not reach the broker,
        # the beat sweeper kicks within POSTBACKS_SWEEP_INTERVAL.
        transaction.on_commit(lambda: dispatch.kick(dispatch.Lane.FIRST))
    return rows


# --- Replay ---------------------------------------------------------------------


def postbacks_retry(
    postback_ids: "Iterable[int]", *, now: datetime | None = None, publisher_id: int | None = None
) -> int:
    """Make postbacks due now (admin, dashboard and API replay): failed or waiting ones, and
    delivered ones too (a publisher whose own records were lost asks for them again). Each
    keeps its event id and gets a new attempt; it stays delivered (`delivered_at`) in the
    meantime only in the attempt log.

    With `publisher_id`, only that publisher's rows are touched. Postbacks held by a paused
    template are left alone: they wait for it to be resumed (`health.endpoint_resume`).
    However many rows, one coalesced kick of the retry lane goes out on commit: its dispatch
    tasks claim them in batches (a task per row would flood the queue).
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
        status=Postback.Status.PENDING, next_attempt_at=now, leased_until=None
    )
    transaction.on_commit(lambda: dispatch.kick(dispatch.Lane.RETRY))
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
    now = timezone.now()
    event_id = new_event_id()
    values = {
        **SAMPLE_VALUES,
        "event_id": event_id,
        "timestamp": str(int(now.timestamp())),
        "publisher_id": template.publisher.public_id,
        **(sample_values or {}),
    }
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
    parts = urlsplit(url)
    headers = {
        **dispatch.signed_headers(
            event_id=event_id,
            path_qs=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            secrets=template.publisher.active_signing_secrets(),
            timestamp=int(now.timestamp()),
        ),
        "Roundtrip-Test": "1",
    }
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
