"""Celery tasks: thin wrappers that take ids and call services."""

import logging

from celery import shared_task
from django.conf import settings

from postbacks import services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_postback(postback_id: int) -> str | None:
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


@shared_task(ignore_result=True, expires=60)
def sweep_due_postbacks() -> int:
    return services.postbacks_sweep()
