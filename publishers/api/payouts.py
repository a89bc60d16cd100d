"""`GET /api/v1/payouts`: the publisher's payout terms and the caps that concern it."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import errors
from postbacks.values import format_amount
from publishers import selectors
from publishers.api.base import PublisherScopedView
from publishers.api.serializers import OfferTermsListSerializer
from tracking.caps import CapStatus


def _cap(status: CapStatus) -> dict:
    cap = status.cap
    return {
        "scope": "publisher" if cap.publisher_id else "campaign",
        "period": cap.period,
        "period_start": None if cap.period == "total" else status.period_start,
        "max_conversions": cap.max_conversions,
        "max_payout": None if cap.max_payout is None else format_amount(cap.max_payout),
        "conversions": status.conversions,
        "payout": format_amount(status.payout),
        "reached": status.full,
    }


def _offer(offer: selectors.OfferTerms) -> dict:
    campaign, term = offer.campaign, offer.term
    return {
        "campaign": campaign,
        "currency": campaign.currency,
        "time_zone": campaign.time_zone,
        "cap_policy": campaign.cap_policy,
        "payout": {
            "kind": term.kind if term else "default",
            "amount": format_amount(term.amount) if term and term.amount is not None else None,
            "percent": f"{term.percent:f}" if term and term.percent is not None else None,
            "effective_from": term.effective_from if term else None,
            "default_payout": format_amount(campaign.default_payout),
        },
        "caps": [_cap(status) for status in offer.caps],
    }


class PayoutTermsView(PublisherScopedView):
    """Every campaign the publisher has a link to, with what it earns there now."""

    @extend_schema(
        operation_id="payouts_list",
        summary="Your payout terms and caps, per campaign",
        description="For each campaign you have a link to: your payout terms in force now "
        "(a fixed amount or a revenue share, in the campaign's currency) or the campaign's "
        "default, and the caps that concern you (the campaign's and yours) with what the "
        "current period used. A conversion keeps the payout decided when it was recorded.",
        tags=["payouts"],
        responses={200: OfferTermsListSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        offers = selectors.offer_terms_for_publisher(self.publisher, at=timezone.now())
        data = {"results": [_offer(offer) for offer in offers.values()]}
        return Response(OfferTermsListSerializer(data).data)
