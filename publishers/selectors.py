"""Reads for the publisher dashboard. Every function takes the publisher: tenant scoping is
not optional."""

from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from postbacks.models import Postback
from publishers.models import CallbackTemplate, Membership, Publisher
from tracking.models import Conversion, TrackingLink


def publisher_for_user(request: HttpRequest) -> Publisher:
    """The signed-in user's publisher (their first membership); 404 when they have none."""
    membership = (
        Membership.objects.select_related("publisher")
        .filter(user=request.user)
        .order_by("created_at", "pk")
        .first()
    )
    if membership is None:
        raise Http404("You are not a member of any publisher.")
    return membership.publisher


def links_for_publisher(publisher: Publisher) -> QuerySet[TrackingLink]:
    return TrackingLink.objects.filter(publisher=publisher).select_related("campaign")


def templates_for_publisher(publisher: Publisher) -> QuerySet[CallbackTemplate]:
    return CallbackTemplate.objects.filter(publisher=publisher).order_by("created_at")


def recent_conversions(publisher: Publisher, limit: int = 20) -> QuerySet[Conversion]:
    return (
        Conversion.objects.filter(publisher=publisher)
        .select_related("click", "campaign")
        .order_by("-created_at")[:limit]
    )


def recent_postbacks(publisher: Publisher, limit: int = 20) -> QuerySet[Postback]:
    return (
        Postback.objects.filter(publisher=publisher)
        .select_related("conversion__click")
        .order_by("-created_at")[:limit]
    )
