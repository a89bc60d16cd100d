"""The delivery log: postbacks with their attempts, retry one, replay a time range."""

from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import APIError, errors
from postbacks.models import Postback
from publishers import services
from publishers.api.base import PublisherScopedView, keyset_response, validated_query
from publishers.api.serializers import (
    PostbackDetailSerializer,
    PostbackPageSerializer,
    PostbackQuerySerializer,
    PostbackSerializer,
    ReplayRequestSerializer,
    ReplayResultSerializer,
    RetryResultSerializer,
)
from publishers.audit import Actor
from publishers.keyset import Keyset
from publishers.models import CallbackTemplate

# Newest first, like a log.
POSTBACK_LOG = Keyset("created_at", descending=True)

EVENT_ID_PARAMETER = OpenApiParameter(
    "event_id", str, OpenApiParameter.PATH, description="The postback's event id (evt_…)."
)


class PostbackListView(PublisherScopedView):
    """`GET /api/v1/postbacks`: the delivery log, newest first."""

    model = Postback

    def refine_queryset(self, queryset: QuerySet) -> QuerySet:
        query = self.query
        if query.get("status"):
            queryset = queryset.filter(status=query["status"])
        if query.get("conversion_id"):
            queryset = queryset.filter(conversion__public_id=query["conversion_id"])
        if query.get("created_from"):
            queryset = queryset.filter(created_at__gte=query["created_from"])
        if query.get("created_to"):
            queryset = queryset.filter(created_at__lt=query["created_to"])
        return queryset.select_related("conversion__click", "template")

    @extend_schema(
        operation_id="postbacks_list",
        summary="List postbacks (newest first)",
        tags=["postbacks"],
        parameters=[PostbackQuerySerializer],
        responses={200: PostbackPageSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        self.query = validated_query(PostbackQuerySerializer, request)
        return keyset_response(POSTBACK_LOG, self.get_queryset(), self.query, PostbackSerializer)


class _PostbackObjectView(PublisherScopedView):
    model = Postback
    lookup_field = "event_id"

    def refine_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("conversion__click", "template").prefetch_related(
            "attempt_log"
        )


class PostbackDetailView(_PostbackObjectView):
    """`GET /api/v1/postbacks/{event_id}`: one postback and every attempt."""

    @extend_schema(
        operation_id="postbacks_retrieve",
        summary="One postback with its attempts",
        tags=["postbacks"],
        parameters=[EVENT_ID_PARAMETER],
        responses={200: PostbackDetailSerializer, **errors(404)},
    )
    def get(self, request: Request, event_id: str) -> Response:
        return Response(PostbackDetailSerializer(self.get_object()).data)


class PostbackRetryView(_PostbackObjectView):
    """`POST /api/v1/postbacks/{event_id}/retry`: send a postback (again) now."""

    @extend_schema(
        operation_id="postbacks_retry",
        summary="Send one postback again now",
        description="For a failed or still-waiting postback, or a delivered one (re-sent with "
        "the same event id as a new attempt, recorded in the activity log). Not for one a "
        "worker is sending right now (409 `in_flight`), nor one held because deliveries to its "
        "callback are paused (409 `held`: resume the callback).",
        tags=["postbacks"],
        request=None,
        parameters=[EVENT_ID_PARAMETER],
        responses={202: RetryResultSerializer, **errors(404, 409)},
    )
    def post(self, request: Request, event_id: str) -> Response:
        postback = self.get_object()
        queued = services.postbacks_replay(
            publisher=self.publisher,
            postback_ids=[postback.pk],
            scope="one",
            details={"event_ids": [postback.event_id]},
            actor=Actor.api(request),
        )
        if not queued:
            if postback.template and postback.template.paused_at:
                raise APIError(
                    409,
                    "held",
                    "Deliveries to this postback's callback are paused: resume the callback "
                    "(POST /api/v1/callbacks/{id}/resume) and its held postbacks are sent.",
                )
            raise APIError(409, "in_flight", "A worker is sending this postback right now.")
        postback.refresh_from_db()
        return Response({"queued": queued, "postback": PostbackSerializer(postback).data}, 202)


class PostbackReplayView(PublisherScopedView):
    """`POST /api/v1/postbacks/replay`: send again every failed (or waiting) postback created
    in a time range. Each postback is queued at most once per request."""

    model = Postback

    @extend_schema(
        operation_id="postbacks_replay",
        summary="Replay postbacks of a time range",
        tags=["postbacks"],
        request=ReplayRequestSerializer,
        responses={202: ReplayResultSerializer, **errors(400, 415)},
    )
    def post(self, request: Request) -> Response:
        serializer = ReplayRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        condition = Q(status__in=data["status"])
        if "callback_id" in data:
            template = CallbackTemplate.objects.filter(
                publisher=self.publisher, public_id=data["callback_id"]
            ).first()
            if template is None:
                raise APIError(
                    400,
                    "invalid",
                    "Invalid fields: callback_id.",
                    {"callback_id": ["No such callback."]},
                )
            condition &= Q(template=template)
        matched, queued = services.postbacks_replay_range(
            publisher=self.publisher,
            start=data["from"],
            end=data["to"],
            condition=condition,
            details={
                "from": data["from"].isoformat(),
                "to": data["to"].isoformat(),
                "status": data["status"],
                "callback_id": data.get("callback_id"),
            },
            actor=Actor.api(request),
        )
        return Response({"matched": matched, "queued": queued, "remaining": matched - queued}, 202)
