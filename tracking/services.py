"""Writes for clicks and conversions."""

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from postbacks.models import Postback
from postbacks.services import postbacks_create_for_conversion
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    Click,
    ClickRejection,
    Conversion,
    Creative,
    TrackingLink,
)

MAX_PLACEMENT_LENGTH = 100


# --- Clicks ---------------------------------------------------------------------------------


def spid_problem(spid: str) -> ClickRejection.Reason | None:
    """Why a spid can't be recorded, or None. Anything printable up to 255 characters is fine."""
    if len(spid) > settings.CLICKS_SPID_MAX_LENGTH:
        return ClickRejection.Reason.SPID_TOO_LONG
    if any(unicodedata.category(ch) == "Cc" for ch in spid):
        return ClickRejection.Reason.SPID_CONTROL_CHARS
    return None


def normalize_placement(value: str) -> str:
    return " ".join(value.split())[:MAX_PLACEMENT_LENGTH]


def click_rejection_count(*, publisher_id: int, reason: str, now: datetime | None = None) -> None:
    """Count a refused click without a row per click (one upsert per publisher, day, reason)."""
    day = timezone.localdate(now or timezone.now())
    updated = ClickRejection.objects.filter(
        publisher_id=publisher_id, day=day, reason=reason
    ).update(count=F("count") + 1)
    if updated:
        return
    try:
        with transaction.atomic():
            ClickRejection.objects.create(
                publisher_id=publisher_id, day=day, reason=reason, count=1
            )
    except IntegrityError:
        # Another request created the row between our update and insert.
        ClickRejection.objects.filter(publisher_id=publisher_id, day=day, reason=reason).update(
            count=F("count") + 1
        )


def click_record(
    *,
    link: TrackingLink,
    spid: str,
    placement: str = "",
    creative_code: str = "",
    ip: str | None = None,
    user_agent: str = "",
    referer: str = "",
) -> Click:
    """Record one click on `link`. The spid must already have passed `spid_problem`."""
    creative = None
    if creative_code:
        # A creative of another campaign is ignored rather than refused: the visitor's
        # redirect matters more than a mislabelled link.
        creative = Creative.objects.filter(
            public_id=creative_code[:32], campaign_id=link.campaign_id
        ).first()
    return Click.objects.create(
        link=link,
        publisher_id=link.publisher_id,
        campaign_id=link.campaign_id,
        creative=creative,
        spid=spid,
        placement=normalize_placement(placement or link.default_placement),
        ip=ip,
        user_agent=user_agent[:512],
        referer=referer[:1024],
    )


# --- Conversions ----------------------------------------------------------------------------


class IntakeError(Exception):
    """A conversion that can't be recorded; maps to an HTTP status and an error code."""

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


@dataclass
class ConversionOutcome:
    conversion: Conversion
    created: bool
    postbacks: list[Postback] = field(default_factory=list)


# Which status changes an advertiser may report for an existing conversion.
ALLOWED_TRANSITIONS = {
    (Conversion.Status.PENDING, Conversion.Status.APPROVED),
    (Conversion.Status.PENDING, Conversion.Status.REJECTED),
    (Conversion.Status.APPROVED, Conversion.Status.REJECTED),
}


def conversion_record(
    *,
    advertiser: Advertiser,
    click_id: str,
    event: str = "conversion",
    txn_id: str = "",
    payout: Decimal | None = None,
    currency: str | None = None,
    revenue: Decimal | None = None,
    status: str = Conversion.Status.APPROVED,
    now: datetime | None = None,
) -> ConversionOutcome:
    """Record a conversion and, in the same transaction, its postbacks (sent on commit).

    Idempotent: the same `txn_id` (or, without one, the same click and event) returns the
    conversion already recorded; a new status for it is a status change, which fires the
    templates subscribed to that status.
    """
    now = now or timezone.now()
    click = (
        Click.objects.select_related("campaign", "publisher")
        .filter(click_id=click_id, campaign__advertiser=advertiser)
        .first()
    )
    if click is None:
        # Another advertiser's click is "not found" too: ids must not leak across tenants.
        raise IntakeError(404, "click_not_found", f"No click with id {click_id!r}.")

    with transaction.atomic():
        existing = _existing_conversion(advertiser, click, event, txn_id)
        if existing is not None:
            return _replay(existing, click, status, now)
        campaign = click.campaign
        if now - click.created_at > campaign.attribution_window:
            raise IntakeError(
                422,
                "attribution_window_expired",
                f"The click is older than the campaign's attribution window "
                f"({campaign.attribution_window}).",
            )
        try:
            with transaction.atomic():
                conversion = Conversion.objects.create(
                    click=click,
                    publisher_id=click.publisher_id,
                    advertiser=advertiser,
                    campaign=campaign,
                    event=event,
                    txn_id=txn_id,
                    status=status,
                    payout=campaign.default_payout if payout is None else payout,
                    revenue=campaign.default_revenue if revenue is None else revenue,
                    currency=currency or campaign.currency,
                    created_at=now,
                    updated_at=now,
                )
        except IntegrityError:
            # A concurrent request recorded the same transaction first: answer as a replay.
            existing = _existing_conversion(advertiser, click, event, txn_id)
            if existing is None:
                raise
            return _replay(existing, click, status, now)
        postbacks = postbacks_create_for_conversion(conversion, click=click, now=now)
    return ConversionOutcome(conversion, created=True, postbacks=postbacks)


def _existing_conversion(
    advertiser: Advertiser, click: Click, event: str, txn_id: str
) -> Conversion | None:
    if txn_id:
        query = Conversion.objects.filter(advertiser=advertiser, txn_id=txn_id)
    else:
        query = Conversion.objects.filter(click=click, event=event, txn_id="")
    return query.select_for_update().first()


def _replay(existing: Conversion, click: Click, status: str, now: datetime) -> ConversionOutcome:
    if existing.click_id != click.pk:
        raise IntakeError(
            409,
            "txn_id_conflict",
            f"Transaction {existing.txn_id!r} was already recorded for another click.",
        )
    if status == existing.status:
        return ConversionOutcome(existing, created=False, postbacks=list(existing.postbacks.all()))
    if (existing.status, status) not in ALLOWED_TRANSITIONS:
        raise IntakeError(
            409,
            "status_change_not_allowed",
            f"A conversion can't go from {existing.status} to {status}.",
        )
    existing.status = status
    existing.updated_at = now
    existing.save(update_fields=["status", "updated_at"])
    postbacks_create_for_conversion(existing, click=click, now=now)
    return ConversionOutcome(existing, created=False, postbacks=list(existing.postbacks.all()))


# --- Advertiser credentials -----------------------------------------------------------------


def advertiser_key_create(
    *, advertiser: Advertiser, kind: str = "api", name: str = ""
) -> tuple[AdvertiserAPIKey, str]:
    """Create an API key (kind "api") or GET postback token (kind "token"); returns the row
    and the plaintext, which is shown once and never stored."""
    from publishers.keys import generate_key

    generated = generate_key(AdvertiserAPIKey.PREFIXES[kind])
    key = AdvertiserAPIKey.objects.create(
        advertiser=advertiser,
        kind=kind,
        name=name,
        lookup=generated.lookup,
        digest=generated.digest,
    )
    return key, generated.plaintext
