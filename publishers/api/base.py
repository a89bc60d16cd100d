"""What every publisher API view shares: authentication, rate limit, and tenant scoping.

Scoping lives here and only here (after PostHog's `TeamAndOrgViewSetMixin`): a view declares
its model, `get_queryset` filters it on the caller's publisher, and a subclass that tries to
override `get_queryset` is refused when the class is created. Views that read through
selectors instead of a queryset take the publisher from `self.publisher`, which comes from the
authenticated key and from nothing the client sends.
"""

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model, Q, QuerySet
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAuthenticated

from config.api import APIError
from publishers.authentication import (
    PublisherKeyAuthentication,
    PublisherKeyRateThrottle,
    PublisherPrincipal,
)
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


@dataclass(frozen=True)
class Page:
    items: list
    next_cursor: str | None
    has_more: bool


class Keyset:
    """Keyset ("seek") pagination on (timestamp field, primary key), either direction.

    The cursor is the last row's (timestamp, pk), so a page costs an index seek however deep it
    is, and rows that move (an updated conversion) are neither skipped nor repeated because of
    what happened on earlier pages. Opaque to clients (base64 of JSON); a tampered cursor can
    only move within the caller's own scoped rows.
    """

    def __init__(self, time_field: str, *, descending: bool = False) -> None:
        self.time_field = time_field
        self.descending = descending

    @staticmethod
    def encode(moment: datetime, pk: int) -> str:
        raw = json.dumps([moment.isoformat(), pk], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def decode(cursor: str) -> tuple[datetime, int]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            moment_text, pk = json.loads(raw)
            moment = datetime.fromisoformat(moment_text)
            if moment.tzinfo is None or not isinstance(pk, int) or isinstance(pk, bool):
                raise ValueError
            if not 0 <= pk < 2**63:
                raise ValueError
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
            raise APIError(
                400,
                "invalid",
                "Invalid fields: cursor.",
                {"cursor": ["Not a cursor this API returned."]},
            ) from None
        return moment, pk

    def order(self) -> Sequence[str]:
        sign = "-" if self.descending else ""
        return (f"{sign}{self.time_field}", f"{sign}pk")

    def after(self, queryset: QuerySet, cursor: str | None) -> QuerySet:
        if not cursor:
            return queryset
        moment, pk = self.decode(cursor)
        op = "lt" if self.descending else "gt"
        return queryset.filter(
            Q(**{f"{self.time_field}__{op}": moment})
            | Q(**{self.time_field: moment, f"pk__{op}": pk})
        )

    def page(self, queryset: QuerySet, *, cursor: str | None, limit: int) -> Page:
        """One page after `cursor`. `next_cursor` is where to continue; with no rows it is the
        cursor given (so a poller keeps its place), with more rows `has_more` is true."""
        rows = list(self.after(queryset, cursor).order_by(*self.order())[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit]
        if rows:
            last = rows[-1]
            next_cursor = self.encode(getattr(last, self.time_field), last.pk)
        else:
            next_cursor = cursor or None
        return Page(rows, next_cursor, has_more)
