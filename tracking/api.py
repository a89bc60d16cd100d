"""Conversion intake for advertisers and ad servers: `POST /api/v1/conversions` and `GET /postback`."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import parsers, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import APIError
from config.hostile import StrictJSONParser
from postbacks.values import format_amount
from tracking import selectors
from tracking.models import Advertiser, AdvertiserAPIKey, Conversion
from tracking.services import ConversionOutcome, IntakeError, conversion_record


class ConversionInSerializer(serializers.Serializer):
    click_id = serializers.CharField(max_length=64)
    event = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$",
        required=False,
        default="conversion",
        error_messages={"invalid": "Use 1-50 letters, digits, '_', '.' or '-'."},
    )
    txn_id = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    payout = serializers.DecimalField(
        max_digits=20, decimal_places=6, min_value=0, required=False, allow_null=True
    )
    revenue = serializers.DecimalField(
        max_digits=20, decimal_places=6, min_value=0, required=False, allow_null=True
    )
    currency = serializers.RegexField(
        r"^[A-Za-z]{3}$",
        required=False,
        allow_null=True,
        error_messages={"invalid": "Use a three-letter ISO 4217 code, e.g. USD."},
    )
    status = serializers.ChoiceField(
        choices=Conversion.Status.choices, required=False, default=Conversion.Status.APPROVED
    )

    def validate_event(self, value: str) -> str:
        return value.lower()

    def validate_currency(self, value: str | None) -> str | None:
        return value.upper() if value else None


def conversion_payload(outcome: ConversionOutcome) -> dict:
    conversion = outcome.conversion
    return {
        "id": conversion.public_id,
        "click_id": conversion.click.click_id,
        "event": conversion.event,
        "txn_id": conversion.txn_id,
        "status": conversion.status,
        # Why a guard changed the status ("too_fast", "bot_click"), "" when none did.
        "reason": conversion.reason,
        "payout": format_amount(conversion.payout),
        "revenue": None if conversion.revenue is None else format_amount(conversion.revenue),
        "currency": conversion.currency,
        "created_at": conversion.created_at.isoformat(),
        "created": outcome.created,
        "postbacks": [
            {"id": pb.event_id, "status": pb.status, "conversion_status": pb.conversion_status}
            for pb in outcome.postbacks
        ],
    }


class _ConversionIntake(APIView):
    def record(self, advertiser: Advertiser, data: dict) -> Response:
        serializer = ConversionInSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        try:
            outcome = conversion_record(advertiser=advertiser, **serializer.validated_data)
        except IntakeError as exc:
            raise APIError(
                exc.status, exc.code, exc.message, exc.fields, retry_after=exc.retry_after
            ) from None
        return Response(
            conversion_payload(outcome),
            status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK,
        )


class ConversionCreateView(_ConversionIntake):
    """`POST /api/v1/conversions` with `Authorization: Bearer <advertiser API key>`."""

    parser_classes = [StrictJSONParser, parsers.FormParser]

    def authenticate_advertiser(self, request: Request) -> Advertiser:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        advertiser = None
        if scheme.lower() == "bearer" and credential.strip():
            advertiser = selectors.advertiser_for_key(credential.strip(), AdvertiserAPIKey.Kind.API)
        if advertiser is None:
            raise APIError(
                401,
                "unauthorized",
                "Send a valid advertiser API key as 'Authorization: Bearer <key>'.",
            )
        return advertiser

    def post(self, request: Request) -> Response:
        # Authenticate first: a caller without a valid key learns nothing about the body.
        advertiser = self.authenticate_advertiser(request)
        if not isinstance(request.data, dict):
            raise APIError(400, "invalid", "The body must be a JSON object.")
        return self.record(advertiser, request.data)


class ConversionGetPostbackView(_ConversionIntake):
    """`GET /postback?token=…&click_id=…` for advertisers that can only fire GET pixels."""

    def authenticate_advertiser(self, request: Request) -> Advertiser:
        token = request.query_params.get("token", "")
        advertiser = (
            selectors.advertiser_for_key(token, AdvertiserAPIKey.Kind.POSTBACK_TOKEN)
            if token
            else None
        )
        if advertiser is None:
            raise APIError(
                401, "unauthorized", "Pass a valid advertiser postback token as ?token=."
            )
        return advertiser

    def get(self, request: Request) -> Response:
        fields = ConversionInSerializer().fields
        data = {name: request.query_params[name] for name in fields if name in request.query_params}
        return self.record(self.authenticate_advertiser(request), data)


_conversion_create = ConversionCreateView.as_view()


@csrf_exempt
def conversions_endpoint(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """`/api/v1/conversions`: GET (and HEAD) is the publisher API's conversion list, anything
    else the advertisers' intake (POST; other methods get its 405)."""
    if request.method in ("GET", "HEAD"):
        # Imported here: tracking must not depend on the publisher API at import time.
        from publishers.api.conversions import conversion_list

        return conversion_list(request, *args, **kwargs)
    return _conversion_create(request, *args, **kwargs)
