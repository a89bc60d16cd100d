"""Conversion intake: `POST /api/v1/conversions` (with or without a trailing slash) and
`GET /postback?token=…`, every answer and every error body."""

import json
import threading
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postbacks import dispatch, health
from postbacks.health import HELD_UNTIL
from postbacks.models import Postback
from publishers.models import CallbackTemplate
from tests.tracking.helpers import click_stored
from tracking import selectors, services
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    Campaign,
    Click,
    Conversion,
    ConversionRefusal,
    TrackingLink,
)
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

SPID = 'a b&c/d?e#f%g"ü'
# A visitor's browser: a click without a user agent is held as a bot click.
BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
INTAKES = ["post", "post-slash", "get"]
OWN_KEY = object()


class Published:
    """What was handed to the broker: ("kick", lane) per dispatch kick."""

    def __init__(self, kick: mock.Mock):
        self.kick = kick

    def __call__(self) -> list[tuple]:
        return [("kick", str(c.args[0])) for c in self.kick.call_args_list]


@pytest.fixture(autouse=True)
def task_sent():
    """Nothing reaches the broker: what a commit publishes is recorded instead."""
    with mock.patch.object(dispatch, "kick", return_value=True) as kick:
        yield Published(kick)


# One coalesced kick of the first-attempt lane per commit, however many postbacks.
KICK = [("kick", "first")]


class Intake:
    """One way in: JSON over POST with a Bearer key, or GET with ?token=."""

    def __init__(self, kind: str, key: str, wrong_kind_key: str):
        self.kind = kind
        self.key = key
        self.wrong_kind_key = wrong_kind_key
        self.client = Client()

    def send(self, fields: dict, *, key: object = OWN_KEY, client: Client | None = None):
        """Send `fields` with this intake's key, another `key`, or none (key=None)."""
        key = self.key if key is OWN_KEY else key
        client = client or self.client
        if self.kind == "get":
            params = {**({"token": key} if key is not None else {}), **fields}
            return client.get("/postback", {k: str(v) for k, v in params.items()})
        path = "/api/v1/conversions/" if self.kind == "post-slash" else "/api/v1/conversions"
        headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key is not None else {}
        return client.post(path, json.dumps(fields), content_type="application/json", **headers)


@pytest.fixture(params=INTAKES)
def intake(request, api_key, postback_token) -> Intake:
    if request.param == "get":
        return Intake("get", postback_token, api_key)
    return Intake(request.param, api_key, postback_token)


@pytest.fixture
def callback(publisher) -> CallbackTemplate:
    return CallbackTemplate.objects.create(
        publisher=publisher, url_template="https://pub.example/cb?id=[spid]&p=[payout]"
    )


@pytest.fixture
def click(link) -> Click:
    return click_stored(link=link, spid=SPID, user_agent=BROWSER)


def error_of(response, status: int, code: str) -> dict:
    """Check the one error shape, `{"error": {"code", "message", "fields"}}`; return it."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"].strip()
    assert isinstance(error["fields"], dict)
    for name, messages in error["fields"].items():
        assert isinstance(name, str)
        assert isinstance(messages, list) and messages
        assert all(isinstance(m, str) and m for m in messages)
    return error


# --- Success and idempotency ----------------------------------------------------------------


def test_it_records_a_conversion_and_answers_201_with_its_postbacks(intake, click, callback):
    response = intake.send({"click_id": click.click_id, "txn_id": "T-1", "payout": "3.25"})
    assert response.status_code == 201, response.content
    body = response.json()
    conversion = Conversion.objects.get()
    postback = Postback.objects.get()
    assert body["id"] == conversion.public_id and body["id"].startswith("cnv_")
    assert (body["click_id"], body["event"], body["txn_id"], body["status"]) == (
        click.click_id,
        "conversion",
        "T-1",
        "approved",
    )
    assert Decimal(body["payout"]) == conversion.payout == Decimal("3.25")
    assert body["currency"] == conversion.currency == "EUR"  # the campaign's
    assert body["created"] is True
    assert body["postbacks"] == [
        {"id": postback.event_id, "status": "pending", "conversion_status": "approved"}
    ]
    assert postback.event_id.startswith("evt_")
    assert (conversion.click_id, conversion.publisher_id, conversion.campaign_id) == (
        click.pk,
        click.publisher_id,
        click.campaign_id,
    )
    assert postback.url == "https://pub.example/cb?id=a%20b%26c%2Fd%3Fe%23f%25g%22%C3%BC&p=3.25"


def test_it_fills_in_the_campaigns_defaults(intake, click):
    response = intake.send({"click_id": click.click_id})
    assert response.status_code == 201
    conversion = Conversion.objects.get()
    assert (conversion.event, conversion.txn_id, conversion.status) == (
        "conversion",
        "",
        "approved",
    )
    assert (conversion.payout, conversion.currency) == (Decimal("2.50"), "EUR")


def test_it_keeps_the_advertisers_event_payout_currency_and_revenue(intake, click):
    response = intake.send(
        {
            "click_id": click.click_id,
            "event": "Sale.Large-1",
            "payout": "0.125",
            "revenue": "10",
            "currency": "usd",
            "status": "pending",
        }
    )
    assert response.status_code == 201, response.content
    conversion = Conversion.objects.get()
    assert (conversion.event, conversion.status, conversion.currency) == (
        "sale.large-1",
        "pending",
        "USD",
    )
    assert (conversion.payout, conversion.revenue) == (Decimal("0.125"), Decimal(10))
    body = response.json()
    assert Decimal(body["payout"]) == Decimal("0.125") and Decimal(body["revenue"]) == 10


def test_it_answers_a_replayed_txn_id_with_200_and_the_original(intake, click, callback):
    first = intake.send({"click_id": click.click_id, "txn_id": "T-1", "payout": "1"})
    assert first.status_code == 201
    again = intake.send({"click_id": click.click_id, "txn_id": "T-1", "payout": "1"})
    assert again.status_code == 200, again.content
    original, replay = first.json(), again.json()
    assert replay["created"] is False
    assert {k: v for k, v in replay.items() if k != "created"} == {
        k: v for k, v in original.items() if k != "created"
    }
    assert Conversion.objects.count() == 1 and Postback.objects.count() == 1
    assert Conversion.objects.get().payout == 1  # the replay changed nothing


def test_it_dedupes_on_click_and_event_without_a_txn_id(intake, click, callback):
    assert intake.send({"click_id": click.click_id}).status_code == 201
    again = intake.send({"click_id": click.click_id})
    assert again.status_code == 200
    assert again.json()["id"] == Conversion.objects.get().public_id
    # Another event of the same click is another conversion.
    assert intake.send({"click_id": click.click_id, "event": "sale"}).status_code == 201
    assert Conversion.objects.count() == 2 and Postback.objects.count() == 2


def test_it_answers_409_for_a_txn_id_already_used_with_another_click(intake, click, link, callback):
    other_click = click_stored(link=link, spid="other", user_agent=BROWSER)
    assert intake.send({"click_id": click.click_id, "txn_id": "T-1"}).status_code == 201
    response = intake.send({"click_id": other_click.click_id, "txn_id": "T-1"})
    error = error_of(response, 409, "txn_id_conflict")
    assert "T-1" in error["message"]
    assert Conversion.objects.count() == 1 and Postback.objects.count() == 1


def test_it_sends_no_postback_for_a_click_without_spid(intake, link, callback):
    click = click_stored(link=link, spid="", user_agent=BROWSER)
    response = intake.send({"click_id": click.click_id})
    assert response.status_code == 201
    assert response.json()["postbacks"] == []
    assert Conversion.objects.count() == 1 and not Postback.objects.exists()


def test_it_creates_one_postback_per_matching_template_held_if_paused(
    intake, click, callback, publisher
):
    second = CallbackTemplate.objects.create(
        publisher=publisher, url_template="https://pub.example/[spid]/?e=[event]"
    )
    paused = CallbackTemplate.objects.create(
        publisher=publisher, url_template="https://pub.example/off?id=[spid]"
    )
    health.endpoint_pause([paused.pk], reason=CallbackTemplate.PausedReason.MANUAL)
    CallbackTemplate.objects.create(
        publisher=publisher, url_template="https://pub.example/sales?id=[spid]", events=["sale"]
    )
    response = intake.send({"click_id": click.click_id})
    assert response.status_code == 201
    rows = {p.template_id: p for p in Postback.objects.all()}
    assert set(rows) == {callback.pk, second.pk, paused.pk}
    # The paused template's postback is kept, held until it is resumed.
    assert rows[paused.pk].next_attempt_at == HELD_UNTIL
    assert rows[callback.pk].next_attempt_at < HELD_UNTIL
    assert len(response.json()["postbacks"]) == 3


# --- Status changes -------------------------------------------------------------------------


def test_it_fires_a_new_postback_with_its_own_event_id_on_pending_to_approved(
    intake, click, callback
):
    callback.statuses = ["pending", "approved"]
    callback.save()
    pending = intake.send({"click_id": click.click_id, "txn_id": "T-1", "status": "pending"})
    assert pending.status_code == 201
    [first] = pending.json()["postbacks"]
    assert first["conversion_status"] == "pending"

    approved = intake.send({"click_id": click.click_id, "txn_id": "T-1", "status": "approved"})
    assert approved.status_code == 200, approved.content
    body = approved.json()
    assert body["status"] == "approved" and body["id"] == pending.json()["id"]
    assert Conversion.objects.get().status == "approved"
    postbacks = {p["conversion_status"]: p["id"] for p in body["postbacks"]}
    assert set(postbacks) == {"pending", "approved"}
    assert postbacks["pending"] == first["id"] and postbacks["approved"] != first["id"]
    assert Postback.objects.count() == 2
    assert Postback.objects.get(conversion_status="approved").event_id == postbacks["approved"]

    # Saying "approved" again is a replay: nothing new.
    again = intake.send({"click_id": click.click_id, "txn_id": "T-1", "status": "approved"})
    assert again.status_code == 200 and Postback.objects.count() == 2


def test_it_sends_the_status_change_task_on_commit(
    click, advertiser, callback, task_sent, django_capture_on_commit_callbacks
):
    callback.statuses = ["pending", "approved"]
    callback.save()
    with django_capture_on_commit_callbacks(execute=True):
        conversion_record(advertiser=advertiser, click_id=click.click_id, status="pending")
    with django_capture_on_commit_callbacks(execute=True):
        outcome = conversion_record(advertiser=advertiser, click_id=click.click_id)
    assert outcome.conversion.status == "approved"
    assert Postback.objects.filter(conversion_status__in=["pending", "approved"]).count() == 2
    assert task_sent() == [*KICK, *KICK]  # one kick per commit


@pytest.mark.parametrize(
    ("before", "after"),
    [("approved", "pending"), ("rejected", "approved"), ("rejected", "pending")],
)
def test_it_answers_409_for_a_status_change_that_is_not_allowed(
    intake, click, callback, before, after
):
    first = intake.send({"click_id": click.click_id, "txn_id": "T", "status": before})
    assert first.status_code == 201
    response = intake.send({"click_id": click.click_id, "txn_id": "T", "status": after})
    error = error_of(response, 409, "status_change_not_allowed")
    assert before in error["message"] and after in error["message"]
    assert Conversion.objects.get().status == before


def test_it_allows_approved_to_rejected(intake, click, callback):
    assert intake.send({"click_id": click.click_id, "txn_id": "T"}).status_code == 201
    response = intake.send({"click_id": click.click_id, "txn_id": "T", "status": "rejected"})
    assert response.status_code == 200
    assert Conversion.objects.get().status == "rejected"
    assert Postback.objects.count() == 1  # the template only listens to "approved"


# --- Errors ---------------------------------------------------------------------------------


def test_it_answers_404_for_an_unknown_click(intake, click):
    error = error_of(intake.send({"click_id": "nosuchclick"}), 404, "click_not_found")
    assert "nosuchclick" in error["message"]
    assert not Conversion.objects.exists()


def test_it_answers_404_for_a_click_of_another_advertisers_campaign(intake, publisher):
    other = Advertiser.objects.create(name="Other advertiser")
    campaign = Campaign.objects.create(
        advertiser=other, name="Theirs", landing_url="https://other.example/?c=[click_id]"
    )
    their_link = TrackingLink.objects.create(publisher=publisher, campaign=campaign, code="theirs")
    their_click = click_stored(link=their_link, spid="x", user_agent=BROWSER)
    unknown = error_of(intake.send({"click_id": "nosuchclick"}), 404, "click_not_found")
    theirs = error_of(intake.send({"click_id": their_click.click_id}), 404, "click_not_found")
    # Indistinguishable from a click that doesn't exist.
    assert theirs["message"].replace(their_click.click_id, "") == unknown["message"].replace(
        "nosuchclick", ""
    )
    assert theirs["fields"] == unknown["fields"]
    assert not Conversion.objects.exists()


def test_it_answers_422_outside_the_attribution_window(intake, click, callback):
    Click.objects.filter(pk=click.pk).update(
        created_at=timezone.now() - timedelta(days=7, minutes=1)
    )
    error = error_of(intake.send({"click_id": click.click_id}), 422, "attribution_window_expired")
    assert "7 days" in error["message"]
    assert not Conversion.objects.exists() and not Postback.objects.exists()
    # Recorded as refused, so the publisher and the advertiser see what was not counted; the
    # same conversion sent again is another attempt, not another row.
    error_of(intake.send({"click_id": click.click_id}), 422, "attribution_window_expired")
    refusal = ConversionRefusal.objects.get()
    assert (refusal.click_id, refusal.reason, refusal.attempts) == (
        click.click_id,
        ConversionRefusal.Reason.EXPIRED,
        2,
    )
    assert refusal.publisher_id == click.publisher_id and refusal.spid == click.spid


def test_it_accepts_a_conversion_just_inside_the_attribution_window(intake, click):
    Click.objects.filter(pk=click.pk).update(
        created_at=timezone.now() - timedelta(days=6, hours=23)
    )
    assert intake.send({"click_id": click.click_id}).status_code == 201


def test_it_replays_a_recorded_conversion_even_after_the_window(intake, click):
    first = intake.send({"click_id": click.click_id, "txn_id": "T"})
    Click.objects.filter(pk=click.pk).update(created_at=timezone.now() - timedelta(days=30))
    again = intake.send({"click_id": click.click_id, "txn_id": "T"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("fields", "invalid"),
    [
        ({"click_id": ""}, {"click_id"}),
        ({"click_id": "x" * 65}, {"click_id"}),
        ({"event": "bad event!"}, {"event"}),
        ({"event": "x" * 51}, {"event"}),
        ({"event": "_starts-with-underscore"}, {"event"}),
        ({"txn_id": "t" * 256}, {"txn_id"}),
        ({"payout": "-1"}, {"payout"}),
        ({"payout": "abc"}, {"payout"}),
        ({"payout": "1.1234567"}, {"payout"}),
        ({"payout": "1" * 15 + ".0"}, {"payout"}),
        ({"revenue": "-0.01"}, {"revenue"}),
        ({"currency": "EURO"}, {"currency"}),
        ({"currency": "€UR"}, {"currency"}),
        ({"status": "maybe"}, {"status"}),
        ({"status": "maybe", "payout": "x", "currency": "1"}, {"status", "payout", "currency"}),
    ],
)
def test_it_answers_400_with_a_message_per_invalid_field(intake, click, fields, invalid):
    error = error_of(intake.send({"click_id": click.click_id, **fields}), 400, "invalid")
    assert set(error["fields"]) == invalid
    for name in invalid:
        assert name in error["message"]
    assert not Conversion.objects.exists()


@pytest.mark.parametrize(
    ("fields", "invalid"),
    [
        ({"click_id": None}, {"click_id"}),
        ({"click_id": ["a"]}, {"click_id"}),
        ({"click_id": True}, {"click_id"}),
        ({"event": None}, {"event"}),
        ({"payout": "NaN"}, {"payout"}),
        ({"payout": "Infinity"}, {"payout"}),
        ({"status": ["approved"]}, {"status"}),
    ],
)
def test_it_answers_400_for_json_values_of_the_wrong_type(api_key, click, fields, invalid):
    intake = Intake("post", api_key, "")
    body = {"click_id": click.click_id, **fields}
    error = error_of(intake.send(body), 400, "invalid")
    assert set(error["fields"]) == invalid


def test_it_names_a_missing_click_id(intake):
    error = error_of(intake.send({}), 400, "invalid")
    assert error["fields"] == {"click_id": ["This field is required."]}
    assert error["message"] == "Invalid fields: click_id."


@pytest.mark.parametrize(
    "credential",
    ["missing", "empty", "garbage", "wrong-secret", "other-kind", "revoked", "paused"],
)
def test_it_answers_401_without_a_valid_key(intake, click, advertiser, credential):
    if credential == "revoked":
        AdvertiserAPIKey.objects.update(revoked_at=timezone.now())
    if credential == "paused":
        Advertiser.objects.filter(pk=advertiser.pk).update(status=Advertiser.Status.PAUSED)
    key = {
        "missing": None,
        "empty": "",
        "garbage": "not-a-key",
        "wrong-secret": intake.key[:-4] + "AAAA",
        "other-kind": intake.wrong_kind_key,
        "revoked": intake.key,
        "paused": intake.key,
    }[credential]
    error_of(intake.send({"click_id": click.click_id}, key=key), 401, "unauthorized")
    assert not Conversion.objects.exists()


def test_a_cached_key_still_needs_its_secret_and_a_revocation_lands_within_the_ttl(
    intake, click, settings
):
    """Verified keys are cached per process (no query on the intake's hot path); the secret is
    still checked on every request, and a revoked key stops working once its entry expires."""
    settings.CONVERSIONS_KEY_CACHE_SECONDS = 60
    assert intake.send({"click_id": click.click_id, "txn_id": "A"}).status_code == 201
    with CaptureQueriesContext(connection) as queries:
        assert intake.send({"click_id": click.click_id, "txn_id": "B"}).status_code == 201
    assert not [q for q in queries if "tracking_advertiserapikey" in q["sql"]]
    wrong = intake.key[:-4] + "AAAA"
    error_of(
        intake.send({"click_id": click.click_id, "txn_id": "C"}, key=wrong), 401, "unauthorized"
    )

    AdvertiserAPIKey.objects.update(revoked_at=timezone.now())
    assert intake.send({"click_id": click.click_id, "txn_id": "D"}).status_code == 201  # cached
    for entry_key, (_, _, row) in list(selectors.endpoints._KEY_CACHE.items()):
        selectors.endpoints._KEY_CACHE[entry_key] = (0.0, 0.0, row)  # the TTL ran out
    error_of(intake.send({"click_id": click.click_id, "txn_id": "E"}), 401, "unauthorized")
    assert not selectors.endpoints._KEY_CACHE


@pytest.mark.parametrize("header", ["Basic {key}", "{key}", "Bearer", "Token {key}", "Bearer  "])
def test_it_answers_401_for_a_malformed_authorization_header(api_key, click, header):
    response = Client().post(
        "/api/v1/conversions",
        json.dumps({"click_id": click.click_id}),
        content_type="application/json",
        HTTP_AUTHORIZATION=header.format(key=api_key),
    )
    error_of(response, 401, "unauthorized")


def test_it_accepts_the_bearer_scheme_in_any_case(api_key, click):
    response = Client().post(
        "/api/v1/conversions",
        json.dumps({"click_id": click.click_id}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"bearer {api_key}",
    )
    assert response.status_code == 201


@pytest.mark.parametrize("path", ["/api/v1/conversions", "/api/v1/conversions/"])
@pytest.mark.parametrize(
    "payload", ['{"click_id": ', "{'click_id': 'x'}", "not json", '{"click_id": NaN}', "\xff"]
)
def test_it_answers_400_json_for_a_malformed_body(api_key, click, path, payload):
    response = Client().post(
        path, payload, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_key}"
    )
    error = error_of(response, 400, "invalid")
    assert "JSON" in error["message"]


@pytest.mark.parametrize("payload", ["[]", '"click"', "null", "42"])
def test_it_answers_400_when_the_body_is_not_an_object(api_key, payload):
    response = Client().post(
        "/api/v1/conversions",
        payload,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    error_of(response, 400, "invalid")


def test_it_authenticates_before_reading_the_body(click):
    response = Client().post("/api/v1/conversions", "not json", content_type="application/json")
    error_of(response, 401, "unauthorized")


def test_it_answers_415_json_for_another_content_type(api_key, click):
    response = Client().post(
        "/api/v1/conversions",
        f"click_id={click.click_id}",
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    error_of(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_it_answers_405_json_for_other_methods(api_key, postback_token, method):
    client = Client()
    for path in ("/api/v1/conversions", "/api/v1/conversions/"):
        response = getattr(client, method)(path, HTTP_AUTHORIZATION=f"Bearer {api_key}")
        error_of(response, 405, "method_not_allowed")
    error_of(client.post(f"/postback?token={postback_token}"), 405, "method_not_allowed")


def test_it_takes_no_session_or_csrf(api_key, click, publisher):
    client = Client(enforce_csrf_checks=True)
    client.force_login(publisher.members.get(username="owner-a"))
    response = client.post(
        "/api/v1/conversions",
        json.dumps({"click_id": click.click_id}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    assert response.status_code == 201


def test_the_get_intake_ignores_unknown_parameters(postback_token, click):
    response = Client().get(
        "/postback",
        {"token": postback_token, "click_id": click.click_id, "sub1": "x", "advertiser": "1"},
    )
    assert response.status_code == 201


# --- Transactions and concurrency ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_sends_the_delivery_task_only_after_commit(click, advertiser, callback, task_sent):
    with transaction.atomic():
        conversion_record(advertiser=advertiser, click_id=click.click_id)
        assert task_sent() == []
    assert task_sent() == KICK


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_conversion_creates_no_postback_and_sends_no_task(
    click, advertiser, callback, task_sent
):
    with pytest.raises(RuntimeError), transaction.atomic():
        outcome = conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="T")
        assert len(outcome.postbacks) == 1
        raise RuntimeError("the caller's transaction fails after the conversion")
    assert not Conversion.objects.exists() and not Postback.objects.exists()
    assert task_sent() == []
    # The same transaction id is free again: nothing of the rolled-back attempt remains.
    outcome = conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="T")
    assert outcome.created
    assert task_sent() == KICK


def _race(calls: list) -> list:
    """Run the callables in threads at once; return their results (or exceptions)."""
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as exc:
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def inserts_meet():
    """Make both requests reach their insert together, so both try to record the conversion
    and one of them must lose on the unique constraint (and answer as a replay)."""
    barrier = threading.Barrier(2, timeout=10)
    real = services._conversion_create

    def wait_then_create(**kwargs):
        barrier.wait()
        return real(**kwargs)

    with mock.patch.object(services, "_conversion_create", wait_then_create):
        yield


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("txn_id", ["T-1", ""])
def test_concurrent_duplicates_record_exactly_one_conversion(
    click, advertiser, callback, inserts_meet, txn_id
):
    def record():
        return conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id=txn_id)

    results = _race([record, record])
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(r.created for r in results) == [False, True]
    assert results[0].conversion.pk == results[1].conversion.pk
    assert Conversion.objects.count() == 1 and Postback.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", INTAKES)
def test_concurrent_duplicate_requests_get_201_and_200_for_one_conversion(
    click, api_key, postback_token, callback, inserts_meet, kind
):
    intake = Intake(kind, postback_token if kind == "get" else api_key, "")

    def send():
        return intake.send({"click_id": click.click_id, "txn_id": "T-1"}, client=Client())

    responses = _race([send, send])
    assert sorted(r.status_code for r in responses) == [200, 201], [r.content for r in responses]
    assert responses[0].json()["id"] == responses[1].json()["id"]
    assert responses[0].json()["postbacks"] == responses[1].json()["postbacks"]
    assert Conversion.objects.count() == 1 and Postback.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_same_txn_id_on_two_clicks_gets_one_201_and_one_409(
    click, link, advertiser, callback, inserts_meet
):
    other = click_stored(link=link, spid="other", user_agent=BROWSER)

    def record(click_id):
        return lambda: conversion_record(advertiser=advertiser, click_id=click_id, txn_id="T-1")

    results = _race([record(click.click_id), record(other.click_id)])
    errors = [r for r in results if isinstance(r, services.IntakeError)]
    assert len(errors) == 1 and errors[0].status == 409
    assert Conversion.objects.count() == 1 and Postback.objects.count() == 1
