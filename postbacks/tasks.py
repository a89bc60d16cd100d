"""Celery tasks: thin wrappers around the dispatcher and retention."""

from celery import shared_task
from django.conf import settings

from postbacks import dispatch, retention


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    time_limit=settings.POSTBACKS_TASK_TIME_LIMIT,
)
def dispatch_postbacks(lane: str = "first") -> int:
    """Claim and send batches of due postbacks of a lane; returns how many were claimed."""
    return dispatch.postbacks_dispatch(dispatch.Lane(lane)).claimed


@shared_task(ignore_result=True, expires=60, time_limit=120)
def sweep_due_postbacks() -> int:
    """Kick every lane with due rows: rows whose kick was lost (broker down at commit, Redis
    restarted), retries too far off for a countdown, and rows whose worker died (lease
    expired). At most one task per lane, however many rows."""
    return len(dispatch.kick_if_due())


@shared_task(ignore_result=True, expires=600, time_limit=900)
def prune_old_records() -> dict[str, int]:
    return retention.retention_prune()
