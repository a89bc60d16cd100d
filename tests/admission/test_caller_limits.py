"""Per-caller concurrency limits (config/admission.py) on real Redis and PostgreSQL.

A caller's other in-flight requests are real slots in the Redis semaphore, taken the way a
request running in another process takes them; the request under test then meets a full
semaphore exactly as it would in production.
"""

import time
import uuid

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from config import admission
from config.redis import get_redis
from tests.tracking.helpers import click_stored
from tracking.models import Conversion

pytestmark = pytest.mark.django_db


def hold_slots(caller: admission.Caller) -> list[tuple[str, str]]:
    """Take every slot of `caller`, as `caller.limit` requests in flight elsewhere would."""
    slots = [admission.acquire(caller) for _ in range(caller.limit)]
    assert all(isinstance(slot, tuple) for slot in slots), slots
    return slots


def limited_count(client, kind: str, caller: str) -> float:
    with override_settings(METRICS_BEARER_TOKEN="admission-test"):
        text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer admission-test").content.decode()
    for family in text_string_to_metric_families(text):
        if family.name == "roundtrip_requests_limited":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels == {
                    "kind": kind,
                    "caller": caller,
                }:
                    return sample.value
    return 0.0


def post_conversion(client, key: str, click_id: str, txn: str, **extra):
    return client.post(
        "/api/v1/conversions",
        {"click_id": click_id, "txn_id": txn},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        **extra,
    )


@pytest.fixture
def click_id(link) -> str:
    return click_stored(link=link, spid="s1", user_agent="Mozilla/5.0 Chrome/131.0").click_id


def test_a_key_with_every_slot_taken_gets_429_before_any_database_work(
    client, api_key, click_id, settings, django_assert_num_queries
):
    settings.INTAKE_CONCURRENCY_PER_KEY = 2
    caller = admission.Caller("intake", "key", admission._digest(api_key), 2)
    slots = hold_slots(caller)
    before = limited_count(client, "intake", "key")
    with django_assert_num_queries(0):
        response = post_conversion(client, api_key, click_id, "t-1")
    assert response.status_code == 429
    assert response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "rate_limited"
    assert Conversion.objects.count() == 0
    assert limited_count(client, "intake", "key") == before + 1
    # Another advertiser key is not affected; a slot given back lets the first key in again.
    for slot in slots[:1]:
        admission.release(slot)
    assert post_conversion(client, api_key, click_id, "t-2").status_code == 201
    # The request gave its slot back: exactly one is still held (the other "elsewhere" one).
    assert get_redis().zcard(slots[1][0]) == 1


def test_slots_of_a_crashed_process_expire(client, api_key, click_id, settings):
    settings.INTAKE_CONCURRENCY_PER_KEY = 1
    settings.ADMISSION_SLOT_SECONDS = 0.5
    caller = admission.Caller("intake", "key", admission._digest(api_key), 1)
    hold_slots(caller)  # never released, as by a process that died
    assert post_conversion(client, api_key, click_id, "t-1").status_code == 429
    time.sleep(0.6)
    assert post_conversion(client, api_key, click_id, "t-1").status_code == 201


def test_the_postback_token_and_the_address_are_limited(client, postback_token, click_id, settings):
    settings.INTAKE_CONCURRENCY_PER_KEY = 1
    settings.INTAKE_CONCURRENCY_PER_ADDRESS = 1
    hold_slots(admission.Caller("intake", "key", admission._digest(postback_token), 1))
    response = client.get("/postback", {"token": postback_token, "click_id": click_id})
    assert response.status_code == 429 and response["Retry-After"] == "1"
    # No credential: the caller is its address. Full address -> 429; another address -> 401.
    address = f"192.0.2.{uuid.uuid4().int % 250 + 1}"
    hold_slots(admission.Caller("intake", "address", address, 1))
    before = limited_count(client, "intake", "address")
    response = client.post(
        "/api/v1/conversions", {}, content_type="application/json", REMOTE_ADDR=address
    )
    assert response.status_code == 429 and response["Retry-After"] == "1"
    assert limited_count(client, "intake", "address") == before + 1
    other = client.post(
        "/api/v1/conversions", {}, content_type="application/json", REMOTE_ADDR="198.51.100.7"
    )
    assert other.status_code == 401


def test_the_publisher_api_and_the_dashboard_have_the_same_kind_of_limit(
    client, publisher_key, owner_client, settings
):
    settings.API_CONCURRENCY_PER_KEY = 1
    settings.PORTAL_CONCURRENCY_PER_SESSION = 1
    settings.API_RATE_LIMIT = "100000/min"
    hold_slots(admission.Caller("api", "key", admission._digest(publisher_key), 1))
    response = client.get("/api/v1/callbacks", HTTP_AUTHORIZATION=f"Bearer {publisher_key}")
    assert response.status_code == 429 and response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "rate_limited"

    assert owner_client.get("/dashboard/reports/").status_code == 200
    session = owner_client.cookies[settings.SESSION_COOKIE_NAME].value
    hold_slots(admission.Caller("portal", "session", admission._digest(session), 1))
    response = owner_client.get("/dashboard/reports/")
    assert response.status_code == 429 and response["Retry-After"] == "1"


def test_the_redirect_is_never_limited_here(client, link):
    assert admission.caller_for(client.get("/click").wsgi_request) is None
    response = client.get("/click", {"ref": link.code})
    assert response.status_code == 302


def test_requests_pass_unlimited_when_redis_is_down(client, api_key, click_id, settings):
    settings.INTAKE_CONCURRENCY_PER_KEY = 1
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    caller = admission.Caller("intake", "key", admission._digest(api_key), 1)
    assert admission.acquire(caller) is None  # fail open
    response = post_conversion(client, api_key, click_id, "t-1")
    assert response.status_code == 201, response.content
