"""Per-key rate limits: 429 in our error shape, with Retry-After, counted per key in the
cache (Redis in this suite, as in production)."""

import pytest

pytestmark = pytest.mark.django_db


def test_it_limits_each_key_separately(api, other_api, world, settings):
    settings.API_RATE_LIMIT = "3/min"
    for _ in range(3):
        assert api.get("/api/v1/callbacks").status_code == 200
    response = api.get("/api/v1/callbacks")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 0 < int(response["Retry-After"]) <= 60
    # Every route shares the key's budget ...
    assert api.get("/api/v1/postbacks").status_code == 429
    # ... and another key has its own.
    assert other_api.get("/api/v1/callbacks").status_code == 200


def test_it_does_not_count_requests_without_a_valid_key(client, api, world, settings):
    settings.API_RATE_LIMIT = "2/min"
    for _ in range(5):
        client.get("/api/v1/callbacks", HTTP_AUTHORIZATION="Bearer rt_pub_nope")
    assert api.get("/api/v1/callbacks").status_code == 200
