"""What a publisher earns for a conversion: the payout terms of its campaign × publisher.

A conversion's payout is decided when it is recorded, from the term in force then
(`PayoutTerm`, a history: a newer `effective_from` supersedes, nothing is edited), and stored
on the conversion. An advertiser's correction of the revenue decides it again from the same
term (the one in force when the conversion was recorded), so a later term never rewrites the
past. Without a term the payout is what the advertiser sent, else the campaign's default.
"""

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from tracking.models import Campaign, PayoutTerm

# Conversion.payout's precision.
_PAYOUT_STEP = Decimal("0.000001")


def revshare_amount(revenue: Decimal | None, percent: Decimal) -> Decimal:
    """`percent` % of `revenue`, to the payout's precision; a conversion without a revenue
    earns nothing from a share of it.

    >>> revshare_amount(Decimal("19.99"), Decimal("30"))
    Decimal('5.997000')
    >>> revshare_amount(None, Decimal("30"))
    Decimal('0.000000')
    """
    if revenue is None:
        return Decimal(0).quantize(_PAYOUT_STEP)
    return (revenue * percent / 100).quantize(_PAYOUT_STEP, rounding=ROUND_HALF_UP)


def term_payout(term: PayoutTerm, revenue: Decimal | None) -> Decimal:
    """The payout `term` gives a conversion with `revenue` (in the campaign's currency)."""
    if term.kind == PayoutTerm.Kind.FIXED:
        return term.amount
    return revshare_amount(revenue, term.percent)


def payout_term_in_force(*, campaign_id: int, publisher_id: int, at: datetime) -> PayoutTerm | None:
    """The publisher's term on the campaign at `at`: the latest one that started by then."""
    return (
        PayoutTerm.objects.filter(
            campaign_id=campaign_id, publisher_id=publisher_id, effective_from__lte=at
        )
        .order_by("-effective_from")
        .first()
    )


def payout_terms_current(*, publisher_id: int, campaign_ids: list[int], at: datetime) -> dict:
    """{campaign id: the publisher's term in force at `at`} for those campaigns that have one
    (the dashboard's offer cards)."""
    terms: dict[int, PayoutTerm] = {}
    for term in (
        PayoutTerm.objects.filter(
            publisher_id=publisher_id, campaign_id__in=campaign_ids, effective_from__lte=at
        )
        .select_related("campaign")
        .order_by("campaign_id", "-effective_from")
    ):
        terms.setdefault(term.campaign_id, term)
    return terms


def payout_decide(
    *,
    campaign: Campaign,
    term: PayoutTerm | None,
    revenue: Decimal | None,
    sent_payout: Decimal | None,
    fallback: Decimal | None = None,
) -> Decimal:
    """The payout of a conversion: the term's when there is one (the advertiser's own
    `payout` is then ignored: the network decides what it pays), else the amount sent, else
    `fallback` (the payout recorded already, for a correction), else the campaign's default."""
    if term is not None:
        return term_payout(term, revenue)
    if sent_payout is not None:
        return sent_payout
    return campaign.default_payout if fallback is None else fallback
