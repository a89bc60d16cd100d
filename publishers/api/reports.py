"""Stats and the signed daily reconciliation file."""

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import APIError, errors
from config.hostile import SafeJSONRenderer
from postbacks import signing
from publishers.api import reconciliation
from publishers.api.base import PublisherScopedView, validated_query
from publishers.api.openapi import FORMAT_PARAMETER
from publishers.api.serializers import (
    ReconciliationQuerySerializer,
    ReconciliationSerializer,
    StatsQuerySerializer,
    StatsSerializer,
)
from tracking import selectors


def _row(row: selectors.ReportRow) -> dict:
    key = row.key
    return {
        "key": "" if key is None else key.isoformat() if hasattr(key, "isoformat") else str(key),
        "label": row.label,
        "impressions": row.impressions,
        "clicks": row.clicks,
        "ctr": None if row.ctr is None else round(row.ctr, 4),
        "unique_clicks": row.unique_clicks,
        "bot_clicks": row.bot_clicks,
        "conversions": row.conversions,
        "conversion_rate": row.conversion_rate,
        "payouts": [
            {"currency": currency, "amount": amount}
            for currency, amount in sorted(row.payouts.items())
        ],
    }


class StatsView(PublisherScopedView):
    """`GET /api/v1/stats`: the dashboard's report as data."""

    @extend_schema(
        operation_id="stats_retrieve",
        summary="Clicks, conversions and payout, grouped",
        description="One grouping per request (`group_by`); filters narrow it. Days are "
        "calendar days in `tz`. Conversions count on the day they were recorded, or with "
        "`attribution=click` on the day of their click.",
        tags=["reports"],
        parameters=[StatsQuerySerializer],
        responses={200: StatsSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        query = validated_query(StatsQuerySerializer, request)
        report = selectors.report(
            self.publisher,
            selectors.ReportParams(
                start=query["from"],
                end=query["to"],
                group_by=query["group_by"],
                tz=query["tz"],
                attribution=query["attribution"],
                filters=query["filters"],
            ),
        )
        data = {
            "group_by": query["group_by"],
            "from": query["from"],
            "to": query["to"],
            "tz": query["tz"],
            "attribution": query["attribution"],
            "source": report.source,
            "truncated": report.truncated,
            "currencies": report.currencies,
            "rows": [_row(row) for row in report.rows],
            "totals": {**_row(report.totals), "key": "total"},
            "refused_clicks": selectors.click_refusals(
                self.publisher, since=query["from"], until=query["to"]
            ).refused,
            "conversion_outcomes": selectors.conversion_outcomes(
                self.publisher, start=query["from"], end=query["to"], tz=query["tz"]
            ),
        }
        return Response(StatsSerializer(data).data)


class CSVRenderer(renderers.BaseRenderer):
    """Declares text/csv for content negotiation; the view writes the bytes itself (it must
    hash exactly what it sends)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return data if isinstance(data, bytes) else b""


class ReconciliationView(PublisherScopedView):
    """`GET /api/v1/reconciliation?date=YYYY-MM-DD`: a signed file of the day's conversions."""

    renderer_classes = [SafeJSONRenderer, CSVRenderer]

    @extend_schema(
        operation_id="reconciliation_retrieve",
        summary="Signed reconciliation file of one day",
        description="Every conversion recorded on `date` (calendar day in `tz`) with its spid, "
        "event ids, status, payout and delivery outcome: one row per postback. The "
        "`Roundtrip-Content-SHA256`, `Roundtrip-Timestamp` and `Roundtrip-Signature` headers "
        "let both sides prove what was reported; see docs/api.md for verification.",
        tags=["reports"],
        parameters=[ReconciliationQuerySerializer, FORMAT_PARAMETER],
        responses={
            (200, "application/json"): ReconciliationSerializer,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, header first."),
            **errors(400, 406),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        query = validated_query(ReconciliationQuerySerializer, request)
        day, tz = query["date"], query["tz"]
        generated_at = timezone.now()
        rows = list(reconciliation.reconciliation_rows(self.publisher, day, tz))
        as_csv = request.accepted_renderer.format == "csv"
        if as_csv:
            body = reconciliation.render_csv(rows)
            content_type = "text/csv; charset=utf-8"
        else:
            body = renderers.JSONRenderer().render(
                {
                    "publisher_id": self.publisher.public_id,
                    "date": day.isoformat(),
                    "tz": tz,
                    "generated_at": generated_at.isoformat(),
                    "count": len(rows),
                    "rows": rows,
                }
            )
            content_type = "application/json"
        digest = signing.content_sha256(body)
        timestamp = int(generated_at.timestamp())
        response = HttpResponse(body, content_type=content_type)
        response["Roundtrip-Content-SHA256"] = digest
        response["Roundtrip-Timestamp"] = str(timestamp)
        response["Roundtrip-Signature"] = signing.file_signature_header(
            self.publisher.active_signing_secrets(), timestamp, day.isoformat(), digest
        )
        if as_csv:
            filename = f"roundtrip-reconciliation-{day.isoformat()}.csv"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # DRF answers an unknown ?format= with a bare 404; name the parameter instead.
        requested = request.query_params.get("format")
        if requested is not None and requested not in ("json", "csv"):
            raise APIError(
                400, "invalid", "Invalid fields: format.", {"format": ["Use json or csv."]}
            )
        return super().perform_content_negotiation(request, force)

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are JSON whatever format was asked for.
        self.request.accepted_renderer = renderers.JSONRenderer()
        self.request.accepted_media_type = "application/json"
        return super().handle_exception(exc)
