"""Keyset ("seek") pagination on (a timestamp, a unique tie-breaker), either direction: the one
cursor codec and page walk for the dashboard's lists and the API's feeds. Imports no app.

The cursor is the last row's (timestamp, tie-breaker), so a page costs an index seek however
deep it is, where an offset would read every skipped row; rows that move (an updated
conversion) are neither skipped nor repeated because of what happened on earlier pages. It is
opaque to clients (base64 of JSON), and a tampered one can only move within the rows the
caller's queryset already scopes.

>>> feed = Keyset("created_at", descending=True)
>>> cursor = feed.encode(datetime.fromisoformat("2026-01-01T00:00:00+00:00"), 42)
>>> feed.decode(cursor)
(datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), 42)
>>> feed.decode("not-a-cursor") is None
True
"""

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet

# Bigint primary keys: a larger number is no cursor of ours (and would overflow the query).
_MAX_PK = 2**63


@dataclass(frozen=True)
class Page:
    items: list
    # Where to continue: the last row's position, or the cursor given when the page is empty
    # (so a poller keeps its place); None only when neither exists.
    next_cursor: str | None
    has_more: bool

    @property
    def next_if_more(self) -> str:
        """The dashboard's "next page" cursor: "" at the end."""
        return (self.next_cursor or "") if self.has_more else ""


class Keyset:
    def __init__(self, time_field: str, tie_field: str = "pk", *, descending: bool = False):
        self.time_field = time_field
        self.tie_field = tie_field
        self.descending = descending

    def encode(self, moment: datetime, tie: int | str) -> str:
        raw = json.dumps([moment.isoformat(), tie], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, cursor: str) -> tuple[datetime, int | str] | None:
        """The position in `cursor`, or None when it is not one this keyset made."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            moment_text, tie = json.loads(raw)
            moment = datetime.fromisoformat(moment_text)
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
            return None
        if moment.tzinfo is None:
            return None
        if self.tie_field == "pk":
            if not isinstance(tie, int) or isinstance(tie, bool) or not 0 <= tie < _MAX_PK:
                return None
        elif not isinstance(tie, str):
            return None
        return moment, tie

    def after(self, queryset: QuerySet, position: tuple[datetime, int | str] | None) -> QuerySet:
        if position is None:
            return queryset
        moment, tie = position
        op = "lt" if self.descending else "gt"
        return queryset.filter(
            Q(**{f"{self.time_field}__{op}": moment})
            | Q(**{self.time_field: moment, f"{self.tie_field}__{op}": tie})
        )

    def page(self, queryset: QuerySet, *, cursor: str | None, limit: int) -> Page:
        """One page of `queryset` after `cursor`, in this keyset's order. A cursor that does
        not decode starts from the top (the API refuses it first, with a 400)."""
        position = self.decode(cursor) if cursor else None
        sign = "-" if self.descending else ""
        order = (f"{sign}{self.time_field}", f"{sign}{self.tie_field}")
        rows = list(self.after(queryset, position).order_by(*order)[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit]
        if rows:
            last = rows[-1]
            next_cursor = self.encode(getattr(last, self.time_field), getattr(last, self.tie_field))
        else:
            next_cursor = cursor or None
        return Page(rows, next_cursor, has_more)
