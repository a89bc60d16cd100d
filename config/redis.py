"""One shared Redis client per process, for the features that keep state in Redis (click
buffer, unique-click windows, per-host delivery slots and breakers).

`get_redis()` returns None when no `REDIS_URL` is configured (local mode): callers then fall back
to their database or in-process behaviour.
"""

import functools

import redis
from django.conf import settings


@functools.cache
def _client(url: str) -> redis.Redis:
    # Short timeouts: Redis sits on hot paths (the click redirect), and a stuck Redis must
    # fail fast into the caller's fallback rather than hold a visitor.
    return redis.Redis.from_url(
        url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=30
    )


def get_redis() -> redis.Redis | None:
    url = settings.REDIS_URL
    return _client(url) if url else None
