"""Each hostile request found in the attack review (docs/security.md, "Hostile input") answers
a clear 4xx and stores nothing. The click path's own findings live with the click tests."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from postbacks.models import Postback
from publishers.models import CallbackTemplate, Membership
from tracking.models import Conversion

pytestmark = pytest.mark.django_db


def api(key: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def api_error(response, status: int = 400) -> str:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content.decode("utf-8"))  # encodable, whatever was echoed
    assert set(body["error"]) == {"code", "message", "fields"}
    return json.dumps(body)


def state(publisher) -> tuple:
    return (
        sorted(
            CallbackTemplate.objects.filter(publisher=publisher).values_list(
                "public_id", "url_template", "campaign_id", "statuses", "updated_at"
            )
        ),
        sorted(Postback.objects.values_list("pk", "status", "next_attempt_at", "attempts")),
        sorted(Membership.objects.values_list("user_id", "publisher_id", "role")),
        Conversion.objects.count(),
    )


@pytest.mark.parametrize("path", ["clicks", "postbacks", "callbacks"])
def test_it_refuses_nul_in_an_api_path(publisher_key, path):
    message = api_error(api(publisher_key).get(f"/api/v1/{path}/%00"))
    assert "NUL" in message


def test_it_refuses_nul_and_surrogates_in_callback_bodies(publisher, publisher_key, template):
    before = state(publisher)
    client = api(publisher_key)
    for value in ("\u0000", "\ud800"):
        body = json.dumps({"url_template": "https://x.example/?s=[spid]", "campaign": value})
        api_error(client.post("/api/v1/callbacks", body, content_type="application/json"))
        api_error(
            client.patch(
                f"/api/v1/callbacks/{template.public_id}", body, content_type="application/json"
            )
        )
    statuses = json.dumps({"url_template": "https://x.example/?s=[spid]", "statuses": ["\ud800"]})
    api_error(client.post("/api/v1/callbacks", statuses, content_type="application/json"))
    assert state(publisher) == before


def test_it_refuses_a_surrogate_in_a_replay(dashboard_data, publisher_key):
    before = state(dashboard_data.publisher)
    body = json.dumps(
        {"status": ["\ud800"], "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    )
    api_error(
        api(publisher_key).post("/api/v1/postbacks/replay", body, content_type="application/json")
    )
    assert state(dashboard_data.publisher) == before


def test_it_refuses_a_surrogate_status_on_intake(api_key, link, campaign, publisher):
    click = link.clicks.create(publisher=publisher, campaign=campaign, spid="s")
    body = json.dumps({"click_id": click.click_id, "event": "sale", "status": "\ud800"})
    message = api_error(
        api(api_key).post("/api/v1/conversions", body, content_type="application/json")
    )
    assert "surrogate" in message
    assert not Conversion.objects.exists()


@pytest.mark.parametrize("depth", [2_000, 5_000, 100_000])
def test_it_refuses_deeply_nested_json(api_key, publisher_key, depth):
    nested = "[" * depth + "]" * depth
    for client, path in (
        (api(api_key), "/api/v1/conversions"),
        (api(publisher_key), "/api/v1/callbacks"),
    ):
        message = api_error(client.post(path, nested, content_type="application/json"))
        assert "nested too deeply" in message
    assert not Conversion.objects.exists() and not CallbackTemplate.objects.exists()


def test_it_refuses_nul_on_the_dashboard(owner_client, dashboard_data):
    before = state(dashboard_data.publisher)
    assert owner_client.get(reverse("trace") + "?q=%00").status_code == 400
    posts = [
        ("deliveries_retry", {"event_id": "\x00"}),
        ("member_remove", {"username": "\x00"}),
        ("member_role", {"username": "member-a\x00", "role": "owner"}),
        ("callback_test", {"url_template": "https://x.example/?s=[spid]\x00"}),
    ]
    for name, data in posts:
        response = owner_client.post(reverse(name), data)
        assert response.status_code == 400, name
        assert b"NUL character" in response.content
    assert state(dashboard_data.publisher) == before


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
@pytest.mark.parametrize("length", [151, 256, 10_000])
def test_it_refuses_an_over_long_username_at_sign_in(publisher, path, length):
    client = Client()
    for _ in range(3):
        response = client.post(path, {"username": "u" * length, "password": "pw"})
        assert response.status_code in (200, 403, 429)
    assert "_auth_user_id" not in client.session
    # The real account still signs in (its own failure count is untouched).
    response = Client().post("/accounts/login/", {"username": "owner-a", "password": "pw-owner-a"})
    assert response.status_code == 302


@pytest.mark.parametrize("param", ["start", "end"])
@pytest.mark.parametrize("value", ["9999-12-31", "0001-01-01"])
def test_it_refuses_a_date_at_the_end_of_the_calendar(owner_client, publisher, param, value):
    for name in ("conversions", "reports"):
        response = owner_client.get(reverse(name) + f"?{param}={value}")
        assert response.status_code == 200, name  # the page, with the form's error
        assert "Choose a date between 2000-01-01 and 2999-12-31." in response.content.decode()


def test_it_refuses_a_date_at_the_end_of_the_calendar_in_the_api(publisher_key):
    response = api(publisher_key).get("/api/v1/stats?from=9999-12-31&to=9999-12-31")
    assert "Choose a date between" in api_error(response)


def test_it_refuses_a_trailing_dot_ipv4_callback(publisher, publisher_key, receiver, settings):
    assert settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS  # even where private ones are allowed
    body = json.dumps({"url_template": f"http://127.0.0.1.:{receiver.port}/?s=[spid]"})
    message = api_error(
        api(publisher_key).post("/api/v1/callbacks", body, content_type="application/json")
    )
    assert "not a plain IPv4 address" in message
    assert not CallbackTemplate.objects.exists()


def test_it_refuses_nul_in_a_header(publisher):
    response = Client(HTTP_AUTHORIZATION="Bearer rt_pub_\x00").get("/api/v1/callbacks")
    assert "NUL" in api_error(response)
    assert get_user_model().objects.filter(username="owner-a").exists()
