"""Publisher API fixtures: an API client per tenant and a small world of traffic.

Data is made through the real services (clicks, conversions with their postbacks); only
delivery outcomes are set directly where a test needs a postback in a given state.
"""

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from postbacks.models import Postback, PostbackAttempt
from publishers.models import CallbackTemplate, Publisher
from publishers.services import api_key_create
from tests.tracking.helpers import click_stored, isolate_tracking_state
from tracking.models import Click, Conversion, TrackingLink
from tracking.rollups import stats_rebuild
from tracking.services import conversion_record

SPID = 'sp id&x=1/ü"'
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


@pytest.fixture(autouse=True)
def api_settings(settings):
    # The settle delay hides just-recorded conversions; tests that need it set it back.
    settings.API_CONVERSIONS_SETTLE_SECONDS = 0
    settings.API_RATE_LIMIT = "100000/min"
    # Click intelligence keeps state in Redis: this test's keys get their own prefix.
    clean_up = isolate_tracking_state(settings)
    yield settings
    clean_up()


def browser_click(link: TrackingLink, spid: str, **fields) -> Click:
    """A click from a real browser (an empty user agent would be held as a bot click)."""
    return click_stored(link=link, spid=spid, user_agent=BROWSER, **fields)


def client_for(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def api(publisher_key) -> APIClient:
    return client_for(publisher_key)


@pytest.fixture
def other_api(other_publisher) -> APIClient:
    return client_for(api_key_create(publisher=other_publisher)[1])


@dataclass
class World:
    """Publisher A's traffic: a click with SPID that converted (one postback delivered, one
    failed), a second click with the same spid that did not convert."""

    publisher: Publisher
    template: CallbackTemplate
    click: Click
    idle_click: Click
    conversion: Conversion
    delivered: Postback
    failed: Postback


def record_conversion(advertiser, click: Click, **fields) -> Conversion:
    return conversion_record(advertiser=advertiser, click_id=click.click_id, **fields).conversion


@pytest.fixture
def world(publisher, advertiser, link: TrackingLink, template, receiver) -> World:
    second = CallbackTemplate.objects.create(
        publisher=publisher, url_template=f"{receiver.base_url}/other?s=[spid]"
    )
    click = browser_click(link, SPID, placement="footer", ip="127.0.0.1")
    idle = browser_click(link, SPID)
    conversion = record_conversion(advertiser, click, txn_id="order-1", event="sale")
    delivered, failed = conversion.postbacks.order_by("template_id")
    now = timezone.now()
    Postback.objects.filter(pk=delivered.pk).update(
        status=Postback.Status.SUCCEEDED, attempts=1, last_status_code=200, delivered_at=now
    )
    PostbackAttempt.objects.create(
        postback=delivered, number=1, url=delivered.url, status_code=200, outcome="success"
    )
    Postback.objects.filter(pk=failed.pk).update(
        status=Postback.Status.FAILED,
        attempts=2,
        last_status_code=500,
        next_attempt_at=now + timedelta(days=1),
    )
    for number in (1, 2):
        PostbackAttempt.objects.create(
            postback=failed, number=number, url=failed.url, status_code=500, outcome="retry"
        )
    delivered.refresh_from_db()
    failed.refresh_from_db()
    assert second.pk == failed.template_id
    # Reports read the hourly rollup, which beat refreshes in production.
    stats_rebuild(
        publisher_id=publisher.pk, start=now - timedelta(hours=2), end=now + timedelta(hours=1)
    )
    return World(publisher, template, click, idle, conversion, delivered, failed)
