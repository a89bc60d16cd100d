"""What every publisher API view shares: authentication, rate limit, and tenant scoping.

Scoping lives here and only here (after PostHog's `TeamAndOrgViewSetMixin`): a view declares
its model, `get_queryset` filters it on the caller's publisher, and a subclass that tries to
override `get_queryset` is refused when the class is created. Views that read through
selectors instead of a queryset take the publisher from `self.publisher`, which comes from the
authenticated key and from nothing the client sends.
"""

from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model, QuerySet
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from config.api import APIError
from publishers.authentication import (
    PublisherKeyAuthentication,
    PublisherKeyRateThrottle,
    PublisherPrincipal,
)
from publishers.keyset import Keyset
from publishers.models import Publisher


class PublisherScopedView(GenericAPIView):
    """Base of every publisher API view. Set `model` (and `tenant_field` when the path to the
    publisher is not `publisher`); refine the scoped queryset in `refine_queryset`."""

    authentication_classes = [PublisherKeyAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [PublisherKeyRateThrottle]
    # No OPTIONS self-description (the OpenAPI schema is the description): OPTIONS is a 405.
    metadata_class = None
    model: ClassVar[type[Model] | None] = None
    tenant_field: ClassVar[str] = "publisher"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise ImproperlyConfigured(
                f"{cls.__name__} overrides get_queryset, which would bypass tenant scoping; "
                "override refine_queryset instead."
            )

    @property
    def publisher(self) -> Publisher:
        principal = self.request.user
        # IsAuthenticated has run: only our authentication class produces a principal.
        assert isinstance(principal, PublisherPrincipal)
        return principal.publisher

    def get_queryset(self) -> QuerySet:
        if self.model is None:
            raise ImproperlyConfigured(f"{type(self).__name__} has no model to scope.")
        scoped = self.model._default_manager.filter(**{self.tenant_field: self.publisher})
        return self.refine_queryset(scoped)

    def refine_queryset(self, queryset: QuerySet) -> QuerySet:
        """Narrow or annotate the already-scoped queryset (select_related, filters)."""
        return queryset


def validated_query(serializer_class: type, request) -> dict:
    """Query parameters checked by a serializer; a bad one is a 400 naming the field."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --- Keyset pagination ----------------------------------------------------------------------


def keyset_response(
    keyset: Keyset, queryset: QuerySet, query: dict, serializer_class: type
) -> Response:
    """One page of a feed after `query["cursor"]`, as `{results, next_cursor, has_more}`. A
    cursor this API did not return is a 400, not a silent restart from the top."""
    cursor = query.get("cursor")
    if cursor and keyset.decode(cursor) is None:
        raise APIError(
            400,
            "invalid",
            "Invalid fields: cursor.",
            {"cursor": ["Not a cursor this API returned."]},
        )
    page = keyset.page(queryset, cursor=cursor, limit=query["limit"])
    return Response(
        {
            "results": serializer_class(page.items, many=True).data,
            "next_cursor": page.next_cursor,
            "has_more": page.has_more,
        }
    )
