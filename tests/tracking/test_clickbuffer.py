"""Buffered click writes against the real Redis: nothing lost, nothing doubled, and a click is
valid for conversion before it reaches the database."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings as django_settings

from tracking import clickbuffer
from tracking.models import Click, ClickDeadLetter, Conversion, TrackingLink
from tracking.tasks import flush_click_buffer

pytestmark = pytest.mark.django_db


def click(client, link, spid: str) -> str:
    response = client.get(f"/click?ref={link.code}&spid={spid}")
    assert response.status_code == 302
    return parse_qs(urlsplit(response["Location"]).query)["click_id"][0]


def test_it_buffers_the_click_and_flushes_it_intact(client, link, buffered):
    click_id = click(client, link, "buffered-1")
    assert not Click.objects.exists()
    assert clickbuffer.buffer_status().entries == 1
    assert clickbuffer.clicks_flush() == 1
    row = Click.objects.get()
    assert (row.click_id, row.spid, row.placement) == (click_id, "buffered-1", "sidebar")
    assert row.publisher_id == link.publisher_id and row.link_id == link.pk
    assert clickbuffer.buffer_status().entries == 0


def test_it_decides_uniqueness_in_the_same_round_trip(client, link, buffered):
    """The buffer's script checks the visitor's unique window: the first click of an IP + user
    agent on a link is unique, a repeat is not, another visitor is again."""
    for key in buffered.scan_iter(f"{django_settings.TRACKING_REDIS_PREFIX}uniq:*"):
        buffered.delete(key)
    first = click(client, link, "u-1")
    repeat = click(client, link, "u-2")
    client.defaults["REMOTE_ADDR"] = "198.51.100.23"
    other = click(client, link, "u-3")
    assert clickbuffer.clicks_flush() == 3
    flags = dict(Click.objects.values_list("click_id", "is_unique"))
    assert flags == {first: True, repeat: False, other: True}


def test_it_flushes_in_batches_through_the_task(client, link, buffered):
    ids = {click(client, link, f"s{i}") for i in range(120)}
    assert flush_click_buffer() == 120  # three batches of 50 in one task run
    assert set(Click.objects.values_list("click_id", flat=True)) == ids


def test_it_accepts_a_conversion_for_a_click_still_in_the_buffer(client, link, buffered, api_key):
    click_id = click(client, link, "fast-converter")
    response = client.post(
        "/api/v1/conversions",
        {"click_id": click_id},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    assert response.status_code == 201, response.content
    assert Conversion.objects.get().click.spid == "fast-converter"
    # The later flush must not duplicate the click the intake materialised.
    assert clickbuffer.clicks_flush() == 1
    assert Click.objects.count() == 1


def convert(client, api_key: str, click_id: str):
    return client.post(
        "/api/v1/conversions",
        {"click_id": click_id},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )


def test_an_unknown_click_id_costs_one_redis_read_not_a_flush(client, link, buffered, api_key):
    """A made-up click id must not make the advertiser's request flush the buffer."""
    waiting = {click(client, link, f"w{i}") for i in range(5)}
    response = convert(client, api_key, "01notaclickid0000000000000")
    assert response.status_code == 404
    assert clickbuffer.buffer_status().entries == len(waiting)
    assert not Click.objects.exists()


def test_it_asks_to_retry_when_the_buffer_is_behind_the_clicks_copy(
    client, link, buffered, api_key, settings
):
    """The click's copy by id expired because the flusher is behind: "not found" would be
    wrong, so the advertiser is told to retry; after the flush the same request succeeds."""
    click_id = click(client, link, "late")
    buffered.delete(f"roundtrip:click:{click_id}")
    settings.CLICKS_BUFFER_KEY_TTL = 0  # any waiting entry has outlived its copy
    response = convert(client, api_key, click_id)
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "60"
    assert response.json()["error"]["code"] == "click_pipeline_delayed"
    assert not Click.objects.exists()
    clickbuffer.clicks_flush()
    assert convert(client, api_key, click_id).status_code == 201


def test_it_recovers_entries_a_dead_flusher_held(client, link, buffered, settings):
    click(client, link, "orphan")
    clickbuffer._ensure_group(buffered)
    # A flusher reads the entry and dies before inserting or acknowledging it.
    buffered.xreadgroup(clickbuffer.GROUP, "dead-flusher", {clickbuffer.STREAM: ">"}, count=10)
    assert clickbuffer.clicks_flush(consumer="live") == 0  # still held, not yet idle enough
    settings.CLICKS_BUFFER_CLAIM_IDLE_MS = 0
    assert clickbuffer.clicks_flush(consumer="live") == 1
    assert Click.objects.get().spid == "orphan"


def test_it_does_not_duplicate_a_click_flushed_twice(client, link, buffered):
    click_id = click(client, link, "twice")
    raw = buffered.get(f"roundtrip:click:{click_id}")
    clickbuffer.clicks_flush()
    # The same entry delivered again (a flusher died after commit, before acknowledging).
    buffered.xadd(clickbuffer.STREAM, {"c": raw})
    assert clickbuffer.clicks_flush() == 1
    assert Click.objects.filter(click_id=click_id).count() == 1


def test_it_asks_to_retry_when_the_buffer_holding_the_click_is_unreachable(
    client, link, buffered, api_key, settings
):
    """Redis went down with the click in the buffer: the conversion is answered 503 (retry),
    not 500 and not "unknown click"; once Redis is back and the flush ran, it is recorded."""
    click_id = click(client, link, "stuck")
    reachable = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = convert(client, api_key, click_id)
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "60"
    assert response.json()["error"]["code"] == "click_pipeline_delayed"
    settings.REDIS_URL = reachable
    clickbuffer.clicks_flush()
    assert convert(client, api_key, click_id).status_code == 201


def test_it_writes_directly_when_redis_is_unreachable(client, link, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    click_id = click(client, link, "fallback")
    assert Click.objects.get().click_id == click_id


def test_it_is_off_without_redis(settings):
    settings.REDIS_URL = ""
    assert not clickbuffer.buffering_enabled()
    assert django_settings.CLICKS_BUFFERED


@pytest.mark.django_db(transaction=True)  # foreign keys are checked at a real commit
def test_it_sets_aside_only_the_click_the_database_refuses(client, link, buffered, publisher):
    good = click(client, link, "good")
    orphan_link = TrackingLink.objects.create(
        publisher=publisher, campaign=link.campaign, code="gone"
    )
    orphan = click(client, orphan_link, "orphan")
    # The link disappears while its click waits in the buffer (no FK from the buffer).
    TrackingLink.objects.filter(pk=orphan_link.pk).delete()
    assert clickbuffer.clicks_flush() == 2
    assert list(Click.objects.values_list("click_id", flat=True)) == [good]
    assert ClickDeadLetter.objects.get().click_id == orphan
    assert clickbuffer.buffer_status().entries == 0
