"""Fixtures for the tracking tests."""

import pytest

from config.redis import get_redis
from tracking import clickbuffer


@pytest.fixture
def buffered(settings):
    """The click buffer on (as in production), batches of 50, and an empty stream before and
    after; yields the Redis client."""
    settings.CLICKS_BUFFERED = True
    settings.CLICKS_BUFFER_BATCH = 50
    client = get_redis()

    def wipe() -> None:
        client.delete(clickbuffer.STREAM)
        for key in client.scan_iter("roundtrip:click:*"):
            client.delete(key)

    wipe()
    yield client
    wipe()
