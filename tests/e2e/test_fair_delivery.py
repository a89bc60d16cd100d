"""Fair delivery on real processes (web, Celery worker and beat): ten of a publisher's callback
endpoints hang while one answers; the healthy one gets all its postbacks while the others
hang, and once they answer again every postback reaches its endpoint exactly once: 0 lost,
0 duplicates. Time-outs are short here (settings), so the hang costs seconds, not minutes.
"""

import threading
import time
from collections import Counter

import pytest
import requests

from postbacks.models import Postback
from publishers.models import CallbackTemplate, Publisher
from tests.e2e.processes import wait_until
from tests.e2e.test_round_trip import click, convert
from tests.receiver import Receiver
from tracking.models import TrackingLink

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HANGING = 10
CONVERSIONS = 12


@pytest.fixture
def stack_settings() -> dict[str, str]:
    return {
        "POSTBACKS_TOTAL_TIMEOUT": "1.5",
        "POSTBACKS_CONNECT_TIMEOUT": "1",
        "POSTBACKS_HOST_SLOW_SECONDS": "0.5",
    }


class Endpoint:
    """A receiver that hangs (never answers) while `hanging` is set, else answers 200; it
    counts the answers it gave per event id: what the publisher got."""

    def __init__(self) -> None:
        self.hanging = threading.Event()
        self.answered: Counter = Counter()
        self.lock = threading.Lock()
        self.receiver = Receiver(responder=self.respond).start()

    def respond(self, handler) -> None:
        if self.hanging.is_set():
            # Hold the request until our client gives up (its deadline is 1.5 s); then drop it.
            time.sleep(3)
            handler.close_connection = True
            return
        with self.lock:
            self.answered[handler.headers["Roundtrip-Event-Id"]] += 1
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")


def test_hanging_endpoints_cost_only_themselves_and_lose_nothing(
    roundtrip_stack, publisher: Publisher, link: TrackingLink, api_key: str
):
    healthy = Endpoint()
    hanging = [Endpoint() for _ in range(HANGING)]
    for endpoint in hanging:
        endpoint.hanging.set()
    endpoints = [healthy, *hanging]
    templates = {
        CallbackTemplate.objects.create(
            publisher=publisher, url_template=f"{e.receiver.base_url}/cb?e=[event_id]"
        ).pk: e
        for e in endpoints
    }
    try:
        with requests.Session() as session:
            for n in range(CONVERSIONS):
                click_id = click(session, roundtrip_stack.base_url, link.code, f"fair-{n}")
                body = convert(session, roundtrip_stack.base_url, api_key, click_id)
                assert len(body["postbacks"]) == len(endpoints)

        postbacks = Postback.objects.filter(publisher=publisher)
        assert postbacks.count() == CONVERSIONS * len(endpoints)
        expected = {
            e: set(postbacks.filter(template_id=pk).values_list("event_id", flat=True))
            for pk, e in templates.items()
        }

        # While ten endpoints hang, the healthy one gets every one of its postbacks.
        def healthy_done() -> bool:
            roundtrip_stack.check_alive()
            return set(healthy.answered) == expected[healthy]

        wait_until(healthy_done, timeout=60, interval=0.2, what="the healthy endpoint's postbacks")
        waiting = postbacks.exclude(
            template__in=[pk for pk, e in templates.items() if e is healthy]
        )
        assert not waiting.exclude(status=Postback.Status.PENDING).exists(), "held, not failed"

        # They answer again: everything that waited is delivered.
        for endpoint in hanging:
            endpoint.hanging.clear()

        def all_delivered() -> bool:
            roundtrip_stack.check_alive()
            return not postbacks.exclude(status=Postback.Status.SUCCEEDED).exists()

        wait_until(all_delivered, timeout=120, interval=0.5, what="every postback delivered")
        for endpoint in endpoints:
            # Each postback answered exactly once: 0 lost, 0 duplicates.
            assert endpoint.answered == Counter(expected[endpoint])
    finally:
        for endpoint in endpoints:
            endpoint.hanging.clear()
            endpoint.receiver.stop()
