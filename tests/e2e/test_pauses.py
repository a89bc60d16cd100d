"""Pauses hold, never drop, on real processes (gunicorn, Celery worker and beat): for each kind
of pause (a 410 Gone, endpoint health after a failing streak, the publisher's own switch),
conversions arrive while the callback is paused, the delivery log shows them held with the
reason, and once the callback is resumed every postback reaches the publisher exactly once.
"""

import time
from collections import Counter
from dataclasses import dataclass

import pytest
import requests

from postbacks.models import Postback
from publishers.models import CallbackTemplate, Publisher
from publishers.services import api_key_create
from tests.e2e.processes import Stack, wait_until
from tests.e2e.test_round_trip import click, convert
from tests.receiver import Receiver
from tracking.models import TrackingLink

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DURING_PAUSE = 6


@pytest.fixture
def stack_settings() -> dict[str, str]:
    # A failing streak pauses its callback after 3 s instead of 3 days.
    return {"POSTBACKS_HEALTH_PAUSE_AFTER_SECONDS": "3"}


@dataclass
class Answers:
    """The receiver's answers by event id, in order: what the publisher saw."""

    receiver: Receiver
    status: int = 200

    def __post_init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.receiver.responder = self.answer

    def answer(self, handler) -> None:
        self.seen.append((handler.headers.get("Roundtrip-Event-Id", ""), self.status))
        handler.send_response(self.status)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    def delivered(self) -> Counter:
        return Counter(event for event, status in self.seen if 200 <= status < 300)


def conversions(stack: Stack, link: TrackingLink, api_key: str, count: int, tag: str) -> None:
    with requests.Session() as session:
        for n in range(count):
            click_id = click(session, stack.base_url, link.code, f"{tag}-{n}")
            convert(session, stack.base_url, api_key, click_id)


def api(stack: Stack, key: str, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(
        method,
        f"{stack.base_url}/api/v1/{path}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
        **kwargs,
    )


@pytest.mark.parametrize("kind", ["gone", "failing", "manual"])
def test_a_paused_callback_holds_and_resume_delivers_each_postback_once(
    roundtrip_stack, receiver, publisher: Publisher, link: TrackingLink, api_key: str, kind: str
):
    _, key = api_key_create(publisher=publisher, name="e2e")
    answers = Answers(receiver)
    created = api(
        roundtrip_stack,
        key,
        "post",
        "callbacks",
        json={"url_template": f"{receiver.base_url}/cb?s=[spid]&e=[event_id]"},
    )
    assert created.status_code == 201, created.text
    callback = created.json()["id"]
    template = CallbackTemplate.objects.get(public_id=callback)

    # Pause the callback, each kind its own way.
    if kind == "manual":
        patched = api(
            roundtrip_stack, key, "patch", f"callbacks/{callback}", json={"is_active": False}
        )
        assert patched.status_code == 200 and patched.json()["paused_reason"] == "manual"
    else:
        answers.status = 410 if kind == "gone" else 503
        conversions(roundtrip_stack, link, api_key, 1, "trigger")

    def paused() -> bool:
        roundtrip_stack.check_alive()
        template.refresh_from_db()
        return template.paused_reason == kind

    wait_until(paused, timeout=40, interval=0.2, what=f"the callback to be paused ({kind})")
    assert not template.is_active

    # Conversions while paused: each gets its postback, held, and nothing is sent.
    requests_before = len(answers.seen)
    conversions(roundtrip_stack, link, api_key, DURING_PAUSE, "paused")
    postbacks = Postback.objects.filter(publisher=publisher)
    expected = DURING_PAUSE + (0 if kind == "manual" else 1)
    assert postbacks.count() == expected
    assert not postbacks.exclude(status=Postback.Status.PENDING).exists()
    log = api(roundtrip_stack, key, "get", "postbacks", params={"limit": 100}).json()["results"]
    assert [row["held"] for row in log] == [kind] * expected
    # A held postback is not sent, not even by the beat sweeper (it runs every second).
    time.sleep(3)
    roundtrip_stack.check_alive()
    assert len(answers.seen) == requests_before

    # The endpoint works again; resume (the manual pause the way it was paused).
    answers.status = 200
    if kind == "manual":
        resumed = api(
            roundtrip_stack, key, "patch", f"callbacks/{callback}", json={"is_active": True}
        )
        assert resumed.status_code == 200, resumed.text
    else:
        resumed = api(roundtrip_stack, key, "post", f"callbacks/{callback}/resume")
        assert resumed.status_code == 200 and resumed.json()["released"] == expected

    event_ids = set(postbacks.values_list("event_id", flat=True))

    def all_delivered() -> bool:
        roundtrip_stack.check_alive()
        return (
            set(answers.delivered()) == event_ids
            and not postbacks.exclude(status=Postback.Status.SUCCEEDED).exists()
        )

    wait_until(all_delivered, timeout=40, interval=0.2, what="every held postback delivered")
    time.sleep(2)  # anything sent twice would arrive by now
    assert answers.delivered() == Counter({event_id: 1 for event_id in event_ids})
