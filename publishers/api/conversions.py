"""Conversions, clicks and the spid trace: what happened to a publisher's traffic. Also the owner
of `/api/v1/conversions`, where publishers GET their conversions and advertisers POST new ones."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import errors
from postbacks.models import Postback
from publishers.api.base import PublisherScopedView, keyset_response, validated_query
from publishers.api.serializers import (
    ClickJourneySerializer,
    ConversionPageSerializer,
    ConversionQuerySerializer,
    ConversionSerializer,
    TraceQuerySerializer,
    TraceSerializer,
)
from publishers.keyset import Keyset
from tracking import selectors
from tracking.api import ConversionCreateView
from tracking.models import Click, Conversion

# Oldest change first: a poller walks forward in time and keeps its place with the cursor.
CONVERSION_FEED = Keyset("updated_at")


class ConversionListView(PublisherScopedView):
    """`GET /api/v1/conversions`: the publisher's conversions as a change feed."""

    model = Conversion

    def refine_queryset(self, queryset: QuerySet) -> QuerySet:
        query = self.query
        if query.get("spid") is not None:
            # Through the click's (publisher, spid) index.
            queryset = queryset.filter(click__publisher=self.publisher, click__spid=query["spid"])
        if query.get("click_id"):
            queryset = queryset.filter(click__click_id=query["click_id"])
        if query.get("status"):
            queryset = queryset.filter(status=query["status"])
        if query.get("event"):
            queryset = queryset.filter(event=query["event"].lower())
        if query.get("updated_since"):
            queryset = queryset.filter(updated_at__gte=query["updated_since"])
        # Rows younger than the settle time may still have older siblings in transactions that
        # have not committed yet; listing them now would let the cursor pass those siblings.
        settle = timedelta(seconds=settings.API_CONVERSIONS_SETTLE_SECONDS)
        return (
            queryset.filter(updated_at__lte=timezone.now() - settle)
            .select_related("click", "campaign")
            .prefetch_related(
                Prefetch(
                    "postbacks",
                    queryset=Postback.objects.select_related("template").order_by(
                        "created_at", "pk"
                    ),
                )
            )
        )

    @extend_schema(
        operation_id="conversions_list",
        summary="List conversions (a change feed: poll it with the cursor)",
        tags=["conversions"],
        parameters=[ConversionQuerySerializer],
        responses={200: ConversionPageSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        self.query = validated_query(ConversionQuerySerializer, request)
        return keyset_response(
            CONVERSION_FEED, self.get_queryset(), self.query, ConversionSerializer
        )


def _journey_context(trace: selectors.Trace) -> dict:
    return {"conversions": trace.conversions, "postbacks": trace.postbacks}


class ClickDetailView(PublisherScopedView):
    """`GET /api/v1/clicks/{click_id}`: one click and everything that followed it."""

    model = Click
    lookup_field = "click_id"

    @extend_schema(
        operation_id="clicks_retrieve",
        summary="One click's journey: conversions, postbacks, attempts",
        tags=["conversions"],
        responses={200: ClickJourneySerializer, **errors(404)},
    )
    def get(self, request: Request, click_id: str) -> Response:
        click = self.get_object()
        trace = selectors.trace(self.publisher, click.click_id)
        found = [c for c in trace.clicks if c.pk == click.pk]
        if not found:
            raise Http404
        return Response(ClickJourneySerializer(found[0], context=_journey_context(trace)).data)


class TraceView(PublisherScopedView):
    """`GET /api/v1/trace?spid=…`: every click carrying a spid, and what followed each."""

    @extend_schema(
        operation_id="trace_retrieve",
        summary="Trace a spid: its clicks, conversions, postbacks and attempts",
        tags=["conversions"],
        parameters=[TraceQuerySerializer],
        responses={200: TraceSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        spid = validated_query(TraceQuerySerializer, request)["spid"]
        trace = selectors.trace(self.publisher, spid)
        # The dashboard search also matches click ids; the API asks for a spid only.
        clicks = [click for click in trace.clicks if click.spid == spid]
        return Response(
            TraceSerializer(
                {"spid": spid, "clicks": clicks, "truncated": trace.truncated},
                context=_journey_context(trace),
            ).data
        )


# --- /api/v1/conversions: one path, two audiences -------------------------------------------

# Built once: the dispatcher below hands each request to one of them.
conversion_list = ConversionListView.as_view()
_conversion_create = ConversionCreateView.as_view()


@csrf_exempt
def conversions_endpoint(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """`/api/v1/conversions`: GET (and HEAD) is the publishers' conversion list, anything else
    the advertisers' intake (POST, tracking/api.py; other methods get its 405)."""
    if request.method in ("GET", "HEAD"):
        return conversion_list(request, *args, **kwargs)
    return _conversion_create(request, *args, **kwargs)


SHARED_PATH = "/api/v1/conversions"


def add_shared_path_endpoints(endpoints: list) -> list:
    """Preprocessing hook of the OpenAPI description: the schema generator cannot look into
    `conversions_endpoint`, so this says which view answers which method there."""
    # The regex only serves path parameters, of which this path has none.
    regex = r"^api/v1/conversions/?$"
    shared = [
        (SHARED_PATH, regex, "GET", ConversionListView.as_view()),
        (SHARED_PATH, regex, "POST", ConversionCreateView.as_view()),
    ]
    return [*shared, *(e for e in endpoints if e[0].rstrip("/") != SHARED_PATH)]
