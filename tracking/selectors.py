"""Reads for tracking."""

from tracking.models import Advertiser, AdvertiserAPIKey, Campaign, TrackingLink


def link_for_click(code: str) -> TrackingLink | None:
    """The live link for a `ref` code: link, publisher and campaign all active; else None."""
    if not code or len(code) > 32:
        return None
    return (
        TrackingLink.objects.select_related("campaign", "publisher")
        .filter(
            code=code,
            is_active=True,
            publisher__status="active",
            campaign__status=Campaign.Status.ACTIVE,
        )
        .first()
    )


def advertiser_for_key(plaintext: str, kind: str) -> Advertiser | None:
    """The active advertiser owning this active key of `kind`, else None."""
    from django.utils import timezone

    from publishers.keys import parse_lookup, verify_key

    lookup = parse_lookup(plaintext, AdvertiserAPIKey.PREFIXES[kind])
    if lookup is None:
        return None
    key = (
        AdvertiserAPIKey.objects.select_related("advertiser")
        .filter(lookup=lookup, kind=kind, revoked_at__isnull=True)
        .first()
    )
    if key is None or not verify_key(plaintext, key.digest):
        return None
    if key.advertiser.status != Advertiser.Status.ACTIVE:
        return None
    now = timezone.now()
    # "Last used" to the minute is plenty, and saves a write on most requests.
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        AdvertiserAPIKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key.advertiser
