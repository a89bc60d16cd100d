"""JSON webhooks on real processes (gunicorn, Celery worker and beat): click → conversion → a
signed JSON POST reaches the publisher's receiver and passes a Standard Webhooks verifier
written from the spec (tests/webhook_spec.py, not our signer). A failing endpoint gets the same
webhook-id on every retry; a paused callback holds and resume delivers; the SSRF guard refuses
a private destination for POST too; a re-send of a delivered webhook has the same id and body
with a fresh timestamp and signature.
"""

import json
import time
from decimal import Decimal

import pytest
import requests

from postbacks.models import Postback, PostbackAttempt
from publishers.models import CallbackTemplate, Publisher
from publishers.services import api_key_create
from tests.e2e.processes import Stack, wait_until
from tests.e2e.test_round_trip import click, convert
from tests.receiver import Receiver
from tests.webhook_spec import spec_verify
from tracking.models import TrackingLink

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SPID = 'a b&c/d?e#f%g"ü😀'


def api(stack: Stack, key: str, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(
        method,
        f"{stack.base_url}/api/v1/{path}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
        **kwargs,
    )


def webhook_callback(stack: Stack, publisher: Publisher, url: str) -> CallbackTemplate:
    """A JSON webhook callback created through the publisher API, as a publisher would."""
    _, key = api_key_create(publisher=publisher, name="e2e")
    created = api(stack, key, "post", "callbacks", json={"url_template": url, "method": "POST"})
    assert created.status_code == 201, created.text
    assert created.json()["method"] == "POST"
    assert "webhook_secret" not in created.json()  # never through the API
    template = CallbackTemplate.objects.get(public_id=created.json()["id"])
    template.api_key = key  # for the test's later API calls
    return template


def click_and_convert(stack: Stack, link: TrackingLink, api_key: str, spid: str = SPID) -> str:
    with requests.Session() as session:
        click_id = click(session, stack.base_url, link.code, spid)
        convert(session, stack.base_url, api_key, click_id)
    return click_id


def posts(receiver: Receiver) -> list:
    return [request for request in list(receiver.requests) if request.method == "POST"]


def wait_for_posts(stack: Stack, receiver: Receiver, count: int, what: str) -> list:
    def arrived() -> list | None:
        stack.check_alive()
        found = posts(receiver)
        return found if len(found) >= count else None

    return wait_until(arrived, timeout=40, interval=0.1, what=what)


def test_a_conversion_posts_a_signed_json_webhook_that_verifies(
    roundtrip_stack, receiver, publisher, link, api_key
):
    template = webhook_callback(
        roundtrip_stack, publisher, f"{receiver.base_url}/hooks?src=[publisher_id]"
    )
    click_id = click_and_convert(roundtrip_stack, link, api_key)

    [received] = wait_for_posts(roundtrip_stack, receiver, 1, "the webhook")
    assert spec_verify(template.webhook_secret, received.headers, received.body, now=time.time())
    assert received.path == f"/hooks?src={publisher.public_id}"
    assert received.headers["Content-Type"] == "application/json"
    postback = Postback.objects.get(publisher=publisher)
    assert received.headers["webhook-id"] == postback.event_id
    assert received.headers["Roundtrip-Event-Id"] == postback.event_id
    payload = json.loads(received.body)
    assert payload["type"] == "conversion.approved"
    data = payload["data"]
    assert (data["spid"], data["click_id"], data["event_id"]) == (
        SPID,
        click_id,
        postback.event_id,
    )
    assert Decimal(data["payout"]) == Decimal("2.50") and data["revenue"] is None
    wait_until(
        lambda: Postback.objects.filter(status=Postback.Status.SUCCEEDED).count() == 1,
        timeout=10,
        what="the postback marked delivered",
    )
    # The API's delivery log shows the method and the exact body sent.
    [row] = api(roundtrip_stack, template.api_key, "get", "postbacks").json()["results"]
    assert (row["method"], row["body"].encode()) == ("POST", received.body)


def test_a_failing_endpoint_gets_every_retry_with_the_same_webhook_id(
    roundtrip_stack, receiver, publisher, link, api_key
):
    template = webhook_callback(roundtrip_stack, publisher, f"{receiver.base_url}/hooks")
    answers = iter([503, 500, 200])

    def answer(handler) -> None:
        handler.send_response(next(answers, 200))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    receiver.responder = answer
    click_and_convert(roundtrip_stack, link, api_key)
    received = wait_for_posts(roundtrip_stack, receiver, 3, "two failures and a success")
    postback = Postback.objects.get(publisher=publisher)
    assert {r.headers["webhook-id"] for r in received} == {postback.event_id}
    assert len({r.body for r in received}) == 1
    assert len({r.headers["webhook-timestamp"] for r in received}) == 3  # retries ~1 s apart
    for request in received:
        assert spec_verify(template.webhook_secret, request.headers, request.body, now=time.time())
    wait_until(
        lambda: Postback.objects.filter(status=Postback.Status.SUCCEEDED).exists(),
        timeout=10,
        what="the postback marked delivered",
    )
    outcomes = list(
        PostbackAttempt.objects.filter(postback=postback).values_list("status_code", "outcome")
    )
    assert outcomes == [(503, "retry"), (500, "retry"), (200, "success")]


def test_a_paused_webhook_holds_and_resume_delivers_it(
    roundtrip_stack, receiver, publisher, link, api_key
):
    template = webhook_callback(roundtrip_stack, publisher, f"{receiver.base_url}/hooks")
    key = template.api_key
    paused = api(
        roundtrip_stack, key, "patch", f"callbacks/{template.public_id}", json={"is_active": False}
    )
    assert paused.status_code == 200 and paused.json()["paused_reason"] == "manual"

    click_and_convert(roundtrip_stack, link, api_key)
    [row] = api(roundtrip_stack, key, "get", "postbacks").json()["results"]
    assert (row["held"], row["method"]) == ("manual", "POST")
    time.sleep(3)  # the beat sweeper runs every second: a held webhook is still not sent
    roundtrip_stack.check_alive()
    assert posts(receiver) == []

    resumed = api(roundtrip_stack, key, "post", f"callbacks/{template.public_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["released"] == 1
    [received] = wait_for_posts(roundtrip_stack, receiver, 1, "the held webhook")
    assert received.headers["webhook-id"] == row["event_id"]
    assert received.body == row["body"].encode()
    assert spec_verify(template.webhook_secret, received.headers, received.body, now=time.time())


@pytest.mark.parametrize(
    "stack_settings", [{"POSTBACKS_ALLOW_PRIVATE_DESTINATIONS": "false"}], ids=["guarded"]
)
def test_the_ssrf_guard_refuses_a_private_destination_for_a_webhook(
    roundtrip_stack, receiver, publisher, link, api_key
):
    # The API refuses such a URL when the callback is saved ...
    _, key = api_key_create(publisher=publisher, name="e2e")
    refused = api(
        roundtrip_stack,
        key,
        "post",
        "callbacks",
        json={"url_template": f"{receiver.base_url}/hooks", "method": "POST"},
    )
    assert refused.status_code == 400, refused.text
    assert "private" in refused.text
    # ... and delivery checks again: a template saved before (or whose name now resolves
    # privately) is refused at send time, before any connection.
    CallbackTemplate.objects.create(
        publisher=publisher, url_template=f"{receiver.base_url}/hooks", method="POST"
    )
    click_and_convert(roundtrip_stack, link, api_key)

    def refused_attempt() -> PostbackAttempt | None:
        roundtrip_stack.check_alive()
        return PostbackAttempt.objects.filter(postback__publisher=publisher).first()

    attempt = wait_until(refused_attempt, timeout=40, interval=0.2, what="the refused attempt")
    assert (attempt.error_kind, attempt.outcome, attempt.status_code) == (
        "forbidden_destination",
        "failed",
        None,
    )
    assert Postback.objects.get(publisher=publisher).status == Postback.Status.FAILED
    time.sleep(1)
    assert receiver.requests == []


def test_a_resent_webhook_keeps_its_id_and_body_with_a_fresh_signature(
    roundtrip_stack, receiver, publisher, link, api_key
):
    template = webhook_callback(roundtrip_stack, publisher, f"{receiver.base_url}/hooks")
    click_and_convert(roundtrip_stack, link, api_key)
    [first] = wait_for_posts(roundtrip_stack, receiver, 1, "the webhook")
    postback = Postback.objects.get(publisher=publisher)
    wait_until(
        lambda: Postback.objects.filter(status=Postback.Status.SUCCEEDED).exists(),
        timeout=10,
        what="the postback marked delivered",
    )
    time.sleep(1.1)  # the re-send's timestamp is a later second

    resent = api(roundtrip_stack, template.api_key, "post", f"postbacks/{postback.event_id}/retry")
    assert resent.status_code == 202, resent.text
    first_, again = wait_for_posts(roundtrip_stack, receiver, 2, "the re-sent webhook")
    assert first_ is first
    assert again.headers["webhook-id"] == first.headers["webhook-id"] == postback.event_id
    assert (again.path, again.body) == (first.path, first.body)
    assert int(again.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert again.headers["webhook-signature"] != first.headers["webhook-signature"]
    assert spec_verify(template.webhook_secret, again.headers, again.body, now=time.time())
