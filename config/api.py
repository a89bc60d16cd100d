"""One error shape for every API response: `{"error": {"code", "message", "fields"}}`, and its
OpenAPI description (`errors`), which every API view's schema uses."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.outage import UNAVAILABLE_MESSAGE, is_database_outage, log_outage, retry_after_header


class APIError(exceptions.APIException):
    """An API error with our own machine-readable code, raised by views."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        fields: dict | None = None,
        *,
        retry_after: int | None = None,
    ):
        self.status_code = status_code
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.retry_after = retry_after  # seconds; sent as Retry-After (503, 429)
        super().__init__(detail=message, code=code)


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


_DEFAULT_CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid",
    status.HTTP_401_UNAUTHORIZED: "unauthorized",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "rate_limited",
    status.HTTP_503_SERVICE_UNAVAILABLE: "unavailable",
}


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if is_database_outage(exc):
        log_outage(context["request"], exc)
        return Response(
            error_body("unavailable", UNAVAILABLE_MESSAGE),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": retry_after_header()},
        )
    if isinstance(exc, APIError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return Response(
            error_body(exc.code, exc.message, exc.fields), status=exc.status_code, headers=headers
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = _DEFAULT_CODES.get(response.status_code, "error")
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        names = ", ".join(sorted(detail))
        response.data = error_body(code, f"Invalid fields: {names}.", _flatten(detail))
    else:
        response.data = error_body(code, str(getattr(exc, "detail", exc)))
    return response


# --- The error shape in the OpenAPI description -------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable, e.g. `not_found`, `invalid`.")
    message = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.JSONField(), help_text="Per-field messages for `invalid`."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ERROR_TEXT = {
    400: "Invalid parameters or body; `fields` names each problem.",
    401: "No API key, or an unknown, revoked or malformed one.",
    403: "Not allowed for your publisher; `code` says why (e.g. `offer_not_approved`).",
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
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_TEXT[code]) for code in wanted}
