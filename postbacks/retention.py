"""Retention: delete old delivery history, clicks, activity-trail events and the advertisers'
log of intake answers, in bounded batches.

What is never pruned, whatever the settings: pending and failed postbacks and their attempts
(they wait for delivery or a replay), conversions, and clicks that converted (the conversion
keeps its click). A click is also kept for its campaign's whole attribution window, so a late
conversion still finds it. Each setting is a number of days; 0 keeps that kind of row forever.

Each run deletes at most `RETENTION_MAX_BATCHES` statements of `RETENTION_BATCH_SIZE` rows per
kind, oldest first (by primary key), so a run is short, its locks small, and a large backlog is
worked off over several runs of the beat task.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import DateTimeField, Exists, ExpressionWrapper, F, OuterRef, QuerySet
from django.utils import timezone

from postbacks.models import Postback, PostbackAttempt
from publishers.models import AuditEvent
from tracking.models import Click, Conversion, IntakeOutcome
from tracking.partitions import clicks_partitioned, in_default_partition

logger = logging.getLogger(__name__)


def delete_in_batches(queryset: QuerySet, *, batch_size: int, max_batches: int) -> int:
    """Delete the rows of `queryset` oldest first, `batch_size` per statement, at most
    `max_batches` statements. Returns how many rows of the queryset's model were deleted."""
    model = queryset.model
    deleted = 0
    for _ in range(max_batches):
        # Ordered by primary key: ids grow with time, so old rows come first from the index.
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        _, per_model = model.objects.filter(pk__in=ids).delete()
        deleted += per_model.get(model._meta.label, 0)
        if len(ids) < batch_size:
            break
    return deleted


def prunable_attempts(now: datetime, days: int) -> QuerySet:
    """Attempts older than `days` of postbacks that were delivered."""
    return PostbackAttempt.objects.filter(
        started_at__lt=now - timedelta(days=days), postback__status=Postback.Status.SUCCEEDED
    )


def prunable_postbacks(now: datetime, days: int) -> QuerySet:
    """Postbacks delivered more than `days` ago (their attempts go with them)."""
    return Postback.objects.filter(
        status=Postback.Status.SUCCEEDED, delivered_at__lt=now - timedelta(days=days)
    )


def prunable_clicks(now: datetime, days: int) -> QuerySet:
    """Clicks older than `days` and than their campaign's attribution window, that never
    converted."""
    clicks = (
        Click.objects.filter(created_at__lt=now - timedelta(days=days))
        .alias(
            window_end=ExpressionWrapper(
                F("created_at") + F("campaign__attribution_window"), output_field=DateTimeField()
            ),
            converted=Exists(Conversion.objects.filter(click=OuterRef("pk"))),
        )
        .filter(window_end__lt=now, converted=False)
    )
    if clicks_partitioned():
        # Whole days are retired by dropping their partitions (tracking.partitions, its own
        # beat task); row by row, only the strays of the default partition.
        clicks = in_default_partition(clicks)
    return clicks


def prunable_audit_events(now: datetime, days: int) -> QuerySet:
    """Activity-trail events older than `days`."""
    return AuditEvent.objects.filter(created_at__lt=now - timedelta(days=days))


def prunable_intake_outcomes(now: datetime, days: int) -> QuerySet:
    """Rows of the advertisers' log of intake answers older than `days` (the conversions
    themselves stay)."""
    return IntakeOutcome.objects.filter(created_at__lt=now - timedelta(days=days))


def retention_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete what the retention settings allow, in bounded batches. Returns rows deleted per
    kind ("attempts", "postbacks", "clicks", "audit", "intake_outcomes"); a kind whose setting is 0 is skipped."""
    now = now or timezone.now()
    limits = {
        "batch_size": settings.RETENTION_BATCH_SIZE,
        "max_batches": settings.RETENTION_MAX_BATCHES,
    }
    plan = {
        "attempts": (settings.POSTBACKS_ATTEMPT_RETENTION_DAYS, prunable_attempts),
        "postbacks": (settings.POSTBACKS_SUCCEEDED_RETENTION_DAYS, prunable_postbacks),
        "clicks": (settings.CLICKS_RETENTION_DAYS, prunable_clicks),
        "audit": (settings.AUDIT_RETENTION_DAYS, prunable_audit_events),
        "intake_outcomes": (settings.INTAKE_OUTCOME_RETENTION_DAYS, prunable_intake_outcomes),
    }
    deleted = {}
    for kind, (days, candidates) in plan.items():
        if days > 0:
            deleted[kind] = delete_in_batches(candidates(now, days), **limits)
    logger.info("Retention pruned %s", deleted)
    return deleted
