"""The outbox end to end: a conversion and its postbacks commit together, the task goes out on
commit, and the sweeper sends whatever the broker never got, once per redispatch interval."""

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from postbacks import services
from postbacks.models import Postback
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
    # Every failed send was marked, so the sweeper does not wait a redispatch interval.
    assert not Postback.objects.filter(dispatched_at__isnull=False).exists()
    assert queued_messages(broker) == 0

    # Two sweeper periods with a batch smaller than the backlog send each row exactly once.
    settings.POSTBACKS_SWEEP_BATCH = 600
    period = timedelta(seconds=30)
    first = timezone.now() + timedelta(seconds=settings.POSTBACKS_SWEEP_GRACE_SECONDS + 1)
    assert services.postbacks_sweep(now=first) == 600
    assert services.postbacks_sweep(now=first + period) == 400
    # Nothing consumed them yet: a third period must not send the backlog again.
    assert services.postbacks_sweep(now=first + 2 * period) == 0
    assert queued_messages(broker) == 1000

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


def test_it_resends_a_backlog_only_after_the_redispatch_interval(
    link, campaign, template, broker, settings
):
    settings.POSTBACKS_REDISPATCH_SECONDS = 300
    now = timezone.now()
    # Sent on commit (dispatched_at set at creation), never consumed: a backlog.
    postbacks = [
        make_postback(click, campaign, template, next_attempt_at=now, dispatched_at=now)
        for click in make_clicks(link, 3)
    ]
    later = now + timedelta(seconds=settings.POSTBACKS_SWEEP_GRACE_SECONDS + 1)
    assert services.postbacks_sweep(now=later) == 0
    # The message may have been lost (Redis restarted): after the interval, one new send each.
    after_interval = now + timedelta(seconds=301)
    assert services.postbacks_sweep(now=after_interval) == 3
    assert services.postbacks_sweep(now=after_interval + timedelta(seconds=30)) == 0
    assert queued_messages(broker) == 3
    assert {p.dispatched_at for p in Postback.objects.filter(pk__in=[p.pk for p in postbacks])} == {
        after_interval
    }


def test_it_resends_a_claimed_row_as_soon_as_its_lease_expires(
    link, campaign, template, broker, settings
):
    now = timezone.now()
    (click,) = make_clicks(link, 1)
    postback = make_postback(click, campaign, template, next_attempt_at=now, dispatched_at=now)
    # A worker takes the row, then dies (no outcome is ever written).
    assert services._claim(postback.pk, now) == 1
    postback.refresh_from_db()
    assert postback.dispatched_at is None and postback.leased_until is not None
    assert services.postbacks_sweep(now=now + timedelta(seconds=30)) == 0  # lease still live
    expired = postback.leased_until + timedelta(seconds=1)
    assert expired - now < timedelta(seconds=settings.POSTBACKS_REDISPATCH_SECONDS)
    assert services.postbacks_sweep(now=expired) == 1
    assert queued_messages(broker) == 1
