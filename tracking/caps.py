"""Conversion caps and payout budgets: whether a new conversion is still paid.

A campaign's caps (`ConversionCap`) limit its conversions and/or their payout per day, per
month (both in the campaign's time zone) or in total, for the whole campaign or one
publisher. Each cap keeps one counter row per period (`CapCounter`). The intake claims a
place in the conversion's own transaction: it locks the counters of every cap that applies
(`SELECT … FOR UPDATE`, always in cap order, so two intakes can't deadlock), checks them all,
and adds the conversion to each only when every one has room. A concurrent conversion waits
for the lock and reads the committed count, so caps can't overshoot; a conversion that rolls
back (a repeat, a refusal) takes its counts with it. Campaigns without caps take no lock.

A place once taken is kept: a conversion the advertiser later rejects or reverses does not
give it back (the cap counts conversions accepted while it was open).
"""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import F, Q

from tracking.models import Campaign, CapCounter, ConversionCap

# The one period of a total cap.
TOTAL_PERIOD_START = date(2000, 1, 1)


def period_start(period: str, at: datetime, time_zone: str) -> date:
    """The first day of the cap period holding `at`, in `time_zone`.

    >>> from datetime import UTC
    >>> period_start("daily", datetime(2026, 3, 31, 23, 30, tzinfo=UTC), "Europe/Berlin")
    datetime.date(2026, 4, 1)
    >>> period_start("monthly", datetime(2026, 3, 31, 23, 30, tzinfo=UTC), "UTC")
    datetime.date(2026, 3, 1)
    """
    if period == ConversionCap.Period.TOTAL:
        return TOTAL_PERIOD_START
    local = at.astimezone(ZoneInfo(time_zone)).date()
    return local if period == ConversionCap.Period.DAILY else local.replace(day=1)


@dataclass(frozen=True)
class CapReached:
    """The first cap (in cap order) a conversion found full, and what it had used."""

    cap: ConversionCap
    used_conversions: int
    used_payout: Decimal

    @property
    def message(self) -> str:
        return f"The campaign's {self.cap.describe()} is reached."

    def as_fields(self) -> dict[str, list[str]]:
        """The cap as the intake's error names it, in the API's one error shape (each field a
        list of strings): `cap_scope` ("campaign" or "publisher"), `cap_period` ("daily",
        "monthly", "total") and `cap`, the cap as a sentence."""
        return {
            "cap_scope": ["publisher" if self.cap.publisher_id else "campaign"],
            "cap_period": [self.cap.period],
            "cap": [self.cap.describe()],
        }


def _caps_for(campaign: Campaign, publisher_id: int) -> list[ConversionCap]:
    return list(
        ConversionCap.objects.filter(campaign=campaign)
        .filter(Q(publisher__isnull=True) | Q(publisher_id=publisher_id))
        .order_by("pk")
    )


def caps_claim(
    *, campaign: Campaign, publisher_id: int, payout: Decimal, at: datetime
) -> CapReached | None:
    """Take a place for one conversion paying `payout` in every cap of `campaign` that
    applies to the publisher, or none when one of them is full (returned). Must run inside
    the conversion's transaction: the counters stay locked until it ends."""
    caps = _caps_for(campaign, publisher_id)
    if not caps:
        return None
    starts = {cap.pk: period_start(cap.period, at, campaign.time_zone) for cap in caps}
    # Create missing counters (in cap order, like the lock below); a concurrent insert of the
    # same counter waits for ours and then does nothing.
    CapCounter.objects.bulk_create(
        [CapCounter(cap=cap, period_start=starts[cap.pk]) for cap in caps],
        ignore_conflicts=True,
    )
    wanted = Q()
    for cap in caps:
        wanted |= Q(cap_id=cap.pk, period_start=starts[cap.pk])
    counters = {
        counter.cap_id: counter
        for counter in CapCounter.objects.select_for_update().filter(wanted).order_by("cap_id")
    }
    for cap in caps:
        cap.campaign = campaign
        counter = counters[cap.pk]
        over_count = cap.max_conversions is not None and counter.conversions >= cap.max_conversions
        over_budget = cap.max_payout is not None and counter.payout + payout > cap.max_payout
        if over_count or over_budget:
            return CapReached(cap, counter.conversions, counter.payout)
    CapCounter.objects.filter(pk__in=[c.pk for c in counters.values()]).update(
        conversions=F("conversions") + 1, payout=F("payout") + payout
    )
    return None


@dataclass(frozen=True)
class CapStatus:
    """How much of a cap's current period is used (the dashboard's offer cards)."""

    cap: ConversionCap
    period_start: date
    conversions: int
    payout: Decimal

    @property
    def full(self) -> bool:
        cap = self.cap
        return (cap.max_conversions is not None and self.conversions >= cap.max_conversions) or (
            cap.max_payout is not None and self.payout >= cap.max_payout
        )


def caps_status(*, publisher_id: int, campaigns: list[Campaign], at: datetime) -> dict:
    """{campaign id: [CapStatus of each cap that applies to the publisher]}: the campaign's
    own caps and the publisher's, never another publisher's."""
    by_campaign = {campaign.pk: campaign for campaign in campaigns}
    caps = list(
        ConversionCap.objects.filter(campaign_id__in=list(by_campaign))
        .filter(Q(publisher__isnull=True) | Q(publisher_id=publisher_id))
        .order_by("campaign_id", "pk")
    )
    starts = {}
    for cap in caps:
        cap.campaign = by_campaign[cap.campaign_id]
        starts[cap.pk] = period_start(cap.period, at, cap.campaign.time_zone)
    wanted = Q(pk__in=[])
    for cap in caps:
        wanted |= Q(cap_id=cap.pk, period_start=starts[cap.pk])
    used = {
        row.cap_id: row for row in CapCounter.objects.filter(wanted)
    }  # no row yet: nothing used
    result: dict[int, list[CapStatus]] = {}
    for cap in caps:
        row = used.get(cap.pk)
        result.setdefault(cap.campaign_id, []).append(
            CapStatus(
                cap,
                starts[cap.pk],
                row.conversions if row else 0,
                row.payout if row else Decimal(0),
            )
        )
    return result
