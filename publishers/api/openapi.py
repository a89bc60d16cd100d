"""OpenAPI description of the whole API (drf-spectacular): the publisher API and the
advertisers' conversion intake, with our error shape on every operation.

The intake views in tracking/api.py authenticate by hand, so they are described here by view
extensions rather than decorated where they live. `/api/v1/conversions` serves both audiences
through one dispatching function (GET: publishers, POST: advertisers), which the schema
generator cannot look into; `add_shared_path_endpoints` tells it which view answers which
method there.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from publishers.authentication import PublisherKeyAuthentication


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable, e.g. `not_found`, `invalid`.")
    message = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.JSONField(), help_text="Per-field messages for `invalid`."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


_ERROR_TEXT = {
    400: "Invalid parameters or body; `fields` names each problem.",
    401: "No API key, or an unknown, revoked or malformed one.",
    404: "No such object among yours (another publisher's is not found either).",
    405: "Method not allowed.",
    406: "No representation for the Accept header.",
    409: "Conflict with the object's state.",
    415: "Unsupported body media type (send JSON).",
    422: "Understood but refused.",
    429: "Rate limit for this key exceeded; see the Retry-After header (seconds).",
    503: "`unavailable`: the database is briefly out of reach (a restart or failover). Nothing "
    "is lost by sending the same request again, unchanged, after the Retry-After header "
    "(seconds).",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Responses in our error shape for these status codes (401 and 429 always included)."""
    wanted = sorted({401, 429, *codes})
    return {
        code: OpenApiResponse(ErrorSerializer, description=_ERROR_TEXT[code]) for code in wanted
    }


class PublisherKeyScheme(OpenApiAuthenticationExtension):
    target_class = PublisherKeyAuthentication
    name = "publisherKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "rt_pub_<lookup>_<secret>",
            "description": "A publisher API key, created in the dashboard.",
        }


# --- Advertiser intake (tracking/api.py) ----------------------------------------------------


class IntakePostbackSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The postback's event id.")
    status = serializers.CharField()
    conversion_status = serializers.CharField()


class IntakeConversionSerializer(serializers.Serializer):
    id = serializers.CharField()
    click_id = serializers.CharField()
    event = serializers.CharField()
    txn_id = serializers.CharField()
    status = serializers.CharField()
    reason = serializers.CharField(
        allow_blank=True, help_text='Why a guard changed the status (e.g. "too_fast"), or "".'
    )
    payout = serializers.CharField()
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
    400: OpenApiResponse(ErrorSerializer, description=_ERROR_TEXT[400]),
    401: OpenApiResponse(ErrorSerializer, description="No key, or a wrong or revoked one."),
    404: OpenApiResponse(ErrorSerializer, description="`click_not_found`."),
    409: OpenApiResponse(
        ErrorSerializer, description="`txn_id_conflict` or `status_change_not_allowed`."
    ),
    422: OpenApiResponse(ErrorSerializer, description="`attribution_window_expired`."),
    503: OpenApiResponse(ErrorSerializer, description=_ERROR_TEXT[503]),
}


class ConversionCreateViewSchema(OpenApiViewExtension):
    target_class = "tracking.api.ConversionCreateView"

    def view_replacement(self):
        from tracking.api import ConversionInSerializer

        class Described(self.target_class):
            @extend_schema(
                operation_id="conversion_record",
                summary="Record a conversion (advertisers)",
                tags=["advertiser intake"],
                request=ConversionInSerializer,
                responses={**_INTAKE_RESPONSES, 415: OpenApiResponse(ErrorSerializer)},
                auth=[{"advertiserKey": []}],
            )
            def post(self, request):
                return super().post(request)

        return Described


class ConversionGetPostbackViewSchema(OpenApiViewExtension):
    target_class = "tracking.api.ConversionGetPostbackView"

    def view_replacement(self):
        from tracking.api import ConversionInSerializer

        class Described(self.target_class):
            @extend_schema(
                operation_id="conversion_record_get",
                summary="Record a conversion with a GET pixel (advertisers)",
                tags=["advertiser intake"],
                parameters=[ConversionInSerializer],
                responses=_INTAKE_RESPONSES,
                auth=[{"advertiserToken": []}],
            )
            def get(self, request):
                return super().get(request)

        return Described


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


# --- The shared path ------------------------------------------------------------------------

SHARED_PATH = "/api/v1/conversions"


def add_shared_path_endpoints(endpoints: list) -> list:
    """Preprocessing hook: describe `/api/v1/conversions` as the publisher list (GET) and the
    advertiser intake (POST), the two views its dispatcher hands requests to."""
    from publishers.api.conversions import ConversionListView
    from tracking.api import ConversionCreateView

    # The regex only serves path parameters, of which this path has none.
    regex = r"^api/v1/conversions/?$"
    shared = [
        (SHARED_PATH, regex, "GET", ConversionListView.as_view()),
        (SHARED_PATH, regex, "POST", ConversionCreateView.as_view()),
    ]
    return [*shared, *(e for e in endpoints if e[0].rstrip("/") != SHARED_PATH)]


FORMAT_PARAMETER = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    enum=["json", "csv"],
    description="`csv` for a CSV file (or send `Accept: text/csv`); default JSON.",
)


def add_advertiser_security_schemes(result: dict, generator, request, public) -> dict:
    """Postprocessing hook: the intake's schemes, which no DRF authentication class declares."""
    schemes = result.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.update(ADVERTISER_SECURITY_SCHEMES)
    return result
