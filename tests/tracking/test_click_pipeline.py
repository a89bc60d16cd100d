"""One bad click never costs another: the edge cleans or refuses what the database can't hold,
the flusher sets aside whatever the database refuses anyway, and a stall shows.

All on the production path: the click buffer on, real Redis and PostgreSQL.
"""

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.redis import get_redis
from tracking import clickbuffer
from tracking.clickinput import PLACEMENT_MAX_LENGTH
from tracking.models import Click, ClickDeadLetter, Conversion, TrackingLink

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36"


def click(client, query: str, **headers: str) -> str:
    """GET /click; the click id the visitor was sent on with ("" when the click was refused)."""
    response = client.get(f"/click?{query}", **{"HTTP_USER_AGENT": BROWSER, **headers})
    assert response.status_code == 302, response.content
    return parse_qs(urlsplit(response["Location"]).query, keep_blank_values=True)["click_id"][0]


# --- The edge -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "stored"),
    [
        ("placement=top%00banner", {}, {"placement": "topbanner"}),
        # NEL (U+0085) is white space as well as a control: spacing, one space.
        ("placement=a%01b%7Fc%C2%85d", {}, {"placement": "abc d"}),
        ("placement=" + "p" * 150, {}, {"placement": "p" * PLACEMENT_MAX_LENGTH}),
        ("placement=caf%E9", {}, {"placement": "caf\ufffd"}),
        ("creative=%00", {}, {"creative": None}),
        ("creative=" + "c" * 40, {}, {"creative": None}),
        ("", {"HTTP_USER_AGENT": f"{BROWSER}\x00\x01"}, {"user_agent": BROWSER}),
        # WSGI hands headers over as latin-1: "\xff" is the byte 0xFF, not UTF-8.
        (
            "",
            {"HTTP_REFERER": "https://pub.example/\xff"},
            {"referer": "https://pub.example/\ufffd"},
        ),
        ("", {"HTTP_REFERER": "https://r.example/" + "r" * 2000}, {"referer": None}),
    ],
)
def test_it_stores_a_hostile_field_cleaned_and_flagged(
    client, link, buffered, query, headers, stored
):
    click_id = click(client, f"ref={link.code}&spid=exact&{query}", **headers)
    assert clickbuffer.clicks_flush() == 1
    row = Click.objects.get(click_id=click_id)
    assert row.spid == "exact"
    for name, value in stored.items():
        if name == "creative":
            assert row.creative_id is None
        elif value is not None:
            assert getattr(row, name) == value
    assert row.cleaned_fields == ",".join(stored)
    assert not ClickDeadLetter.objects.exists()


def test_it_stores_a_clean_click_unflagged_and_normalises_spacing(client, link, buffered):
    click_id = click(client, f"ref={link.code}&spid=s&placement=%20top%09%0Abanner%20")
    clickbuffer.clicks_flush()
    row = Click.objects.get(click_id=click_id)
    assert (row.placement, row.cleaned_fields) == ("top banner", "")


@pytest.mark.parametrize("ref", ["%00", "a%00b", "%FF", "x" * 40, "%0A"])
def test_a_ref_that_cannot_be_a_code_is_an_unknown_link(client, link, buffered, ref):
    response = client.get(f"/click?ref={ref}&spid=s")
    assert response.status_code == 404
    assert clickbuffer.buffer_status().entries == 0


def test_a_repeated_parameter_counts_once_the_last_wins(client, link, buffered):
    click_id = click(client, f"ref={link.code}&spid=first&spid=last&placement=a&placement=%00")
    clickbuffer.clicks_flush()
    row = Click.objects.get(click_id=click_id)
    # Nothing was left of the placement: the link's default stands in, as for none at all.
    assert (row.spid, row.placement, row.cleaned_fields) == ("last", "sidebar", "placement")


def test_the_publisher_sees_refused_and_cleaned_clicks(client, owner_client, link, buffered):
    click(client, f"ref={link.code}&spid=%FF")
    click(client, f"ref={link.code}&spid=a%00")
    click_id = click(client, f"ref={link.code}&spid=visible&placement=x%00y")
    clickbuffer.clicks_flush()
    page = owner_client.get("/dashboard/links/").content.decode()
    assert "Refused: Spid that is not valid UTF-8" in page
    assert "Refused: Spid with control characters" in page
    trace = owner_client.get("/dashboard/trace/?q=visible").content.decode()
    assert click_id in trace and "cleaned: placement" in trace


# --- The flusher ----------------------------------------------------------------------------


def _entry_like(click_id: str) -> dict:
    raw = get_redis().get(f"roundtrip:click:{click_id}")
    return json.loads(raw)


@pytest.mark.django_db(transaction=True)  # foreign keys are checked at a real commit
def test_it_sets_aside_each_entry_the_database_refuses_and_stores_the_rest(
    client, link, publisher, buffered, settings
):
    """Entries the edge would never write, among good ones: each is refused by PostgreSQL
    with another error class; the rest of every batch is stored at once, each bad entry is a
    dead letter with its error, and nothing is read again."""
    good = [click(client, f"ref={link.code}&spid=g{i}") for i in range(150)]
    template = _entry_like(good[0])
    doomed = TrackingLink.objects.create(publisher=publisher, campaign=link.campaign, code="doomed")
    poison = {
        "nul": {**template, "click_id": "poison-nul", "placement": "a\x00b"},
        "too_long": {**template, "click_id": "poison-long", "placement": "p" * 101},
        "deleted_link": {**template, "click_id": "poison-fk", "link_id": doomed.pk},
        "out_of_range": {**template, "click_id": "poison-range", "campaign_id": 10**20},
        # Refused before any SQL is sent, by the model field's own check (ValueError).
        "bad_ip": {**template, "click_id": "poison-ip", "ip": "not-an-ip"},
    }
    doomed.delete()
    stream = buffered
    for i, entry in enumerate(poison.values()):
        # Spread through the batches (50 each), between good clicks.
        stream.xadd(clickbuffer.STREAM, {"c": json.dumps(entry)})
        good += [click(client, f"ref={link.code}&spid=h{i}-{n}") for n in range(40)]
    stream.xadd(clickbuffer.STREAM, {"c": b"{not json"})
    stream.xadd(clickbuffer.STREAM, {"other": b"field"})

    started = time.monotonic()
    assert clickbuffer.clicks_flush_all() == len(good) + len(poison) + 2
    elapsed = time.monotonic() - started

    assert set(Click.objects.values_list("click_id", flat=True)) == set(good)
    letters = {
        letter.click_id or letter.entry_id: letter for letter in ClickDeadLetter.objects.all()
    }
    assert len(letters) == len(poison) + 2
    classes = {letters[entry["click_id"]].error_class for entry in poison.values()}
    assert len(classes) == len(poison), classes  # a different cause each, named
    assert "ForeignKeyViolation" in letters["poison-fk"].error_class
    assert "StringDataRightTruncation" in letters["poison-long"].error_class
    assert "NumericValueOutOfRange" in letters["poison-range"].error_class
    assert letters["poison-ip"].error_class == "builtins.ValueError"
    assert "NUL" in letters["poison-nul"].error
    assert letters["poison-fk"].publisher_id == publisher.pk
    assert "\\u0000" in letters["poison-nul"].payload  # kept as the buffer held it
    assert clickbuffer.buffer_status().entries == 0
    assert clickbuffer.clicks_flush() == 0  # nothing is read again
    assert elapsed < 30  # bisection, not one insert per click per retry


@pytest.mark.django_db(transaction=True)
def test_an_entry_whose_letter_is_odd_too_is_still_set_aside(client, link, buffered):
    """The dead letter is the last stop: it stores whatever the entry held."""
    good = click(client, f"ref={link.code}&spid=fine")
    template = _entry_like(good)
    odd = {**template, "click_id": 12345, "publisher_id": "not-a-number"}
    buffered.xadd(clickbuffer.STREAM, {"c": json.dumps(odd)})
    assert clickbuffer.clicks_flush() == 2
    letter = ClickDeadLetter.objects.get()
    assert (letter.click_id, letter.publisher_id) == ("12345", None)
    assert Click.objects.get().click_id == good
    assert clickbuffer.buffer_status().entries == 0


@pytest.mark.django_db(transaction=True)
def test_a_conversion_is_recorded_while_a_poison_entry_waits(client, link, buffered, api_key):
    click_id = click(client, f"ref={link.code}&spid=buyer")
    template = _entry_like(click_id)
    buffered.xadd(
        clickbuffer.STREAM, {"c": json.dumps({**template, "click_id": "p0", "spid": "\x00"})}
    )
    response = client.post(
        "/api/v1/conversions",
        {"click_id": click_id},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    assert response.status_code == 201, response.content
    assert Conversion.objects.get().click.spid == "buyer"
    clickbuffer.clicks_flush()
    assert ClickDeadLetter.objects.get().click_id == "p0"
    assert Click.objects.filter(click_id=click_id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_conversions_refused_click_copy_is_set_aside_not_a_500(client, link, buffered, api_key):
    click_id = click(client, f"ref={link.code}&spid=s")
    entry = {**_entry_like(click_id), "placement": "x" * 500}
    buffered.set(f"roundtrip:click:{click_id}", json.dumps(entry))
    response = client.post(
        "/api/v1/conversions",
        {"click_id": click_id},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    assert response.status_code == 404
    assert "StringDataRightTruncation" in ClickDeadLetter.objects.get().error_class


@pytest.mark.django_db(transaction=True)
def test_staff_can_retry_a_dead_letter_once_its_cause_is_fixed(
    client, admin_client, link, publisher, buffered
):
    template = _entry_like(click(client, f"ref={link.code}&spid=s"))
    lost = TrackingLink.objects.create(publisher=publisher, campaign=link.campaign, code="lost")
    buffered.xadd(
        clickbuffer.STREAM,
        {"c": json.dumps({**template, "click_id": "late-link", "link_id": lost.pk})},
    )
    lost_pk = lost.pk
    lost.delete()
    clickbuffer.clicks_flush()
    letter = ClickDeadLetter.objects.get()
    # Staff restore the link; the click can be stored now.
    TrackingLink.objects.create(
        pk=lost_pk, publisher=publisher, campaign=link.campaign, code="lost"
    )
    response = admin_client.post(
        "/admin/tracking/clickdeadletter/",
        {"action": "retry", "_selected_action": [letter.pk]},
    )
    assert response.status_code == 302
    assert Click.objects.filter(click_id="late-link").exists()
    assert not ClickDeadLetter.objects.exists()


# --- A stall shows --------------------------------------------------------------------------


METRICS_TOKEN = "scrape-secret"


def scrape(client) -> dict[str, float]:
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content.decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_stalled_buffer_shows_in_metrics_readyz_and_the_status_page(
    client, admin_client, link, buffered, settings
):
    settings.CLICKS_BUFFER_STALL_SECONDS = 120
    settings.METRICS_BEARER_TOKEN = METRICS_TOKEN  # production refuses /metrics without one
    # A click buffered five minutes ago that no flusher has taken.
    old = int(time.time() * 1000) - 300_000
    buffered.xadd(clickbuffer.STREAM, {"c": b"{}"}, id=f"{old}-0")
    ClickDeadLetter.objects.create(payload="{}", error_class="x.Y", error="refused")

    metrics = scrape(client)
    assert metrics["roundtrip_click_buffer_entries"] == 1
    assert metrics["roundtrip_click_buffer_oldest_seconds"] >= 300
    assert metrics["roundtrip_click_dead_letters"] == 1

    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert "oldest buffered click is 30" in body["checks"]["click_buffer"]
    assert body["click_pipeline"]["dead_letters"] == 1

    page = admin_client.get("/admin/status/")
    assert page.status_code == 200
    assert b"STALLED" in page.content and b"refused" in page.content

    clickbuffer.clicks_flush()  # the entry is set aside: the buffer is empty again
    assert client.get("/readyz").status_code == 200
    assert scrape(client)["roundtrip_click_dead_letters"] == 2


def test_the_status_page_is_for_staff_only(client, owner_client):
    assert client.get("/admin/status/").status_code == 302
    assert owner_client.get("/admin/status/").status_code == 302
