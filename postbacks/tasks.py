"""Celery tasks: thin wrappers that take ids and call services."""

import logging

from celery import shared_task
from django.conf import settings

from postbacks import dispatch, retention, services

logger = logging.getLogger(__name__)


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    time_limit=settings.POSTBACKS_TASK_TIME_LIMIT,
)
def deliver_postback(postback_id: int) -> str | None:
    if settings.POSTBACKS_DISPATCH_MODE == "batch":
        # Sent by the sweeper and by replays: one batch of the retry lane (which takes any due
        # row, this one among them) goes through the per-host caps like everything else.
        dispatch.postbacks_dispatch(dispatch.Lane.RETRY)
        return None
    outcome = services.postback_deliver(postback_id)
    if outcome is None:
        return None
    # Short retries ride a Celery countdown (far below the broker's visibility timeout);
    # longer ones wait in the database for the sweeper.
    if (
        outcome.retry_in is not None
        and outcome.retry_in <= settings.POSTBACKS_MAX_COUNTDOWN_SECONDS
    ):
        try:
            deliver_postback.apply_async((postback_id,), countdown=outcome.retry_in)
        except Exception:
            logger.warning("Could not schedule retry of postback %s; the sweeper will", postback_id)
    return outcome.outcome


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    time_limit=settings.POSTBACKS_TASK_TIME_LIMIT,
)
def dispatch_postbacks(lane: str = "first") -> int:
    """Claim and send one batch of due postbacks of a lane (batch mode); returns how many."""
    return dispatch.postbacks_dispatch(dispatch.Lane(lane)).claimed


@shared_task(ignore_result=True, expires=60, time_limit=120)
def sweep_due_postbacks() -> int:
    sent = services.postbacks_sweep()
    if settings.POSTBACKS_DISPATCH_MODE == "batch":
        # Kicks lost with a Redis restart would otherwise leave due rows waiting for the
        # redispatch interval: a kick per lane with due rows is cheap and coalesced.
        dispatch.kick_if_due()
    return sent


@shared_task(ignore_result=True, expires=600, time_limit=900)
def prune_old_records() -> dict[str, int]:
    return retention.retention_prune()
