"""The per-key rate limit keeps its counter in Redis; Redis being down must not fail the API."""

import pytest
from django.core.cache import caches
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_it_serves_requests_unthrottled_when_redis_is_down(client, publisher_key):
    unreachable = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        }
    }
    with override_settings(CACHES=unreachable, API_RATE_LIMIT="1/min"):
        caches._settings = None  # make the cache handler re-read CACHES
        try:
            for _ in range(3):
                response = client.get(
                    "/api/v1/conversions", HTTP_AUTHORIZATION=f"Bearer {publisher_key}"
                )
                assert response.status_code == 200, response.content
        finally:
            caches._settings = None
