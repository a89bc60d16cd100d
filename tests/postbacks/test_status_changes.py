"""Status changes over the API: pending → approved, approved → rejected or reversed, each firing
the templates subscribed to the new status with a postback (and event id) of its own, whose
`[status]` says the new status. Delivered through the dispatcher to receivers on 127.0.0.1."""

import json
import math
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from postbacks import dispatch
from postbacks.dispatch import Lane
from postbacks.models import Postback
from publishers.models import CallbackTemplate
from tests.postbacks.test_dispatch import BROWSER, own_redis_keys
from tests.tracking.helpers import click_stored
from tracking.models import Conversion

pytestmark = pytest.mark.django_db

ALL = ["pending", "approved", "rejected", "reversed"]


@pytest.fixture(autouse=True)
def redis_keys(settings, request):
    with own_redis_keys(settings, request.node.name) as prefix:
        yield prefix


@pytest.fixture
def subscribe(publisher, receiver):
    """A template for `statuses` whose URL carries its name, [status] and [event_id]."""

    def make(name: str, statuses: list[str]) -> CallbackTemplate:
        template = CallbackTemplate(
            publisher=publisher,
            name=name,
            url_template=f"{receiver.base_url}/{name}?s=[status]&e=[event_id]&id=[spid]",
            statuses=statuses,
        )
        template.full_clean()
        template.save()
        return template

    return make


@pytest.fixture
def click(link):
    return click_stored(link=link, spid="spid-42", user_agent=BROWSER)


class Advertiser:
    def __init__(self, api_key: str, postback_token: str, click):
        self.client = Client()
        self.api_key, self.token, self.click = api_key, postback_token, click

    def post(self, status: str, txn_id: str = "T-1"):
        body = {"click_id": self.click.click_id, "txn_id": txn_id, "status": status}
        return self.client.post(
            "/api/v1/conversions",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {self.api_key}",
        )

    def get(self, status: str, txn_id: str = "T-1"):
        params = {"token": self.token, "click_id": self.click.click_id, "txn_id": txn_id}
        return self.client.get("/postback", {**params, "status": status})


@pytest.fixture
def advertiser_api(api_key, postback_token, click) -> Advertiser:
    return Advertiser(api_key, postback_token, click)


def deliver() -> None:
    dispatch.drain(Lane.FIRST, wait=math.inf, kicks=False)


def received(receiver) -> list[tuple[str, str, str]]:
    """(template name, [status], [event_id]) of each callback, checking the event id header."""
    calls = []
    for request in receiver.requests:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        assert request.headers["Roundtrip-Event-Id"] == query["e"][0]
        assert query["id"] == ["spid-42"]
        calls.append((url.path.strip("/"), query["s"][0], query["e"][0]))
    return calls


def test_it_fires_each_status_to_its_subscribers_with_its_own_event_id(
    advertiser_api, subscribe, receiver
):
    subscribe("every", ALL)
    subscribe("paid", ["approved"])
    subscribe("clawback", ["reversed"])

    first = advertiser_api.post("pending")
    assert first.status_code == 201, first.content
    deliver()
    assert [(n, s) for n, s, _ in received(receiver)] == [("every", "pending")]

    approved = advertiser_api.post("approved")
    assert approved.status_code == 200, approved.content
    assert approved.json()["id"] == first.json()["id"], "the same conversion, not a new one"
    deliver()
    reversed_ = advertiser_api.post("reversed")
    assert reversed_.status_code == 200, reversed_.content
    assert reversed_.json()["status"] == "reversed"
    deliver()

    calls = received(receiver)
    assert sorted((n, s) for n, s, _ in calls) == [
        ("clawback", "reversed"),
        ("every", "approved"),
        ("every", "pending"),
        ("every", "reversed"),
        ("paid", "approved"),
    ]
    event_ids = [e for _, _, e in calls]
    assert len(set(event_ids)) == 5, "one event id per template and status"
    # The API answer lists every postback of the conversion with its status.
    listed = {(p["conversion_status"], p["id"]) for p in reversed_.json()["postbacks"]}
    assert {e for _, e in listed} == set(event_ids)
    assert set(Postback.objects.values_list("conversion_status", "status")) == {
        ("pending", "succeeded"),
        ("approved", "succeeded"),
        ("reversed", "succeeded"),
    }


@pytest.mark.parametrize("before", ["pending", "approved"])
def test_it_fires_rejected_from_pending_and_from_approved(
    advertiser_api, subscribe, receiver, before
):
    subscribe("rejections", ["rejected"])
    assert advertiser_api.post(before).status_code == 201
    assert advertiser_api.get("rejected").status_code == 200  # the GET intake alike
    deliver()
    assert [(n, s) for n, s, _ in received(receiver)] == [("rejections", "rejected")]
    assert Conversion.objects.get().status == "rejected"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("pending", "reversed"),  # never paid: nothing to reverse
        ("reversed", "approved"),
        ("reversed", "rejected"),
        ("rejected", "reversed"),
    ],
)
def test_it_refuses_changes_that_have_no_meaning(
    advertiser_api, subscribe, receiver, before, after
):
    subscribe("every", ALL)
    if before == "reversed":
        assert advertiser_api.post("approved").status_code == 201
        assert advertiser_api.post("reversed").status_code == 200
    else:
        assert advertiser_api.post(before).status_code == 201
    count = Postback.objects.count()
    response = advertiser_api.post(after)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "status_change_not_allowed"
    assert Conversion.objects.get().status == before
    assert Postback.objects.count() == count


def test_the_same_status_again_fires_nothing_new(advertiser_api, subscribe, receiver):
    subscribe("every", ALL)
    assert advertiser_api.post("approved").status_code == 201
    again = advertiser_api.post("approved")
    assert again.status_code == 200 and again.json()["created"] is False
    deliver()
    assert len(received(receiver)) == 1


def test_a_template_may_subscribe_to_reversed_but_not_to_an_unknown_status(publisher, receiver):
    template = CallbackTemplate(
        publisher=publisher,
        url_template=f"{receiver.base_url}/cb?s=[status]",
        statuses=["reversed"],
    )
    template.full_clean()
    template.statuses = ["refunded"]
    with pytest.raises(ValidationError):
        template.full_clean()
