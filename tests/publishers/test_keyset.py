"""`publishers/keyset.py`: the one cursor codec of the dashboard's lists and the API's feeds."""

import base64
import doctest
import json
from datetime import UTC, datetime

import pytest

from publishers import keyset
from publishers.keyset import Keyset

MOMENT = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)


def raw_cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_its_doctests_hold():
    assert doctest.testmod(keyset).failed == 0


@pytest.mark.parametrize(
    ("tie_field", "tie"), [("pk", 0), ("pk", 2**63 - 1), ("public_id", "01kb2x7c3s8q")]
)
def test_it_reads_back_what_it_wrote(tie_field, tie):
    feed = Keyset("created_at", tie_field)
    assert feed.decode(feed.encode(MOMENT, tie)) == (MOMENT, tie)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        raw_cursor("just a string"),
        raw_cursor([MOMENT.replace(tzinfo=None).isoformat(), 1]),  # no time zone
        raw_cursor([MOMENT.isoformat(), True]),
        raw_cursor([MOMENT.isoformat(), -1]),
        raw_cursor([MOMENT.isoformat(), 2**63]),
        raw_cursor([MOMENT.isoformat(), "7"]),  # a pk keyset takes numbers only
    ],
)
def test_it_refuses_cursors_it_did_not_make(cursor):
    assert Keyset("created_at").decode(cursor) is None


def test_it_refuses_a_number_where_the_tie_breaker_is_text():
    assert Keyset("created_at", "event_id").decode(raw_cursor([MOMENT.isoformat(), 7])) is None
