"""Reads for the advertiser portal: each one takes the advertiser, never a bare id."""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.http import Http404

from publishers.keyset import Keyset, Page
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    AdvertiserUser,
    Campaign,
    IntakeOutcome,
)

# The conversion log's order and cursor: newest first, on the (advertiser, created_at, id) index.
OUTCOME_LOG = Keyset("created_at", descending=True)


def advertiser_user_for(user) -> AdvertiserUser | None:
    """The signed-in account's place in an advertiser, or None (a publisher member, staff)."""
    if not user.is_authenticated:
        return None
    return AdvertiserUser.objects.select_related("advertiser").filter(user=user).first()


def campaigns_for_advertiser(advertiser: Advertiser) -> list[Campaign]:
    return list(Campaign.objects.filter(advertiser=advertiser).order_by("name", "pk"))


def campaign_for_advertiser(advertiser: Advertiser, public_id: str) -> Campaign:
    """One of the advertiser's campaigns by public id; 404 for anyone else's."""
    campaign = Campaign.objects.filter(advertiser=advertiser, public_id=public_id).first()
    if campaign is None:
        raise Http404("No such campaign.")
    return campaign


def keys_for_advertiser(advertiser: Advertiser) -> list[AdvertiserAPIKey]:
    return list(
        AdvertiserAPIKey.objects.filter(advertiser=advertiser).order_by("-created_at", "-pk")
    )


def key_for_advertiser(advertiser: Advertiser, lookup: str) -> AdvertiserAPIKey:
    """One of the advertiser's keys by its lookup part; 404 for anyone else's."""
    key = AdvertiserAPIKey.objects.filter(advertiser=advertiser, lookup=lookup).first()
    if key is None:
        raise Http404("No such key.")
    return key


@dataclass(frozen=True)
class OutcomeFilters:
    campaign: Campaign | None = None
    start: date | None = None  # first day, in `tz`
    end: date | None = None  # last day, in `tz` (included)
    tz: str = "UTC"


def outcome_log(
    advertiser: Advertiser, filters: OutcomeFilters, *, cursor: str, limit: int
) -> Page:
    """One page of the advertiser's intake outcomes, newest first, filtered by campaign and
    by days in the filter's time zone."""
    rows = IntakeOutcome.objects.filter(advertiser=advertiser).select_related(
        "campaign", "conversion"
    )
    if filters.campaign is not None:
        rows = rows.filter(campaign=filters.campaign)
    zone = ZoneInfo(filters.tz)
    if filters.start is not None:
        rows = rows.filter(created_at__gte=datetime.combine(filters.start, time(), zone))
    if filters.end is not None:
        after_end = datetime.combine(filters.end + timedelta(days=1), time(), zone)
        rows = rows.filter(created_at__lt=after_end)
    return OUTCOME_LOG.page(rows, cursor=cursor or None, limit=limit)
