"""The outbox end to end: a conversion and its postbacks commit together, a dispatch is kicked
on commit, and the sweeper kicks whatever the broker never got. However many rows are due,
sweeps and replays publish a bounded number of tasks, never one per postback."""

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from postbacks import dispatch, tasks
from postbacks.dispatch import Lane, claim_batch
from postbacks.models import Postback
from publishers.services import postbacks_replay
from tests.chaos.infra import CeleryWorker, free_port, use_broker, wait_until
from tracking.models import Click, Conversion
from tracking.services import conversion_record


def broker_client() -> redis.Redis:
    return redis.Redis.from_url(django_settings.CELERY_BROKER_URL)


def queued_messages(client: redis.Redis) -> int:
    """Messages waiting in any queue of the broker's Redis database."""
    return sum(client.llen(key) for key in client.scan_iter() if client.type(key) == b"list")


@pytest.fixture
def broker():
    client = broker_client()
    client.flushdb()
    yield client
    client.flushdb()


def make_clicks(link, count: int) -> list[Click]:
    return Click.objects.bulk_create(
        Click(link=link, publisher=link.publisher, campaign=link.campaign, spid=f"spid-{n}")
        for n in range(count)
    )


@pytest.mark.django_db(transaction=True)
def test_it_delivers_every_postback_when_the_broker_was_down_at_intake(
    client, link, api_key, template, receiver, broker, settings
):
    clicks = make_clicks(link, 1000)
    closed_port = free_port()
    with use_broker(f"redis://127.0.0.1:{closed_port}/0"):
        for click in clicks:
            response = client.post(
                "/api/v1/conversions",
                {"click_id": click.click_id},
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {api_key}",
            )
            assert response.status_code == 201, response.content
    assert Postback.objects.filter(status=Postback.Status.PENDING).count() == 1000
    assert queued_messages(broker) == 0

    # A thousand due rows: the sweeper publishes a task per lane, not a task per row, and a
    # second sweep (nothing consumed yet) adds at most a coalesced wake-up.
    assert tasks.sweep_due_postbacks() == 1
    tasks.sweep_due_postbacks()
    assert 1 <= queued_messages(broker) <= 2

    with tempfile.TemporaryDirectory() as logs:
        worker = CeleryWorker(
            "outbox", broker_url=django_settings.CELERY_BROKER_URL, env={}, log_dir=Path(logs)
        )
        worker.start()
        try:
            wait_until(
                lambda: not Postback.objects.exclude(status=Postback.Status.SUCCEEDED).exists(),
                timeout=180,
                what="every postback to be delivered",
            )
        except AssertionError:
            print(worker.log_tail())
            raise
        finally:
            worker.kill()
    received = {request.headers["Roundtrip-Event-Id"] for request in receiver.requests}
    assert received == set(Postback.objects.values_list("event_id", flat=True))
    assert len(receiver.requests) == 1000


def test_it_creates_no_postback_for_a_rolled_back_conversion(
    link, campaign, template, django_capture_on_commit_callbacks
):
    (rolled_back, committed) = make_clicks(link, 2)

    class Abort(Exception):
        pass

    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(Abort),
        transaction.atomic(),
    ):
        outcome = conversion_record(advertiser=campaign.advertiser, click_id=rolled_back.click_id)
        assert len(outcome.postbacks) == 1  # created inside the transaction ...
        raise Abort
    # ... and gone with it, with no task to send.
    assert callbacks == []
    assert not Conversion.objects.exists() and not Postback.objects.exists()

    with django_capture_on_commit_callbacks() as callbacks:
        conversion_record(advertiser=campaign.advertiser, click_id=committed.click_id)
    assert len(callbacks) == 1
    assert Postback.objects.get().conversion.click_id == committed.pk


def make_postback(conversion_click, campaign, template, **fields) -> Postback:
    conversion = conversion_record(
        advertiser=campaign.advertiser, click_id=conversion_click.click_id
    ).conversion
    postback = conversion.postbacks.get()
    Postback.objects.filter(pk=postback.pk).update(**fields)
    postback.refresh_from_db()
    return postback


def test_a_replay_of_many_rows_publishes_a_bounded_number_of_tasks(
    link, campaign, template, publisher, broker, django_capture_on_commit_callbacks
):
    """Bug: a 10,000-row replay published 10,000 tasks that mostly claimed nothing."""
    postbacks = [
        make_postback(click, campaign, template, status=Postback.Status.FAILED, attempts=3)
        for click in make_clicks(link, 300)
    ]
    with django_capture_on_commit_callbacks(execute=True):
        queued = postbacks_replay(
            publisher=publisher, postback_ids=[p.pk for p in postbacks], scope="range"
        )
    assert queued == 300
    assert queued_messages(broker) == 1


def test_the_sweeper_kicks_a_claimed_row_once_its_lease_expires(link, campaign, template, broker):
    now = timezone.now()
    (click,) = make_clicks(link, 1)
    postback = make_postback(click, campaign, template, next_attempt_at=now)
    # A worker takes the row, then dies (no outcome is ever written).
    [claimed] = claim_batch(lane=Lane.FIRST, limit=10, now=now, lease=60)
    assert claimed.pk == postback.pk
    assert dispatch.kick_if_due(now=now + timedelta(seconds=30)) == []  # lease still live
    assert queued_messages(broker) == 0
    # Its first attempt never ended (nothing recorded): it is still a first attempt.
    assert dispatch.kick_if_due(now=now + timedelta(seconds=61)) == [Lane.FIRST]
    assert queued_messages(broker) == 1
