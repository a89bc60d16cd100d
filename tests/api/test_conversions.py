"""`GET /api/v1/conversions`: authentication, filters, and polling without gaps or repeats."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from publishers.models import PublisherAPIKey
from tests.api.conftest import SPID, browser_click, client_for, record_conversion
from tracking.models import Conversion

pytestmark = pytest.mark.django_db


def ids(response) -> list[str]:
    return [item["id"] for item in response.json()["results"]]


def test_it_requires_a_key(client, world):
    response = client.get("/api/v1/conversions")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer rt_pub_nope", "Bearer ", "Basic dXNlcjpwdw==", "Bearer rt_adv_123456789012_x"],
)
def test_it_refuses_malformed_or_unknown_keys(client, world, header):
    response = client.get("/api/v1/conversions", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "fields"}


def test_it_refuses_a_revoked_key(api, publisher_key, world):
    assert api.get("/api/v1/conversions").status_code == 200
    PublisherAPIKey.objects.update(revoked_at=timezone.now())
    assert api.get("/api/v1/conversions").status_code == 401


def test_it_lists_conversions_with_event_ids_and_postback_status(api, world):
    response = api.get("/api/v1/conversions")
    assert response.status_code == 200
    body = response.json()
    assert body["has_more"] is False
    [item] = body["results"]
    assert item["id"] == world.conversion.public_id
    assert item["click_id"] == world.click.click_id
    assert item["spid"] == SPID
    assert item["event"] == "sale"
    assert item["payout"] == "2.50"
    assert item["currency"] == "EUR"
    assert item["postback_status"] == "failed"
    assert [(p["event_id"], p["status"]) for p in item["postbacks"]] == [
        (world.delivered.event_id, "succeeded"),
        (world.failed.event_id, "failed"),
    ]
    assert item["postbacks"][0]["callback_id"] == world.template.public_id


def test_it_answers_on_the_trailing_slash_path_too(api, world):
    assert ids(api.get("/api/v1/conversions/")) == [world.conversion.public_id]


@pytest.mark.parametrize(
    ("params", "found"),
    [
        ({"spid": SPID}, True),
        ({"spid": SPID + "x"}, False),
        ({"status": "approved"}, True),
        ({"status": "pending"}, False),
        ({"event": "SALE"}, True),
        ({"event": "lead"}, False),
        ({"updated_since": "2000-01-01T00:00:00Z"}, True),
        ({"updated_since": "2999-01-01T00:00:00Z"}, False),
    ],
)
def test_it_filters(api, world, params, found):
    assert ids(api.get("/api/v1/conversions", params)) == (
        [world.conversion.public_id] if found else []
    )


def test_it_filters_by_click_id(api, world, advertiser):
    other = record_conversion(advertiser, world.idle_click)
    assert ids(api.get("/api/v1/conversions", {"click_id": world.idle_click.click_id})) == [
        other.public_id
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "paid"},
        {"limit": "0"},
        {"limit": "1001"},
        {"updated_since": "yesterday"},
        {"spid": "a\x00b"},
        {"cursor": "not-a-cursor"},
        {"cursor": "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwxXQ"},  # a naive timestamp
    ],
)
def test_it_rejects_bad_parameters_naming_the_field(api, world, params):
    response = api.get("/api/v1/conversions", params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["fields"]) == set(params)


def test_it_polls_without_gaps_or_repeats(api, advertiser, link):
    """Conversions sharing one updated_at, pages of two, then status changes: every change is
    seen exactly once, in (updated_at, id) order, and an idle poll keeps its place."""
    moment = timezone.now() - timedelta(minutes=10)
    clicks = [browser_click(link, f"s{i}") for i in range(7)]
    conversions = [
        record_conversion(
            advertiser, click, status="pending", now=moment + timedelta(seconds=i // 3)
        )
        for i, click in enumerate(clicks)
    ]
    seen, cursor = [], None
    while True:
        body = api.get(
            "/api/v1/conversions", {"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [item["id"] for item in body["results"]]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    assert seen == [c.public_id for c in sorted(conversions, key=lambda c: (c.updated_at, c.pk))]

    # Two change later (approved), in the opposite order of their ids.
    for offset, conversion in enumerate([conversions[5], conversions[1]]):
        record_conversion(
            advertiser,
            conversion.click,
            status="approved",
            now=moment + timedelta(minutes=1, seconds=offset),
        )
    body = api.get("/api/v1/conversions", {"cursor": cursor}).json()
    assert [(item["id"], item["status"]) for item in body["results"]] == [
        (conversions[5].public_id, "approved"),
        (conversions[1].public_id, "approved"),
    ]
    idle = api.get("/api/v1/conversions", {"cursor": body["next_cursor"]}).json()
    assert idle == {"results": [], "next_cursor": body["next_cursor"], "has_more": False}


def test_it_holds_back_changes_younger_than_the_settle_time(api, world, advertiser, settings):
    settings.API_CONVERSIONS_SETTLE_SECONDS = 60
    assert ids(api.get("/api/v1/conversions")) == []
    Conversion.objects.update(updated_at=timezone.now() - timedelta(seconds=61))
    assert ids(api.get("/api/v1/conversions")) == [world.conversion.public_id]


def test_it_shares_the_path_with_the_advertiser_intake(client, api, api_key, world):
    """POST /api/v1/conversions is the intake (advertiser key); GET is this list."""
    response = client.post(
        "/api/v1/conversions",
        json.dumps({"click_id": world.idle_click.click_id, "txn_id": "order-2"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    assert response.status_code == 201
    assert len(ids(api.get("/api/v1/conversions"))) == 2
    # Each key works on its own method only.
    assert client_for(api_key).get("/api/v1/conversions").status_code == 401
    assert api.post("/api/v1/conversions", {}, format="json").status_code == 401
