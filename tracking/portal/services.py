"""Writes of the advertiser portal: keys (create, revoke) and the test conversion."""

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from publishers.models import Publisher
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    Campaign,
    IntakeOutcome,
    TrackingLink,
)
from tracking.selectors import advertiser_key_forget
from tracking.services import IntakeError, advertiser_key_create, click_record, conversion_record

logger = logging.getLogger(__name__)

# The house publisher that test clicks belong to. Paused, so its links never take a real
# visitor's click; no team and no callbacks, so a test conversion pays no real publisher and
# calls nobody back.
TEST_PUBLISHER_PUBLIC_ID = "test-traffic"
TEST_PUBLISHER_NAME = "Test traffic (advertiser portals)"
TEST_LINK_NAME = "Advertiser portal test link"


def advertiser_portal_key_create(
    *, advertiser: Advertiser, kind: str, name: str
) -> tuple[AdvertiserAPIKey, str]:
    """A new key or postback token, and its plaintext (shown once, never stored)."""
    key, plaintext = advertiser_key_create(advertiser=advertiser, kind=kind, name=name)
    logger.info("Advertiser %s created %s key %s", advertiser.public_id, kind, key.lookup)
    return key, plaintext


def advertiser_key_revoke(*, key: AdvertiserAPIKey) -> bool:
    """Revoke a key: refused by this process at once, by every other within
    CONVERSIONS_KEY_CACHE_SECONDS. False when it was revoked already."""
    revoked = AdvertiserAPIKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    advertiser_key_forget(key.kind, key.lookup)
    if revoked:
        logger.info("Advertiser %s revoked key %s", key.advertiser_id, key.lookup)
    return bool(revoked)


def house_test_publisher() -> Publisher:
    """The house publisher of test clicks (created on first use)."""
    publisher, _ = Publisher.objects.get_or_create(
        public_id=TEST_PUBLISHER_PUBLIC_ID,
        defaults={"name": TEST_PUBLISHER_NAME, "status": Publisher.Status.PAUSED},
    )
    return publisher


def house_test_link(campaign: Campaign) -> TrackingLink:
    publisher = house_test_publisher()
    link = TrackingLink.objects.filter(publisher=publisher, campaign=campaign).first()
    if link is None:
        link = TrackingLink.objects.create(
            publisher=publisher, campaign=campaign, name=TEST_LINK_NAME
        )
    return link


@dataclass(frozen=True)
class SentTestConversion:
    click_id: str
    outcome: IntakeOutcome | None  # None when the intake refused before finding the click
    error: str = ""


def conversion_test_send(
    *,
    advertiser: Advertiser,
    campaign: Campaign,
    event: str,
    ip: str | None,
    user_agent: str,
) -> SentTestConversion:
    """A test click on `campaign` from the portal (the caller's own IP and browser), then a
    conversion for it through the intake (`conversion_record`, as the API calls it), marked as
    a test in the advertiser's log.

    The click belongs to the house test publisher (`house_test_publisher`), so the conversion pays
    no real publisher and fires no publisher's callback; its payout is 0. The intake's guards
    apply as to any conversion (a campaign's minimum time to convert rejects it, a bot user
    agent holds it), and the log shows what they decided."""
    if campaign.advertiser_id != advertiser.pk:
        raise ValueError("Not this advertiser's campaign.")
    with transaction.atomic():
        link = house_test_link(campaign)
    click = click_record(
        link=link, spid="portal-test", ip=ip, user_agent=user_agent, placement="portal-test"
    )
    try:
        conversion_record(
            advertiser=advertiser,
            click_id=click.click_id,
            event=event,
            txn_id=f"test-{click.click_id}",
            payout=Decimal(0),
            test=True,
        )
    except IntakeError as exc:
        logged = _test_outcome(advertiser, click.click_id)
        return SentTestConversion(click.click_id, logged, error=exc.message)
    return SentTestConversion(click.click_id, _test_outcome(advertiser, click.click_id))


def _test_outcome(advertiser: Advertiser, click_id: str) -> IntakeOutcome | None:
    return (
        IntakeOutcome.objects.filter(advertiser=advertiser, click_id=click_id, is_test=True)
        .select_related("campaign", "conversion")
        .order_by("-created_at", "-pk")
        .first()
    )
