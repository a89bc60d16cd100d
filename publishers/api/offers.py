"""Offers: the ones the key's publisher may run or ask for, with its access state; a request
for access; a new tracking link to an offer it may run (tracking/access.py decides)."""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import APIError, errors
from publishers.api.base import PublisherScopedView
from publishers.api.serializers import MoneyField, django_errors_to_drf
from publishers.audit import Actor
from tracking import access
from tracking.access import AccessState
from tracking.models import Campaign

OFFER_ID_PARAMETER = OpenApiParameter(
    "offer_id", str, OpenApiParameter.PATH, description="The offer's (campaign's) id."
)


class OfferSerializer(serializers.Serializer):
    id = serializers.CharField(source="campaign.public_id", help_text="The offer's id.")
    name = serializers.CharField(source="campaign.name")
    default_payout = MoneyField(
        source="campaign.default_payout",
        help_text="Per conversion, in `currency`, unless the advertiser sends another amount.",
    )
    currency = serializers.CharField(source="campaign.currency", help_text="ISO 4217.")
    access = serializers.ChoiceField(
        source="campaign.access",
        choices=Campaign.Access.choices,
        help_text="`public`: any publisher may run it; `approval`: staff approve requests; "
        "`private`: listed only for publishers staff opened it to.",
    )
    access_state = serializers.ChoiceField(
        source="state",
        choices=AccessState.ALL,
        help_text="Yours: `public` or `approved` (your links work), `requested` (waiting for "
        "staff), `rejected` (see `decision_note`; you may ask again) or `not_requested`.",
    )
    can_run = serializers.BooleanField(help_text="Your links to it work; you may create one.")
    decision_note = serializers.CharField(source="note", help_text="Staff's note, if any.")


class OfferListSerializer(serializers.Serializer):
    results = OfferSerializer(many=True)


class AccessRequestSerializer(serializers.Serializer):
    message = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="For staff: your traffic sources, countries, expected volume.",
    )


class LinkCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    default_placement = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        help_text="For clicks that carry no `placement` of their own.",
    )


class LinkSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="The link's `ref`.")
    offer_id = serializers.CharField(source="campaign.public_id")
    name = serializers.CharField()
    default_placement = serializers.CharField()
    url = serializers.SerializerMethodField(help_text="The text link; put your spid in it.")

    def get_url(self, link) -> str:
        return f"{settings.SITE_URL}/click?ref={link.code}&spid=YOUR_SPID"


def _offer_errors(exc: Exception) -> APIError:
    if isinstance(exc, access.OfferNotFound):
        return APIError(404, "not_found", "No such offer among those open to you.")
    assert isinstance(exc, access.AccessRefused)
    status = 409 if exc.code == "no_approval_needed" else 403
    return APIError(status, exc.code, exc.message)


class OfferListView(PublisherScopedView):
    """`GET /api/v1/offers`."""

    @extend_schema(
        operation_id="offers_list",
        summary="List offers and your access to each",
        description="Public offers, offers that need approval, and private offers opened to "
        "you, each with your access state. Clicks on a link to an offer you may not run "
        "are refused (`offer_not_approved`).",
        tags=["offers"],
        responses={200: OfferListSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        return Response(
            {"results": OfferSerializer(access.offers_list(self.publisher), many=True).data}
        )


class OfferAccessRequestView(PublisherScopedView):
    """`POST /api/v1/offers/{offer_id}/access-request`."""

    @extend_schema(
        operation_id="offers_access_request",
        summary="Request access to an offer that needs approval",
        description="Asking again while waiting updates the message; after a rejection it "
        "reopens the request. `409 no_approval_needed` when you may already run the offer.",
        tags=["offers"],
        parameters=[OFFER_ID_PARAMETER],
        request=AccessRequestSerializer,
        responses={200: OfferSerializer, **errors(400, 404, 409, 415)},
    )
    def post(self, request: Request, offer_id: str) -> Response:
        serializer = AccessRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            offer = access.offer_access_request(
                publisher=self.publisher,
                public_id=offer_id,
                message=serializer.validated_data.get("message", ""),
                actor=Actor.api(request),
            )
        except (access.OfferNotFound, access.AccessRefused) as exc:
            raise _offer_errors(exc) from None
        return Response(OfferSerializer(offer).data)


class OfferLinkCreateView(PublisherScopedView):
    """`POST /api/v1/offers/{offer_id}/links`."""

    @extend_schema(
        operation_id="offers_link_create",
        summary="Create a tracking link to an offer you may run",
        description="`403 offer_not_approved` for an offer you may only ask for.",
        tags=["offers"],
        parameters=[OFFER_ID_PARAMETER],
        request=LinkCreateSerializer,
        responses={201: LinkSerializer, **errors(400, 403, 404, 415)},
    )
    def post(self, request: Request, offer_id: str) -> Response:
        serializer = LinkCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            link = access.tracking_link_create(
                publisher=self.publisher,
                public_id=offer_id,
                actor=Actor.api(request),
                **serializer.validated_data,
            )
        except (access.OfferNotFound, access.AccessRefused) as exc:
            raise _offer_errors(exc) from None
        except DjangoValidationError as exc:
            raise django_errors_to_drf(exc) from None
        return Response(LinkSerializer(link).data, status=201)
