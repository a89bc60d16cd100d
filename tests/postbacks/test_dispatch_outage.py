"""Outcomes of postbacks sent just before a database outage are recorded after it, once:
not left to their leases, which would send them a second time."""

import psycopg
import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from postbacks import dispatch, http
from postbacks.dispatch import Lane, recorder, rows
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
        assert recorder.record(outcomes) == []  # left to the recorder, no error
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


def break_the_connection() -> None:
    """The server ends this thread's open connection, as when PostgreSQL restarts or a proxy
    drops it: the next statement fails inside psycopg, not while connecting."""
    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    with psycopg.connect(connection.connection.info.dsn, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])


def test_outcomes_whose_connection_broke_mid_write_are_recorded_once_it_answers(template, link):
    make_postbacks(template, link, 4)
    claimed = rows.claim_batch(lane=Lane.FIRST, limit=10, now=timezone.now(), lease=60)
    break_the_connection()
    # An outage (recorded later), not psycopg's own error killing the task: its rows would
    # then wait out their leases and be sent a second time.
    assert recorder.record(delivered(claimed)) == []
    assert dispatch.get_recorder().wait_idle(10.0)
    connection.close()  # this thread's broken one; the recorder has its own
    assert PostbackAttempt.objects.count() == 4
    assert set(Postback.objects.values_list("status", "attempts")) == {
        (Postback.Status.SUCCEEDED, 1)
    }


def test_a_claim_on_a_broken_connection_is_an_outage(template, link):
    make_postbacks(template, link, 2)
    break_the_connection()
    with pytest.raises(OperationalError):  # django.db's: the dispatcher knows it
        rows.claim_batch(lane=Lane.FIRST, limit=10, now=timezone.now(), lease=60)
    connection.close()
    assert len(rows.claim_batch(lane=Lane.FIRST, limit=10, now=timezone.now(), lease=60)) == 2
