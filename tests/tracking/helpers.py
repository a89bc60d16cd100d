"""Helpers for the smart-ad and click-intelligence tests: a real .mmdb, isolated Redis keys."""

import uuid
from collections.abc import Callable
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

from config.redis import get_redis
from tracking import clickbuffer
from tracking.cache import process_caches_clear
from tracking.models import Click
from tracking.services import click_record


def build_country_mmdb(
    path: Path, countries: dict[str, str], database_type: str = "GeoLite2-Country"
) -> Path:
    """Write a MaxMind-format database mapping networks (CIDR) to ISO country codes."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type)
    for network, code in countries.items():
        writer.insert_network(IPSet([network]), {"country": {"iso_code": code}})
    writer.to_db_file(str(path))
    return path


def isolate_tracking_state(settings) -> Callable[[], None]:
    """Give the test its own Redis key prefix and empty per-process caches; returns the
    clean-up, which deletes the test's keys from the Redis configured at the start."""
    prefix = settings.TRACKING_REDIS_PREFIX = f"test:{uuid.uuid4().hex[:12]}:"
    client = get_redis()
    process_caches_clear()

    def clean_up() -> None:
        process_caches_clear()
        if client is not None:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)

    return clean_up


def click_stored(**fields) -> Click:
    """`click_record(**fields)` through the production path (into the click buffer), flushed
    as beat's flusher would: the stored row."""
    recorded = click_record(**fields)
    clickbuffer.clicks_flush_all()
    return Click.objects.get(click_id=recorded.click_id)
