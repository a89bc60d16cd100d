"""The delivery log: list, one postback with attempts, retry one, replay a range."""

import math
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from postbacks import dispatch, signing
from postbacks.dispatch import Lane
from postbacks.models import Postback
from publishers.models import AuditEvent
from tests.api.conftest import browser_click, record_conversion

pytestmark = pytest.mark.django_db


def test_it_lists_postbacks_newest_first_with_their_conversion(api, world):
    Postback.objects.filter(pk=world.failed.pk).update(
        created_at=world.delivered.created_at + timedelta(seconds=1)
    )
    body = api.get("/api/v1/postbacks").json()
    assert [p["event_id"] for p in body["results"]] == [
        world.failed.event_id,
        world.delivered.event_id,
    ]
    assert body["results"][0]["conversion_id"] == world.conversion.public_id
    assert body["results"][0]["spid"] == world.click.spid
    assert body["results"][0]["url"] == world.failed.url


def test_it_pages_the_log_by_cursor(api, world):
    first = api.get("/api/v1/postbacks", {"limit": 1}).json()
    second = api.get("/api/v1/postbacks", {"limit": 1, "cursor": first["next_cursor"]}).json()
    assert first["has_more"] is True and second["has_more"] is False
    assert {first["results"][0]["event_id"], second["results"][0]["event_id"]} == {
        world.failed.event_id,
        world.delivered.event_id,
    }


@pytest.mark.parametrize(("status", "expected"), [("failed", "failed"), ("succeeded", "delivered")])
def test_it_filters_the_log(api, world, status, expected):
    body = api.get("/api/v1/postbacks", {"status": status}).json()
    assert [p["event_id"] for p in body["results"]] == [getattr(world, expected).event_id]


def test_it_shows_one_postback_with_its_attempts(api, world):
    body = api.get(f"/api/v1/postbacks/{world.failed.event_id}").json()
    assert body["status"] == "failed"
    assert [(a["number"], a["status_code"]) for a in body["attempt_log"]] == [(1, 500), (2, 500)]


def test_it_retries_a_failed_postback_which_then_really_goes_out(api, world, receiver):
    response = api.post(f"/api/v1/postbacks/{world.failed.event_id}/retry")
    assert response.status_code == 202
    assert response.json()["queued"] == 1
    assert response.json()["postback"]["status"] == "pending"
    # What the task sent on commit would do:
    assert dispatch.drain(Lane.RETRY, wait=math.inf, kicks=False) == 1
    [request] = receiver.requests
    assert request.headers["Roundtrip-Event-Id"] == world.failed.event_id
    assert signing.verify(
        world.publisher.active_signing_secrets(),
        world.failed.event_id,
        request.headers["Roundtrip-Timestamp"],
        request.headers["Roundtrip-Signature"],
        request.path,
    )


def resend_and_deliver(send, postback: Postback, receiver) -> None:
    """Re-send a delivered postback with `send()`, deliver what is due, and check the promise:
    the same event id, one new request and one new attempt, and an audit event."""
    sent_before = len(receiver.requests)
    send()
    dispatch.drain(Lane.RETRY, wait=math.inf, kicks=False)
    postback.refresh_from_db()
    assert postback.status == "succeeded" and postback.attempts == 2
    assert list(postback.attempt_log.values_list("number", "outcome")) == [
        (1, "success"),
        (2, "success"),
    ]
    [request] = receiver.requests[sent_before:]
    assert request.headers["Roundtrip-Event-Id"] == postback.event_id
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.POSTBACKS_RETRIED)
    assert event.details["event_ids"] == [postback.event_id] and event.details["queued"] == 1


def test_it_re_sends_a_delivered_postback(api, world, receiver):
    def send() -> None:
        response = api.post(f"/api/v1/postbacks/{world.delivered.event_id}/retry")
        assert response.status_code == 202, response.content
        assert response.json()["postback"]["event_id"] == world.delivered.event_id

    resend_and_deliver(send, world.delivered, receiver)


def test_the_dashboard_re_sends_a_delivered_postback(member_client, world, receiver):
    trace = member_client.get(reverse("trace"), {"q": world.delivered.event_id}).content.decode()
    assert "Re-send</button>" in trace

    def send() -> None:
        response = member_client.post(
            reverse("deliveries_retry"), {"event_id": world.delivered.event_id, "back": "trace"}
        )
        assert response.status_code == 302 and "trace" in response["Location"]

    resend_and_deliver(send, world.delivered, receiver)


def test_the_admin_re_sends_a_delivered_postback(admin_client, world, receiver):
    def send() -> None:
        response = admin_client.post(
            "/admin/postbacks/postback/",
            {"action": "retry_selected", "_selected_action": [world.delivered.pk]},
        )
        assert response.status_code == 302

    resend_and_deliver(send, world.delivered, receiver)


def test_a_range_replay_re_sends_delivered_postbacks_when_asked(api, world):
    hour = timedelta(hours=1)
    body = {"from": (timezone.now() - hour).isoformat(), "to": (timezone.now() + hour).isoformat()}
    assert api.post("/api/v1/postbacks/replay", body, format="json").json()["queued"] == 1
    body["status"] = ["succeeded"]
    assert api.post("/api/v1/postbacks/replay", body, format="json").json()["queued"] == 1
    world.delivered.refresh_from_db()
    assert world.delivered.status == "pending"


def test_it_does_not_retry_a_postback_a_worker_holds(api, world):
    Postback.objects.filter(pk=world.failed.pk).update(
        status="pending", leased_until=timezone.now() + timedelta(minutes=1)
    )
    response = api.post(f"/api/v1/postbacks/{world.failed.event_id}/retry")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "in_flight"


@pytest.fixture
def failures(world, advertiser, link) -> list[Postback]:
    """Five more failed postbacks (one conversion each), created an hour ago."""
    rows = []
    for i in range(5):
        conversion = record_conversion(advertiser, browser_click(link, f"replay-{i}"))
        rows += list(conversion.postbacks.all())
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Postback.objects.filter(pk__in=[p.pk for p in rows]).update(
        status="failed", created_at=an_hour_ago, next_attempt_at=an_hour_ago + timedelta(days=3)
    )
    return rows


def replay(api, **body):
    now = timezone.now()
    payload = {
        "from": (now - timedelta(hours=2)).isoformat(),
        "to": (now - timedelta(minutes=30)).isoformat(),
        **body,
    }
    return api.post("/api/v1/postbacks/replay", payload, format="json")


def test_it_replays_the_failed_postbacks_of_a_range_once_each(api, world, failures):
    response = replay(api)
    assert response.status_code == 202
    assert response.json() == {"matched": 10, "queued": 10, "remaining": 0}
    now = timezone.now()
    replayed = Postback.objects.filter(pk__in=[p.pk for p in failures])
    assert {p.status for p in replayed} == {"pending"}
    assert all(p.next_attempt_at <= now for p in replayed)
    # Outside the range: untouched.
    world.failed.refresh_from_db()
    assert world.failed.status == "failed"
    # Nothing failed is left in the range, so a second request queues nothing.
    assert replay(api).json() == {"matched": 0, "queued": 0, "remaining": 0}


def test_it_replays_only_one_callbacks_postbacks(api, world, failures):
    response = replay(api, callback_id=world.template.public_id)
    assert response.json() == {"matched": 5, "queued": 5, "remaining": 0}
    assert {p.template_id for p in Postback.objects.filter(status="pending")} == {world.template.pk}


def test_it_caps_a_replay_and_says_how_many_remain(api, world, failures, settings):
    settings.POSTBACKS_REPLAY_MAX = 3
    assert replay(api).json() == {"matched": 10, "queued": 3, "remaining": 7}
    assert replay(api).json() == {"matched": 7, "queued": 3, "remaining": 4}


@pytest.mark.parametrize(
    "body",
    [
        {"status": ["delivered"]},
        {"status": []},
        {"callback_id": "nope"},
        {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    ],
)
def test_it_rejects_a_bad_replay(api, world, body):
    response = replay(api, **body)
    assert response.status_code == 400
    assert response.json()["error"]["fields"]
