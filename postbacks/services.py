"""The outbox's writes: create a conversion's postbacks, and make postbacks due again (replay).

The database is the source of truth and Celery only the trigger: rows are created in the
conversion's transaction and a dispatch is kicked on commit; the beat sweeper kicks whatever
is due and was never sent, lost, or held by a worker that died (its lease expired).
"""

from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from postbacks import dispatch, health, http
from postbacks.models import Postback
from postbacks.placeholders import (
    TemplateError,
    expand_placeholders,
    webhook_body,
)
from postbacks.values import placeholder_values
from publishers.models import CallbackTemplate, Publisher
from tracking.cache import ProcessCache

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tracking.models import Click, Conversion


def postbacks_create_for_conversion(
    conversion: "Conversion",
    *,
    click: "Click",
    now: datetime | None = None,
    is_new: bool = False,
    revision: int = 0,
) -> list[Postback]:
    """Create one postback per matching template for the conversion's current status, unless
    the conversion has one already (`is_new`: created in this transaction, so it can't). A
    JSON webhook template's postback also gets its body, built from the same values.
    `revision` > 0 announces the advertiser's correction number `revision` of the amounts:
    the status's postbacks go out again, with the corrected values and new event ids.

    Must run inside the conversion's transaction; the delivery tasks are sent on commit.
    Clicks without a spid have nobody to call back.
    """
    now = now or timezone.now()
    rows = postbacks_build_for_conversion(
        conversion, click=click, now=now, is_new=is_new, revision=revision
    )
    Postback.objects.bulk_create(rows)
    postbacks_kick_on_commit(rows, now=now)
    return rows


def postbacks_build_for_conversion(
    conversion: "Conversion",
    *,
    click: "Click",
    now: datetime,
    is_new: bool = False,
    revision: int = 0,
) -> list[Postback]:
    """The postbacks `postbacks_create_for_conversion` creates, built but not saved (the
    intake inserts a new conversion's together with it, in one statement). `conversion` may
    be unsaved too when `is_new`."""
    if not click.spid:
        return []
    templates = [
        template
        for template in publisher_templates(click.publisher)
        if template.matches(
            event=conversion.event, status=conversion.status, campaign_id=conversion.campaign_id
        )
    ]
    existing = (
        set()
        if is_new
        else set(
            Postback.objects.filter(
                conversion=conversion, conversion_status=conversion.status, revision=revision
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
            revision=revision,
            # A paused template's postbacks are kept, held until it is resumed (whatever
            # paused it: a 410, endpoint health or the publisher).
            next_attempt_at=health.HELD_UNTIL if template.paused_at else now,
            created_at=now,
        )
        values = placeholder_values(conversion, click, postback.event_id, now)
        if template.method == CallbackTemplate.Method.POST:
            # Frozen with the URL: a retry or a re-send POSTs the same bytes.
            postback.body = webhook_body(values, status=conversion.status, occurred_at=now)
        try:
            postback.url = expand_placeholders(template.url_template, values)
        except TemplateError as exc:
            # Kept (and visible) as a failed postback rather than silently skipped.
            postback.url = template.url_template
            postback.status = Postback.Status.FAILED
            postback.last_error = str(exc)
        postback.host = http.destination_host(postback.url)
        rows.append(postback)
    return rows


# {(publisher id, its callbacks_version): its templates}. No TTL is needed for correctness:
# a database trigger bumps the version whenever a template changes in what
# `postbacks_build_for_conversion` reads, and the intake's click lookup reads the version with
# the click. The TTL only lets entries of old versions go.
_TEMPLATE_CACHE = ProcessCache(10_000)


def publisher_templates(publisher: Publisher) -> "tuple[CallbackTemplate, ...]":
    """All of the publisher's callback templates, from the process's cache when it holds them
    for the publisher's current `callbacks_version` (read by the caller with the publisher),
    else in one query. Shared between requests: treat them as read-only."""

    def load() -> tuple[CallbackTemplate, ...]:
        return tuple(CallbackTemplate.objects.filter(publisher_id=publisher.pk))

    ttl = settings.CALLBACK_TEMPLATES_CACHE_SECONDS
    if ttl <= 0 or connection.vendor != "postgresql":
        return load()  # no trigger keeps the version outside PostgreSQL (migration 0012)
    return _TEMPLATE_CACHE.load((publisher.pk, publisher.callbacks_version), load, ttl=ttl)


def postbacks_kick_on_commit(rows: "Iterable[Postback]", *, now: datetime) -> None:
    """After saving `rows`: have them sent once the transaction commits (at once outside one)."""
    if any(row.status == Postback.Status.PENDING and row.next_attempt_at <= now for row in rows):
        # One coalesced kick of the first-attempt lane, not a task per postback (that would
        # cap intake and delivery at Celery's ~1 k tasks/s). Should it not reach the broker,
        # the beat sweeper kicks within POSTBACKS_SWEEP_INTERVAL.
        transaction.on_commit(lambda: dispatch.kick(dispatch.Lane.FIRST))


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
