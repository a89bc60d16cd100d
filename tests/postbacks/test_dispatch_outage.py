"""Outcomes of postbacks sent just before a database outage are recorded after it, once:
not left to their leases, which would send them a second time."""

import pytest
from django.utils import timezone

from postbacks import dispatch, http
from postbacks.dispatch import Lane, rows
from postbacks.models import Postback, PostbackAttempt
from tests.outage import database_down
from tests.postbacks.test_dispatch import make_postbacks

pytestmark = pytest.mark.django_db(transaction=True)


def delivered(claimed: list[rows.Claimed]) -> list[rows.Outcome]:
    now = timezone.now()
    return [
        rows.Outcome(
            row=row,
            started_at=now,
            duration_ms=3,
            result=http.DeliveryResult(
                status_code=200, duration_ms=3, body_excerpt="ok", resolved_ip="127.0.0.1"
            ),
        )
        for row in claimed
    ]


def test_it_records_outcomes_that_met_an_outage_once_the_database_is_back(template, link):
    make_postbacks(template, link, 5)
    claimed = rows.claim_batch(lane=Lane.FIRST, limit=10, now=timezone.now(), lease=60)
    outcomes = delivered(claimed)
    with database_down():
        assert dispatch._record(outcomes) == []  # left to the recorder, no error
        assert not dispatch.get_recorder().wait_idle(1.0)  # it can't write them yet
    assert dispatch.get_recorder().wait_idle(10.0)
    assert set(Postback.objects.values_list("status", "leased_until")) == {
        (Postback.Status.SUCCEEDED, None)
    }
    assert PostbackAttempt.objects.count() == 5


def test_a_write_that_committed_before_its_connection_broke_is_not_doubled(template, link):
    make_postbacks(template, link, 3)
    claimed = rows.claim_batch(lane=Lane.FIRST, limit=10, now=timezone.now(), lease=60)
    outcomes = delivered(claimed)
    rows.record_outcomes(outcomes)  # committed, but the caller saw the connection break
    dispatch.get_recorder().record_later(outcomes)
    assert dispatch.get_recorder().wait_idle(10.0)
    assert PostbackAttempt.objects.count() == 3
    assert not Postback.objects.exclude(status=Postback.Status.SUCCEEDED).exists()
