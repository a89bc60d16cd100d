"""Celery tasks for tracking: thin wrappers around services."""

from celery import shared_task
from django.conf import settings

from tracking import clickbuffer, partitions, rollups, smart


@shared_task(ignore_result=True, expires=5, time_limit=120)
def flush_click_buffer() -> int:
    """Copy buffered clicks into the database; keeps going while full batches come out."""
    return clickbuffer.clicks_flush_all()


@shared_task(ignore_result=True, expires=60, time_limit=300)
def refresh_stats() -> int:
    """Rebuild the dashboard rollup for recent and dirty hours (tracking.rollups)."""
    return rollups.stats_refresh()


@shared_task(ignore_result=True, expires=30, time_limit=120)
def flush_impressions() -> int:
    """Copy smart-ad impression counters from Redis into the table (tracking.smart)."""
    return smart.impressions_flush()


@shared_task(ignore_result=True, expires=600, time_limit=900)
def maintain_click_partitions() -> int:
    """Create the coming days' click partitions and retire expired days (tracking.partitions).
    Idempotent and serialised by an advisory lock, so a second beat is harmless."""
    if not partitions.clicks_partitioned():
        return 0
    created, report = partitions.partitions_maintain(retention_days=settings.CLICKS_RETENTION_DAYS)
    return len(created) + len(report.dropped) + len(report.compacted)
