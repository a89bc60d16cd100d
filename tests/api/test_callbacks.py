"""Callback templates over the API: the dashboard's validation, and a real signed test."""

import pytest

from postbacks import health, signing
from postbacks.models import Postback
from publishers.models import AuditEvent, CallbackTemplate
from tracking.models import Campaign

pytestmark = pytest.mark.django_db


def create(api, **body):
    return api.post("/api/v1/callbacks", body, format="json")


def test_it_creates_and_lists_callbacks(api, world, receiver, campaign):
    response = create(
        api,
        name="Sales",
        url_template=f"{receiver.base_url}/sale?s=[spid]&p={{payout}}",
        events=["Sale"],
        statuses=["approved", "rejected"],
        campaign=campaign.public_id,
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["events"] == ["sale"]  # normalised by the model's clean(), as in the dashboard
    assert body["campaign"] == campaign.public_id
    assert body["is_active"] is True
    listed = [c["id"] for c in api.get("/api/v1/callbacks").json()["results"]]
    assert listed == [world.template.public_id, listed[1], body["id"]]
    assert CallbackTemplate.objects.get(public_id=body["id"]).publisher == world.publisher


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url_template": "https://pub.example/cb?s=[nope]"}, "url_template"),
        ({"url_template": "https://[spid].example/cb"}, "url_template"),
        ({"url_template": "ftp://pub.example/cb"}, "url_template"),
        ({"url_template": "https://pub.example/cb", "statuses": ["paid"]}, "statuses"),
        ({"url_template": "https://pub.example/cb", "statuses": []}, "statuses"),
        ({"url_template": "https://pub.example/cb", "events": ["no spaces"]}, "events"),
        ({"url_template": "https://pub.example/cb", "campaign": "nope"}, "campaign"),
        ({}, "url_template"),
    ],
)
def test_it_validates_like_the_dashboard(api, world, body, field):
    response = create(api, **body)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_it_refuses_a_campaign_the_publisher_does_not_run(api, world, advertiser):
    elsewhere = Campaign.objects.create(
        advertiser=advertiser, name="Other", landing_url="https://a.example/"
    )
    response = create(api, url_template="https://pub.example/cb", campaign=elsewhere.public_id)
    assert response.status_code == 400
    assert "campaign" in response.json()["error"]["fields"]


def test_it_changes_only_what_a_patch_names(api, world):
    url = f"/api/v1/callbacks/{world.template.public_id}"
    response = api.patch(url, {"is_active": False, "events": ["lead"]}, format="json")
    assert response.status_code == 200
    world.template.refresh_from_db()
    assert (world.template.is_active, world.template.events) == (False, ["lead"])
    assert world.template.url_template.endswith("e=[event_id]")
    bad = api.patch(url, {"url_template": "https://pub.example/[oops]"}, format="json")
    assert bad.status_code == 400
    world.template.refresh_from_db()
    assert world.template.url_template.endswith("e=[event_id]")


def test_it_deletes_a_callback_and_keeps_its_postbacks(api, world):
    url = f"/api/v1/callbacks/{world.template.public_id}"
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    world.delivered.refresh_from_db()
    assert world.delivered.template_id is None
    assert api.get(f"/api/v1/postbacks/{world.delivered.event_id}").json()["callback_id"] is None


def test_it_fires_a_real_signed_test_postback(api, world, receiver):
    response = api.post(
        f"/api/v1/callbacks/{world.template.public_id}/test",
        {"sample_values": {"spid": "test-spid"}},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["response"]["status_code"] == 200
    [received] = receiver.requests
    assert received.path.startswith("/cb?id=test-spid&p=2.50&e=evt_")
    assert body["request"]["url"] == receiver.base_url + received.path
    assert received.headers["Roundtrip-Test"] == "1"
    assert signing.verify(
        world.publisher.active_signing_secrets(),
        received.headers["Roundtrip-Event-Id"],
        received.headers["Roundtrip-Timestamp"],
        received.headers["Roundtrip-Signature"],
        received.path,
    )


def test_it_reports_a_test_postback_that_got_no_answer(api, world, receiver):
    receiver.stop()
    body = api.post(f"/api/v1/callbacks/{world.template.public_id}/test").json()
    assert body["ok"] is False
    assert body["response"] is None
    assert body["error"]["kind"] == "connection_error"


def test_it_refuses_unknown_sample_placeholders(api, world):
    response = api.post(
        f"/api/v1/callbacks/{world.template.public_id}/test",
        {"sample_values": {"nope": "x"}},
        format="json",
    )
    assert response.status_code == 400
    assert "sample_values" in response.json()["error"]["fields"]


def test_it_resumes_deliveries_that_endpoint_health_paused(
    api, world, django_capture_on_commit_callbacks
):
    url = f"/api/v1/callbacks/{world.template.public_id}"
    not_paused = api.post(f"{url}/resume")
    assert not_paused.status_code == 409
    assert not_paused.json()["error"]["code"] == "not_paused"

    Postback.objects.filter(pk=world.delivered.pk).update(status=Postback.Status.PENDING)
    health.endpoint_pause([world.template.pk], reason=CallbackTemplate.PausedReason.GONE)
    shown = api.get(url).json()
    assert shown["paused_reason"] == "gone" and shown["paused_at"] is not None
    assert shown["is_active"] is False
    # A held postback can't be retried on its own: the callback must be resumed.
    held = api.post(f"/api/v1/postbacks/{world.delivered.event_id}/retry")
    assert (held.status_code, held.json()["error"]["code"]) == (409, "held")

    with django_capture_on_commit_callbacks(execute=False):
        response = api.post(f"{url}/resume")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["released"] == 1
    assert (body["callback"]["paused_at"], body["callback"]["paused_reason"]) == (None, "")
    assert body["callback"]["is_active"] is True
    world.delivered.refresh_from_db()
    assert world.delivered.next_attempt_at == world.delivered.created_at
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.ENDPOINT_RESUMED)
    assert event.via == AuditEvent.Via.API and event.details["released"] == 1
    assert api.post(f"{url}/resume").status_code == 409


def test_it_records_who_changed_a_callback_through_the_api(api, world):
    url = f"/api/v1/callbacks/{world.template.public_id}"
    api.patch(url, {"events": ["Sale"]}, format="json")
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.CALLBACK_UPDATED)
    assert event.via == AuditEvent.Via.API and event.api_key_label.startswith("rt_pub_")
    assert event.details == {"changed": {"events": {"from": [], "to": ["sale"]}}}
    assert event.target_id == world.template.public_id
