"""/healthz, /readyz and /metrics against real PostgreSQL, Redis and worker processes."""

import math
import re
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from config import liveness
from postbacks import dispatch, fairness
from postbacks.dispatch import Lane
from postbacks.models import Postback
from tests.chaos.infra import REPO_ROOT, free_port, use_broker
from tracking.models import Click
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

TOKEN = "scrape-secret"


@pytest.fixture(autouse=True)
def metrics_token(settings):
    # Production refuses /metrics without a token (DEBUG is off here, as in production).
    settings.METRICS_BEARER_TOKEN = TOKEN


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {TOKEN}")
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_it_answers_healthz_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok\n")


@pytest.fixture(autouse=True)
def health_keys(settings):
    """Heartbeats of this test only (another test's, or a worker's, must not count)."""
    settings.HEALTH_REDIS_PREFIX = f"roundtrip:test-health-{free_port()}:"


def test_it_is_ready_when_database_and_broker_answer_and_worker_and_beat_live(client):
    liveness.worker_stamp("worker@test")
    liveness.beat_stamp()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {
            "database": "ok",
            "broker": "ok",
            "click_buffer": "ok",
            "workers": "ok",
            "beat": "ok",
        },
        # The buffer is on (as in production) and empty.
        "click_pipeline": {"buffered": 0, "dead_letters": 0, "oldest_buffered_seconds": 0.0},
    }
    samples = scrape(client)
    assert samples["roundtrip_workers_consuming", ()] == 1
    assert 0 <= samples["roundtrip_beat_heartbeat_age_seconds", ()] < 5


def test_it_stays_ready_but_degraded_without_a_worker_or_a_beat(client, settings):
    response = client.get("/readyz")
    assert response.status_code == 200  # the node serves clicks and intake all the same
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["workers"] == "no worker has consumed in the last 15 s"
    assert body["checks"]["beat"] == "no beat heartbeat recorded"
    samples = scrape(client)
    assert samples["roundtrip_workers_consuming", ()] == 0
    assert samples["roundtrip_beat_heartbeat_age_seconds", ()] == float("inf")


def test_it_counts_a_worker_out_after_three_missed_heartbeats_and_a_beat_past_its_limit(
    client, settings
):
    settings.WORKER_HEARTBEAT_SECONDS = 0.1
    settings.HEALTH_BEAT_MAX_AGE_SECONDS = 0.3
    liveness.worker_stamp("worker@test")
    liveness.beat_stamp()
    assert liveness.liveness_read().problems() == {"workers": None, "beat": None}
    time.sleep(0.5)
    checks = client.get("/readyz").json()["checks"]
    assert checks["workers"] == "no worker has consumed in the last 0.3 s"
    assert re.fullmatch(r"last beat heartbeat \d s ago \(limit 0.3 s\)", checks["beat"])


def test_a_warm_shutdown_removes_the_worker_at_once(client):
    liveness.worker_stamp("worker@a")
    liveness.worker_stamp("worker@b")
    liveness.worker_unstamp("worker@a")
    assert liveness.liveness_read().workers == 1


def test_it_is_not_ready_when_the_broker_is_down(client):
    with use_broker(f"redis://127.0.0.1:{free_port()}/0"):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert "refused" in body["checks"]["broker"].lower()


def test_it_exposes_counts_lag_attempts_and_breakers(client, link, campaign, template, settings):
    clicks = Click.objects.bulk_create(
        Click(link=link, publisher=link.publisher, campaign=campaign, spid=str(n)) for n in range(3)
    )
    for click in clicks:
        conversion_record(advertiser=campaign.advertiser, click_id=click.click_id)
    now = timezone.now()
    waiting, delivered, later = Postback.objects.order_by("pk")
    Postback.objects.filter(pk__in=[waiting.pk, later.pk]).update(
        next_attempt_at=now + timedelta(hours=1)
    )
    before = scrape(client)
    # The engine delivers the one due row (its per-attempt metrics are emitted by the
    # dispatcher; they once were only by the one-task-per-postback path).
    assert dispatch.drain(Lane.RETRY, wait=math.inf, kicks=False) == 1
    assert Postback.objects.get(pk=delivered.pk).status == "succeeded"
    Postback.objects.filter(pk=waiting.pk).update(next_attempt_at=now - timedelta(seconds=120))
    settings.POSTBACKS_REDIS_PREFIX = f"roundtrip:test-metrics-{free_port()}:"
    fairness.reset_gate()
    fairness.get_gate().settle(
        {"down.example": fairness.HostTally(failed=settings.POSTBACKS_BREAKER_FAILURES)}
    )

    after = scrape(client)
    fairness.reset_gate()
    assert after[("roundtrip_clicks_total", ())] == Click.objects.count() == 3
    assert after[("roundtrip_conversions_total", ())] == 3
    assert after[("roundtrip_postbacks_due", ())] == 1  # `later` is not due, `delivered` is done
    assert 120 <= after[("roundtrip_postback_queue_lag_seconds", ())] < 180
    success = ("roundtrip_postback_attempts_total", (("outcome", "success"),))
    assert after[success] == before.get(success, 0) + 1
    count = ("roundtrip_postback_attempt_duration_seconds_count", (("outcome", "success"),))
    assert after[count] == before.get(count, 0) + 1
    assert after[("roundtrip_breaker_state", (("host", "down.example"),))] == 2


def test_it_requires_the_bearer_token_when_one_is_set(client):
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert (wrong.status_code, wrong["WWW-Authenticate"]) == (401, 'Bearer realm="metrics"')
    assert scrape(client, HTTP_AUTHORIZATION="Bearer scrape-secret")


def test_it_refuses_metrics_without_a_token_unless_debug(client, settings):
    settings.METRICS_BEARER_TOKEN = ""
    refused = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert refused.status_code == 403 and b"METRICS_BEARER_TOKEN" in refused.content
    assert b"roundtrip_" not in refused.content
    settings.DEBUG = True  # local mode: open, nothing to protect
    assert scrape(client, HTTP_AUTHORIZATION="")


def test_it_sums_attempts_of_every_process_in_multiprocess_mode(client, tmp_path, monkeypatch):
    # Two separate processes (as Celery pool children would) record attempts ...
    record = (
        "from postbacks.metrics import attempt_observe\n"
        "attempt_observe(outcome='retry', duration_seconds=0.3)\n"
    )
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", record],
            cwd=REPO_ROOT,
            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
            check=True,
        )
    # ... and this (web) process serves their sum.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    samples = scrape(client)
    assert samples[("roundtrip_postback_attempts_total", (("outcome", "retry"),))] == 2
    bucket = (
        "roundtrip_postback_attempt_duration_seconds_bucket",
        (("le", "0.5"), ("outcome", "retry")),
    )
    assert samples[bucket] == 2


def test_it_exposes_per_endpoint_in_flight_held_and_oldest_due_for_the_hosts_without_room(
    client, link, template, settings, monkeypatch
):
    from config import health
    from tests.postbacks.test_fair_claim import host_rows

    settings.POSTBACKS_REDIS_PREFIX = f"roundtrip:test-endpoints-{free_port()}:"
    settings.POSTBACKS_BREAKER_FAILURES = 1
    fairness.reset_gate()
    long_ago = timezone.now() - timedelta(seconds=300)
    host_rows(template, link, "full.example:80", 3, due_at=long_ago)
    host_rows(template, link, "down.example:80", 2, due_at=timezone.now() - timedelta(seconds=60))
    # Has room: not held, and the only rows the engine's own lag counts.
    host_rows(template, link, "fine.example:80", 4, due_at=timezone.now() - timedelta(seconds=10))
    gate = fairness.get_gate()
    try:
        gate.admit({"full.example:80": 4, "fine.example:80": 1}, cap=4)
        gate.settle({"down.example:80": fairness.HostTally(failed=1)})
        found = scrape(client)
        # Thousands of endpoints must not mean thousands of series: beyond the top hosts,
        # one "(other)" series sums the rest.
        monkeypatch.setattr(health, "TOP_HOSTS", 1)
        capped = scrape(client)
    finally:
        fairness.reset_gate()
    assert found[("roundtrip_endpoint_in_flight", (("host", "full.example:80"),))] == 4
    assert found[("roundtrip_endpoint_in_flight", (("host", "fine.example:80"),))] == 1
    held = "roundtrip_endpoint_held_postbacks"
    assert found[(held, (("host", "full.example:80"), ("reason", "busy")))] == 3
    assert found[(held, (("host", "down.example:80"), ("reason", "breaker")))] == 2
    assert not any(key[0] == held and ("host", "fine.example:80") in key[1] for key in found)
    age = "roundtrip_endpoint_oldest_due_age_seconds"
    assert 300 <= found[(age, (("host", "full.example:80"),))] < 400
    assert 60 <= found[(age, (("host", "down.example:80"),))] < 160
    assert found[("roundtrip_postbacks_held_for_room", ())] == 5
    assert found[("roundtrip_postbacks_due", ())] == 9
    assert 10 <= found[("roundtrip_postback_queue_lag_seconds", ())] < 60

    assert capped[(held, (("host", "full.example:80"), ("reason", "busy")))] == 3
    assert capped[(held, (("host", "(other)"), ("reason", "any")))] == 2
    assert capped[("roundtrip_endpoint_in_flight", (("host", "(other)"),))] == 1
    assert len([key for key in capped if key[0] == age]) == 2
