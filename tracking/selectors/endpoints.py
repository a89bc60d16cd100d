"""Reads for the public endpoints, on every click and conversion: tracking links by ref code and
advertisers by API key, both cached per process."""

import time as time_module

from django.conf import settings
from django.utils import timezone

from publishers.keys import parse_lookup, verify_key
from tracking.cache import MISS, ProcessCache
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    Campaign,
    TrackingLink,
)

# Links by ref code: link or None (unknown codes are kept too, but only live links are kept
# for outages).
_LINK_CACHE = ProcessCache(50_000)


def link_for_click(code: str) -> TrackingLink | None:
    """The live link for a `ref` code: link, publisher and campaign all active; else None.

    Cached in the process for CLICKS_LINK_CACHE_SECONDS: compiling and running this three-table
    query is most of a click's cost (≈ 1.5 ms of ~3 ms here). The price: pausing a link,
    publisher or campaign takes up to that long to reach every web process. Unknown codes are
    cached too, so a flood of made-up refs doesn't turn into database load.

    While the database is unreachable, a live link read in the last CLICKS_OUTAGE_STALE_SECONDS
    is still returned (tracking/cache.py); any other code raises the database error, which the
    click endpoint answers with 503.
    """
    if not code or len(code) > 32:
        return None
    return _LINK_CACHE.load(
        code,
        lambda: (
            # The campaign's policy (tracking/policy.py) comes along, cached with the link.
            TrackingLink.objects.select_related("campaign", "campaign__policy", "publisher")
            .filter(
                code=code,
                is_active=True,
                publisher__status="active",
                campaign__status=Campaign.Status.ACTIVE,
            )
            .first()
        ),
        ttl=settings.CLICKS_LINK_CACHE_SECONDS,
    )


# Active advertiser keys by (kind, lookup): the key row with its advertiser.
_KEY_CACHE = ProcessCache(10_000)


def advertiser_for_key(plaintext: str, kind: str) -> Advertiser | None:
    """The active advertiser owning this active key of `kind`, else None.

    A key that verified is cached in the process for CONVERSIONS_KEY_CACHE_SECONDS (the secret
    is still checked against its digest on every request): conversion intake then starts
    without a query. The price: revoking a key or pausing its advertiser takes up to that
    long to reach every web process. Unknown and revoked keys are never cached.
    """
    lookup = parse_lookup(plaintext, AdvertiserAPIKey.PREFIXES[kind])
    if lookup is None:
        return None
    ttl = settings.CONVERSIONS_KEY_CACHE_SECONDS
    clock = time_module.monotonic()
    key = _KEY_CACHE.fresh((kind, lookup), clock) if ttl > 0 else MISS
    if key is MISS:
        key = (
            AdvertiserAPIKey.objects.select_related("advertiser")
            .filter(lookup=lookup, kind=kind, revoked_at__isnull=True)
            .first()
        )
        if key is None or key.advertiser.status != Advertiser.Status.ACTIVE:
            _KEY_CACHE.pop((kind, lookup), None)
            return None
        if ttl > 0:
            _KEY_CACHE.keep((kind, lookup), key, clock=clock, ttl=ttl)
    if not verify_key(plaintext, key.digest):
        return None
    now = timezone.now()
    # "Last used" to the minute is plenty, and saves a write on most requests.
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        AdvertiserAPIKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key.advertiser


def advertiser_key_forget(kind: str, lookup: str) -> None:
    """Drop a key from this process's cache (its revocation): this process refuses it at once,
    the others within CONVERSIONS_KEY_CACHE_SECONDS."""
    _KEY_CACHE.pop((kind, lookup), None)
