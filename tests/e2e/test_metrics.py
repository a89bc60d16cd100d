"""/metrics counts what the database holds, on real processes with production settings (the
click buffer on, as in production): clicks and conversions over HTTP, postbacks delivered by the
worker after retries, then every counter is checked against the rows.

Bug: `roundtrip_clicks_total` read the highest click id, and the click buffer spends an id on
every click a conversion had already written (11,987 after 6,050 clicks); the dispatcher never
emitted the per-attempt metrics at all.
"""

from collections import Counter

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from postbacks.models import Postback, PostbackAttempt
from publishers.models import CallbackTemplate, Publisher
from tests.e2e.conftest import METRICS_TOKEN
from tests.e2e.processes import Stack, wait_until
from tests.e2e.test_round_trip import click, convert
from tracking.models import Click, Conversion, TrackingLink

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CONVERTED = 30
NOT_CONVERTED = 20


@pytest.fixture
def stack_settings(tmp_path) -> dict[str, str]:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    return {
        # The production settings module (tests/settings.py turns the click buffer off).
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CLICKS_BUFFERED": "true",
        # Web and worker share their recorded metrics, as on a production host.
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }


def scrape(stack: Stack) -> dict[tuple[str, tuple], float]:
    response = requests.get(
        f"{stack.base_url}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    text = response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_counter_equals_the_rows(
    roundtrip_stack, receiver, publisher: Publisher, link: TrackingLink, api_key: str
):
    CallbackTemplate.objects.create(
        publisher=publisher, url_template=f"{receiver.base_url}/cb?s=[spid]"
    )
    # Each postback's first attempt gets a 503, the second a 200: retries on the way.
    seen: Counter = Counter()

    def flaky(handler) -> None:
        event_id = handler.headers.get("Roundtrip-Event-Id", "")
        seen[event_id] += 1
        status = 503 if seen[event_id] == 1 else 200
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    receiver.responder = flaky
    with requests.Session() as session:
        for n in range(CONVERTED + NOT_CONVERTED):
            click_id = click(session, roundtrip_stack.base_url, link.code, f"m-{n}")
            if n < CONVERTED:
                convert(session, roundtrip_stack.base_url, api_key, click_id)

    postbacks = Postback.objects.filter(publisher=publisher)

    def settled() -> bool:
        roundtrip_stack.check_alive()
        return (
            Click.objects.count() == CONVERTED + NOT_CONVERTED  # the buffer was flushed
            and postbacks.count() == CONVERTED
            and not postbacks.exclude(status=Postback.Status.SUCCEEDED).exists()
        )

    wait_until(settled, timeout=60, interval=0.3, what="clicks flushed and postbacks delivered")
    metrics = scrape(roundtrip_stack)
    assert metrics[("roundtrip_clicks_total", ())] == Click.objects.count()
    assert metrics[("roundtrip_conversions_total", ())] == Conversion.objects.count() == CONVERTED
    attempts = Counter(PostbackAttempt.objects.values_list("outcome", flat=True))
    assert attempts == {"retry": CONVERTED, "success": CONVERTED}
    for outcome, rows in attempts.items():
        labels = (("outcome", outcome),)
        assert metrics[("roundtrip_postback_attempts_total", labels)] == rows
        assert metrics[("roundtrip_postback_attempt_duration_seconds_count", labels)] == rows
