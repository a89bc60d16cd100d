"""Exactly one beat should run; two started by mistake must be harmless.

Two `celery beat` processes (the deploy unit's command, each with its own schedule file) fire
every periodic task twice as often, at the same moments, against one worker: the sweeper,
click-buffer flushes, rollup refreshes, partition maintenance and retention. Every periodic
task claims its rows atomically, so the work is done once: each postback is delivered exactly
once (no fault is injected, so there is no at-least-once duplicate either), each buffered click
becomes exactly one row, and the rollup counts every click once.
"""

import os
from collections import Counter
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone

from config.redis import get_redis
from postbacks.models import Postback, PostbackAttempt
from publishers.models import CallbackTemplate
from tests.chaos.infra import use_broker
from tests.e2e.processes import SCRIPTS_DIR, Service, stop_all, wait_until
from tests.multinode.cluster import unit_argv
from tracking import clickbuffer
from tracking.intelligence import unique_key
from tracking.models import Click, HourlyStat
from tracking.services import conversion_record

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CONVERSIONS = 200
BUFFERED_CLICKS = 1000
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"  # connection refused: every kick is lost


def process_env() -> dict[str, str]:
    """This suite's settings, database (pytest-django's) and broker, with every periodic task
    due every second."""
    from django.db import connection

    database = urlsplit(os.environ["DATABASE_URL"])._replace(
        path=f"/{connection.settings_dict['NAME']}"
    )
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database.geturl(),
        "TEST_CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PATH": f"{SCRIPTS_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "POSTBACKS_SWEEP_INTERVAL": "1",
        "CLICKS_BUFFER_FLUSH_INTERVAL": "1",
        "STATS_REFRESH_INTERVAL": "1",
        "CLICKS_PARTITIONS_INTERVAL": "1",
        "RETENTION_PRUNE_INTERVAL": "1",
        "CLICKS_RETENTION_DAYS": "30",
    }


@pytest.fixture
def two_beats(tmp_path, receiver):
    from config.celery import app

    with app.connection_for_write() as broker:
        for queue in ("celery", settings.POSTBACKS_QUEUE, settings.POSTBACKS_RETRY_QUEUE):
            broker.default_channel.queue_purge(queue)
    env = process_env()
    beats = []
    for name in ("beat-a", "beat-b"):
        schedule = str(tmp_path / f"{name}-schedule")
        argv = [
            schedule if part.startswith("/var/lib/roundtrip/") else part
            for part in unit_argv("roundtrip-beat")
        ]
        beats.append(Service(name, argv, env, tmp_path))
    worker_argv = unit_argv("roundtrip-worker", H=f"beats-{os.getpid()}")
    worker = Service(
        "worker", [*worker_argv, "--without-gossip", "--without-mingle"], env, tmp_path
    )
    services = [worker, *beats]
    try:
        worker.start()
        worker.wait_for_log(" ready.", timeout=60)
        yield services
    finally:
        stop_all(services)


def test_it_does_every_periodic_job_once_with_two_beats_running(
    two_beats, link, campaign, receiver
):
    worker, *beats = two_beats
    CallbackTemplate.objects.create(
        publisher=link.publisher, url_template=f"{receiver.base_url}/cb?e=[event_id]"
    )
    clicks = Click.objects.bulk_create(
        Click(link=link, publisher=link.publisher, campaign=campaign, spid=f"s{n}")
        for n in range(CONVERSIONS)
    )
    # The broker is unreachable while the conversions commit: no delivery task is sent, so
    # only the sweepers of the two beats can get these postbacks out.
    with use_broker(UNREACHABLE_BROKER):
        for click in clicks:
            conversion_record(advertiser=campaign.advertiser, click_id=click.click_id)
    assert Postback.objects.filter(attempts=0).count() == CONVERSIONS

    redis = get_redis()
    redis.delete(clickbuffer.STREAM)
    buffered = []
    for n in range(BUFFERED_CLICKS):
        click = Click(link=link, publisher=link.publisher, campaign=campaign, spid=f"b{n}")
        clickbuffer.click_buffer(click, unique_key=unique_key(None, f"b{n}", link.pk))
        buffered.append(click.click_id)

    for beat in beats:
        beat.start()
    wait_until(
        lambda: Postback.objects.filter(status=Postback.Status.SUCCEEDED).count() == CONVERSIONS,
        timeout=60,
        interval=0.5,
        what="every postback delivered",
    )
    wait_until(
        lambda: Click.objects.filter(click_id__in=buffered).count() == BUFFERED_CLICKS,
        timeout=60,
        interval=0.5,
        what="every buffered click flushed",
    )
    total_clicks = CONVERSIONS + BUFFERED_CLICKS
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)

    def rollup_clicks() -> int:
        return (
            HourlyStat.objects.filter(
                publisher=link.publisher, dimension="", hour__gte=hour - timedelta(hours=1)
            ).aggregate(n=Sum("clicks"))["n"]
            or 0
        )

    wait_until(
        lambda: rollup_clicks() == total_clicks,
        timeout=30,
        interval=0.5,
        what="the rollup to count every click",
    )

    # Let both beats fire every task a few more times, then look for doubled work.
    fired = {beat.name: 0 for beat in beats}

    def both_fired_again() -> bool:
        for beat in beats:
            beat.check_alive()
            fired[beat.name] = beat.log().count("Sending due task postbacks-sweep")
        return min(fired.values()) >= 5

    wait_until(both_fired_again, timeout=30, interval=0.5, what="both beats to sweep 5 times")
    for beat in beats:
        assert "Sending due task clicks-partitions" in beat.log()
        assert "Sending due task stats-refresh" in beat.log()
    worker.check_alive()

    arrivals = Counter(
        parse_qs(urlsplit(request.path).query)["e"][0] for request in receiver.requests
    )
    event_ids = set(Postback.objects.values_list("event_id", flat=True))
    assert set(arrivals) == event_ids
    assert max(arrivals.values()) == 1, [e for e, n in arrivals.items() if n > 1][:5]
    assert PostbackAttempt.objects.count() == CONVERSIONS
    doubled = (
        Click.objects.filter(click_id__in=buffered)
        .values("click_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not doubled.exists()
    assert rollup_clicks() == total_clicks
    assert "Traceback" not in worker.log(), worker.log_tail(60)
