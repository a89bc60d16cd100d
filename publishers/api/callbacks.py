"""Callback templates: list, create, change, delete, fire a real test postback, and resume
deliveries that endpoint health paused."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import APIError, errors
from postbacks.placeholders import CALLBACK_PLACEHOLDERS
from postbacks.sample import postback_send_test
from publishers import services
from publishers.api.base import PublisherScopedView
from publishers.api.serializers import (
    CallbackSerializer,
    CallbackTestRequestSerializer,
    django_errors_to_drf,
)
from publishers.audit import Actor
from publishers.models import CallbackTemplate

# The template fields the services take, in the serializer's names.
EDITABLE = ("name", "url_template", "method", "events", "statuses", "campaign", "is_active")

CALLBACK_ID_PARAMETER = OpenApiParameter(
    "callback_id", str, OpenApiParameter.PATH, description="The callback's id."
)


class CallbackListSerializer(serializers.Serializer):
    results = CallbackSerializer(many=True)


class _TestRequestSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=CallbackTemplate.Method.choices)
    url = serializers.CharField()
    headers = serializers.DictField(child=serializers.CharField())
    body = serializers.CharField(
        allow_null=True, help_text="A JSON webhook's body, exactly as sent; null for a GET."
    )


class _TestResponseSerializer(serializers.Serializer):
    status_code = serializers.IntegerField()
    duration_ms = serializers.IntegerField()
    body_excerpt = serializers.CharField(allow_blank=True)
    resolved_ip = serializers.CharField(allow_null=True)


class _TestErrorSerializer(serializers.Serializer):
    kind = serializers.CharField()
    message = serializers.CharField()


class CallbackTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="True when your server answered 2xx.")
    request = _TestRequestSerializer(allow_null=True, help_text="Exactly what was sent.")
    response = _TestResponseSerializer(allow_null=True, help_text="What came back, if anything.")
    error = _TestErrorSerializer(allow_null=True, help_text="Why no answer was had.")


class CallbackResumeResultSerializer(serializers.Serializer):
    released = serializers.IntegerField(help_text="Held postbacks now being sent, oldest first.")
    callback = CallbackSerializer()


class _CallbackView(PublisherScopedView):
    model = CallbackTemplate
    lookup_field = "public_id"
    lookup_url_kwarg = "callback_id"

    def refine_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("campaign").order_by("created_at", "pk")

    def serializer(self, *args, **kwargs) -> CallbackSerializer:
        return CallbackSerializer(*args, context={"publisher": self.publisher}, **kwargs)


class CallbackListView(_CallbackView):
    """`GET/POST /api/v1/callbacks`."""

    @extend_schema(
        operation_id="callbacks_list",
        summary="List callbacks",
        tags=["callbacks"],
        responses={200: CallbackListSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        return Response({"results": self.serializer(self.get_queryset(), many=True).data})

    @extend_schema(
        operation_id="callbacks_create",
        summary="Create a callback",
        tags=["callbacks"],
        request=CallbackSerializer,
        responses={201: CallbackSerializer, **errors(400, 415)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = {
            name: serializer.validated_data[name]
            for name in EDITABLE
            if name in serializer.validated_data
        }
        try:
            template = services.callback_template_create(
                publisher=self.publisher, actor=Actor.api(request), **values
            )
        except DjangoValidationError as exc:
            raise django_errors_to_drf(exc) from None
        return Response(self.serializer(template).data, status=201)


class CallbackDetailView(_CallbackView):
    """`GET/PATCH/DELETE /api/v1/callbacks/{callback_id}`."""

    @extend_schema(
        operation_id="callbacks_retrieve",
        summary="One callback",
        tags=["callbacks"],
        parameters=[CALLBACK_ID_PARAMETER],
        responses={200: CallbackSerializer, **errors(404)},
    )
    def get(self, request: Request, callback_id: str) -> Response:
        return Response(self.serializer(self.get_object()).data)

    @extend_schema(
        operation_id="callbacks_partial_update",
        summary="Change a callback",
        description="Postbacks already created keep the URL they were created with.",
        tags=["callbacks"],
        parameters=[CALLBACK_ID_PARAMETER],
        request=CallbackSerializer(partial=True),
        responses={200: CallbackSerializer, **errors(400, 404, 415)},
    )
    def patch(self, request: Request, callback_id: str) -> Response:
        template = self.get_object()
        serializer = self.serializer(template, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        values = {
            name: serializer.validated_data.get(name, getattr(template, name)) for name in EDITABLE
        }
        try:
            services.callback_template_update(template=template, actor=Actor.api(request), **values)
        except DjangoValidationError as exc:
            raise django_errors_to_drf(exc) from None
        return Response(self.serializer(template).data)

    @extend_schema(
        operation_id="callbacks_destroy",
        summary="Delete a callback",
        description="Postbacks already created are still delivered and stay in the log.",
        tags=["callbacks"],
        parameters=[CALLBACK_ID_PARAMETER],
        responses={204: None, **errors(404)},
    )
    def delete(self, request: Request, callback_id: str) -> Response:
        services.callback_template_delete(template=self.get_object(), actor=Actor.api(request))
        return Response(status=204)


class CallbackTestView(_CallbackView):
    """`POST /api/v1/callbacks/{callback_id}/test`: a real, signed request (GET, or a JSON
    webhook's POST) to the callback's URL with sample values, answered with what was sent and
    what came back."""

    @extend_schema(
        operation_id="callbacks_test",
        summary="Fire a signed test postback",
        description="Sent now, with sample values (override any with `sample_values`) and a "
        "`Roundtrip-Test: 1` header: a GET, or for a `POST` callback a JSON webhook signed "
        "with the callback's secret. Nothing is stored. A paused callback can be tested too.",
        tags=["callbacks"],
        parameters=[CALLBACK_ID_PARAMETER],
        request=CallbackTestRequestSerializer,
        responses={200: CallbackTestResultSerializer, **errors(400, 404, 415)},
    )
    def post(self, request: Request, callback_id: str) -> Response:
        template = self.get_object()
        serializer = CallbackTestRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sample_values = serializer.validated_data.get("sample_values") or {}
        unknown = sorted(set(sample_values) - CALLBACK_PLACEHOLDERS)
        if unknown:
            raise serializers.ValidationError(
                {"sample_values": [f"Unknown placeholder: {', '.join(unknown)}."]}
            )
        result = postback_send_test(template=template, sample_values=sample_values)
        services.callback_test_record(template=template, result=result, actor=Actor.api(request))
        return Response(result)


class CallbackResumeView(_CallbackView):
    """`POST /api/v1/callbacks/{callback_id}/resume`: resume deliveries to an endpoint that we
    paused (it answered 410 Gone, or kept failing); what it held is sent, oldest first."""

    @extend_schema(
        operation_id="callbacks_resume",
        summary="Resume deliveries to a paused endpoint",
        description="For a callback whose `paused_at` is set. It becomes active again and "
        "every postback held for it is sent, oldest first. A callback that is not paused is a "
        "409 `not_paused`.",
        tags=["callbacks"],
        request=None,
        parameters=[CALLBACK_ID_PARAMETER],
        responses={200: CallbackResumeResultSerializer, **errors(404, 409)},
    )
    def post(self, request: Request, callback_id: str) -> Response:
        template = self.get_object()
        released = services.callback_template_resume_deliveries(
            template=template, actor=Actor.api(request)
        )
        if released is None:
            raise APIError(409, "not_paused", "Deliveries to this callback are not paused.")
        return Response({"released": released, "callback": self.serializer(template).data})
