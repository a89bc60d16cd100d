"""The intake's write path as production runs it: the same view, settings and transaction
handling (no test transaction around the request), counted in SQL statements.

A new conversion of a campaign without payout terms or caps is two statements: the click
lookup (which reads the publisher's `callbacks_version` with it) and one statement inserting the
conversion, its postbacks, the rollup's dirty-hour marks and the advertiser's log line. No
BEGIN/COMMIT, no template query once the publisher's templates are cached."""

import json
from unittest import mock

import pytest
from django.db import IntegrityError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from config.onestatement import Children, insert_together
from postbacks import dispatch
from postbacks.models import Postback
from publishers.models import CallbackTemplate, Publisher
from tests.tracking.helpers import click_stored
from tracking.models import Conversion, IntakeOutcome, StatsDirtyHour

pytestmark = pytest.mark.django_db(transaction=True)

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


@pytest.fixture(autouse=True)
def kicks():
    with mock.patch.object(dispatch, "kick", return_value=True) as kick:
        yield kick


@pytest.fixture
def templates(publisher) -> list[CallbackTemplate]:
    return [
        CallbackTemplate.objects.create(
            publisher=publisher, url_template=f"https://pub.example/{name}?s=[spid]&e=[event_id]"
        )
        for name in ("first", "second")
    ]


def post(api_key: str, click_id: str, txn_id: str):
    return Client().post(
        "/api/v1/conversions",
        json.dumps({"click_id": click_id, "txn_id": txn_id, "payout": "1.25"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )


def convert(link, api_key: str, txn_id: str) -> dict:
    click = click_stored(link=link, spid="s-1", user_agent=BROWSER)
    response = post(api_key, click.click_id, txn_id)
    assert response.status_code == 201, response.content
    return response.json()


def test_a_new_conversion_is_two_statements_on_the_production_path(link, api_key, templates, kicks):
    assert not connection.in_atomic_block  # as in production: no transaction around requests
    convert(link, api_key, "warm-up")  # caches the key and the publisher's templates
    click = click_stored(link=link, spid="s-2", user_agent=BROWSER)
    kicks.reset_mock()

    with CaptureQueriesContext(connection) as queries:
        response = post(api_key, click.click_id, "T-1")

    assert response.status_code == 201, response.content
    statements = [query["sql"] for query in queries]
    assert len(statements) == 2, statements
    lookup, write = statements
    assert lookup.startswith("SELECT") and '"publishers_publisher"."callbacks_version"' in lookup
    for table in ("tracking_conversion", "postbacks_postback", "tracking_statsdirtyhour"):
        assert f'INSERT INTO "{table}"' in write
    assert 'INSERT INTO "tracking_intakeoutcome"' in write
    kicks.assert_called_once_with(dispatch.Lane.FIRST)  # after the statement committed

    conversion = Conversion.objects.get(txn_id="T-1")
    assert response.json()["id"] == conversion.public_id
    postbacks = Postback.objects.filter(conversion=conversion).order_by("pk")
    assert [pb.event_id for pb in postbacks] == [pb["id"] for pb in response.json()["postbacks"]]
    assert [pb.template_id for pb in postbacks] == [t.pk for t in templates]
    assert all(pb.url.endswith(f"e={pb.event_id}") for pb in postbacks)
    log = IntakeOutcome.objects.get(txn_id="T-1")
    assert (log.conversion_id, log.outcome) == (conversion.pk, IntakeOutcome.Outcome.ACCEPTED)
    assert StatsDirtyHour.objects.filter(publisher_id=conversion.publisher_id).exists()


def test_a_repeat_still_answers_200_from_the_recorded_conversion(link, api_key, templates):
    click = click_stored(link=link, spid="s-1", user_agent=BROWSER)
    first = post(api_key, click.click_id, "T-1")
    again = post(api_key, click.click_id, "T-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["postbacks"] == first.json()["postbacks"]
    assert Conversion.objects.count() == 1 and Postback.objects.count() == 2
    outcomes = IntakeOutcome.objects.order_by("pk").values_list("outcome", flat=True)
    assert list(outcomes) == [IntakeOutcome.Outcome.ACCEPTED, IntakeOutcome.Outcome.DUPLICATE]


def test_a_template_change_reaches_the_next_conversion_despite_the_cache(link, api_key, templates):
    first, second = templates
    convert(link, api_key, "A")  # cached now
    # Changed behind the models' back (a queryset update, as endpoint health pauses): the
    # database trigger still bumps the publisher's version.
    CallbackTemplate.objects.filter(pk=first.pk).update(url_template="https://new.example/x")
    CallbackTemplate.objects.filter(pk=second.pk).update(
        paused_at="2026-01-01T00:00:00Z", is_active=False, paused_reason="failing"
    )
    body = convert(link, api_key, "B")
    rows = Postback.objects.filter(conversion__public_id=body["id"]).order_by("pk")
    assert rows[0].url == "https://new.example/x"
    assert rows[1].status == Postback.Status.PENDING and rows[1].next_attempt_at.year > 2100

    CallbackTemplate.objects.create(publisher=first.publisher, url_template="https://third/")
    assert len(convert(link, api_key, "C")["postbacks"]) == 3
    CallbackTemplate.objects.filter(pk=first.pk).delete()
    assert len(convert(link, api_key, "D")["postbacks"]) == 2


def test_the_version_moves_only_for_what_the_intake_reads_and_never_back(publisher, templates):
    def version() -> int:
        return Publisher.objects.get(pk=publisher.pk).callbacks_version

    start = version()
    # Endpoint health's counters change on every failure: no new version for those.
    CallbackTemplate.objects.filter(pk=templates[0].pk).update(consecutive_failures=3)
    assert version() == start
    CallbackTemplate.objects.filter(pk=templates[0].pk).update(events=["sale"])
    assert version() == start + 1
    stale = Publisher.objects.get(pk=publisher.pk)
    CallbackTemplate.objects.filter(pk=templates[0].pk).update(events=[])
    stale.name = "Renamed"
    stale.save()  # carries the older version it read
    assert version() == start + 2


def test_insert_together_writes_nothing_when_a_row_is_a_duplicate(link, advertiser, templates):
    click = click_stored(link=link, spid="s-1", user_agent=BROWSER)

    def conversion() -> Conversion:
        return Conversion(
            click=click,
            publisher_id=click.publisher_id,
            advertiser=advertiser,
            campaign=click.campaign,
            txn_id="T-1",
            payout=1,
            currency="USD",
            **Conversion.click_dimensions(click),
        )

    first = conversion()
    insert_together(first, Children([StatsDirtyHour(publisher_id=click.publisher_id,
                                                    hour=click.created_at.replace(minute=0, second=0, microsecond=0))],
                                    ignore_conflicts=True))  # fmt: skip
    assert first.pk and not first._state.adding
    again = conversion()
    postback = Postback(conversion=again, template=templates[0], publisher_id=click.publisher_id,
                        conversion_status="approved", url="https://pub.example/")  # fmt: skip
    with pytest.raises(IntegrityError):
        insert_together(again, Children([postback], parent_field="conversion"))
    assert Conversion.objects.count() == 1 and not Postback.objects.exists()
