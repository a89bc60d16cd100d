"""Conversion intake for advertisers and ad servers: `POST /api/v1/conversions` and `GET /postback`,
with their OpenAPI description. (`/api/v1/conversions` also answers publishers' GET: its
dispatcher lives with that list, in publishers/api/conversions.py.)"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import parsers, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ERROR_TEXT, APIError, ErrorSerializer
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


class IntakePostbackSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The postback's event id.")
    status = serializers.CharField()
    conversion_status = serializers.CharField()


# The intake's answer, as `conversion_payload` builds it.
class IntakeConversionSerializer(serializers.Serializer):
    id = serializers.CharField()
    click_id = serializers.CharField()
    event = serializers.CharField()
    txn_id = serializers.CharField()
    status = serializers.CharField()
    reason = serializers.CharField(
        allow_blank=True,
        help_text='Why a guard changed the status (e.g. "too_fast"), "cap_reached" when the '
        'conversion is over a cap of a campaign that accepts those unpaid (payout "0"), or "".',
    )
    reason_detail = serializers.CharField(
        allow_blank=True, help_text='The reason as a sentence (names the cap), or "".'
    )
    payout = serializers.CharField(
        help_text="The publisher's payout, in `currency`: decided by the publisher's payout "
        "terms on the campaign when it has some (a fixed amount or a share of `revenue`), else "
        "the amount sent, else the campaign's default."
    )
    revenue = serializers.CharField(allow_null=True)
    currency = serializers.CharField()
    created_at = serializers.DateTimeField()
    created = serializers.BooleanField(help_text="False when this replays a recorded conversion.")
    postbacks = IntakePostbackSerializer(many=True)


_INTAKE_RESPONSES = {
    201: IntakeConversionSerializer,
    200: OpenApiResponse(
        IntakeConversionSerializer, description="Already recorded (or a status change)."
    ),
    400: OpenApiResponse(ErrorSerializer, description=ERROR_TEXT[400]),
    401: OpenApiResponse(ErrorSerializer, description="No key, or a wrong or revoked one."),
    404: OpenApiResponse(ErrorSerializer, description="`click_not_found`."),
    409: OpenApiResponse(
        ErrorSerializer, description="`txn_id_conflict` or `status_change_not_allowed`."
    ),
    422: OpenApiResponse(
        ErrorSerializer,
        description="`attribution_window_expired`; `cap_reached` (a cap of a campaign that "
        "rejects conversions over its caps is full; `fields` names it: `cap_scope` (campaign "
        "or publisher), `cap_period` (daily, monthly, total) and `cap`, a sentence); "
        "`currency_mismatch` (the campaign "
        "pays by terms or budgets in its own currency).",
    ),
    503: OpenApiResponse(ErrorSerializer, description=ERROR_TEXT[503]),
}

ADVERTISER_SECURITY_SCHEMES = {
    "advertiserKey": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "rt_adv_<lookup>_<secret>",
        "description": "An advertiser API key.",
    },
    "advertiserToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "An advertiser GET postback token (rt_tok_…).",
    },
}


def add_advertiser_security_schemes(result: dict, generator, request, public) -> dict:
    """Postprocessing hook: the intake's schemes, which no DRF authentication class declares."""
    schemes = result.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.update(ADVERTISER_SECURITY_SCHEMES)
    return result


def conversion_payload(outcome: ConversionOutcome) -> dict:
    conversion = outcome.conversion
    return {
        "id": conversion.public_id,
        "click_id": conversion.click.click_id,
        "event": conversion.event,
        "txn_id": conversion.txn_id,
        "status": conversion.status,
        # Why a guard changed the status ("too_fast", "bot_click"), "cap_reached" when it is
        # unpaid over a cap, "" for none.
        "reason": conversion.reason,
        "reason_detail": conversion.reason_detail,
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

    @extend_schema(
        operation_id="conversion_record",
        summary="Record a conversion (advertisers)",
        tags=["advertiser intake"],
        request=ConversionInSerializer,
        responses={**_INTAKE_RESPONSES, 415: OpenApiResponse(ErrorSerializer)},
        auth=[{"advertiserKey": []}],
    )
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

    @extend_schema(
        operation_id="conversion_record_get",
        summary="Record a conversion with a GET pixel (advertisers)",
        tags=["advertiser intake"],
        parameters=[ConversionInSerializer],
        responses=_INTAKE_RESPONSES,
        auth=[{"advertiserToken": []}],
    )
    def get(self, request: Request) -> Response:
        fields = ConversionInSerializer().fields
        data = {name: request.query_params[name] for name in fields if name in request.query_params}
        return self.record(self.authenticate_advertiser(request), data)
