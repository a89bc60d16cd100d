"""A database outage in-process (tests/outage.py: every new connection is refused, as while
PostgreSQL is stopped, through the real driver). The click path keeps going from the
per-process caches; everything that needs the database answers 503 with Retry-After.

The end-to-end version, on real processes with the database cut under load, is
tests/e2e/test_database_outage.py.
"""

import html
import re
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.outage import database_down
from tests.tracking.helpers import isolate_tracking_state
from tracking import clickbuffer
from tracking.models import Click, ClickRejection, TrackingLink

pytestmark = pytest.mark.django_db(transaction=True)

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


@pytest.fixture(autouse=True)
def links_read_every_time(settings):
    """The production click path (buffered, caches on), except that a link is fresh for no
    time at all: every click reads it again, so these tests decide when the last live copy is
    all there is (in production, after its few seconds of freshness)."""
    settings.CLICKS_LINK_CACHE_SECONDS = 0
    settings.CLICKS_OUTAGE_STALE_SECONDS = 900
    clean_up = isolate_tracking_state(settings)
    yield
    clean_up()


def click(client, code: str, spid: str = "s-1", **extra: str):
    query = urlencode({"ref": code, "spid": spid, **extra})
    return client.get(f"/click?{query}", HTTP_USER_AGENT=BROWSER)


def click_id_of(response) -> str:
    assert response.status_code == 302, (response.status_code, response.content[:300])
    return parse_qs(urlsplit(response["Location"]).query)["click_id"][0]


def assert_unavailable_page(response) -> None:
    assert response.status_code == 503, response.content[:300]
    assert int(response["Retry-After"]) >= 1
    assert b"Temporarily unavailable" in response.content


# --- Clicks -----------------------------------------------------------------------------------


def test_it_redirects_a_known_live_link_during_an_outage_and_records_the_click(client, link):
    before = click_id_of(click(client, link.code, "before"))
    with database_down():
        during = [click_id_of(click(client, link.code, f"during-{n}")) for n in range(3)]
    clickbuffer.clicks_flush_all()
    stored = dict(Click.objects.values_list("click_id", "spid"))
    assert stored == {
        before: "before",
        during[0]: "during-0",
        during[1]: "during-1",
        during[2]: "during-2",
    }
    assert set(Click.objects.values_list("link_id", flat=True)) == {link.pk}


def test_it_keeps_a_link_paused_before_the_outage_paused(client, link):
    click_id_of(click(client, link.code))
    TrackingLink.objects.filter(pk=link.pk).update(is_active=False)
    assert click(client, link.code).status_code == 404  # the pause replaced the live copy
    with database_down():
        assert_unavailable_page(click(client, link.code))
    assert not Click.objects.exclude(spid="s-1").exists()


def test_it_stops_redirecting_from_memory_after_the_outage_bound(client, link, settings):
    settings.CLICKS_OUTAGE_STALE_SECONDS = 0.3
    click_id_of(click(client, link.code))
    time.sleep(0.4)
    with database_down():
        assert_unavailable_page(click(client, link.code))


def test_it_answers_503_for_an_unknown_ref_during_an_outage(client, link):
    click_id_of(click(client, link.code))
    with database_down():
        response = click(client, "never-seen")
    assert_unavailable_page(response)


def test_it_still_refuses_a_bad_spid_and_redirects_during_an_outage(client, link):
    click_id_of(click(client, link.code))
    with database_down():
        response = click(client, link.code, spid="bad\x00spid")
    assert response.status_code == 302
    landing = parse_qs(urlsplit(response["Location"]).query, keep_blank_values=True)
    assert landing["click_id"] == [""]  # refused, and the visitor sent on all the same
    assert not ClickRejection.objects.exists()  # the counter is skipped, not the answer


def test_it_ignores_an_unknown_creative_rather_than_refuse_the_click(client, link):
    click_id_of(click(client, link.code))
    with database_down():
        click_id = click_id_of(click(client, link.code, creative="cr_unknown"))
    clickbuffer.clicks_flush_all()
    assert Click.objects.get(click_id=click_id).creative_id is None


def test_it_answers_normally_again_once_the_database_is_back(client, link):
    click_id_of(click(client, link.code))
    with database_down():
        click_id_of(click(client, link.code))
    # No error after recovery. (Connections that the outage broke under running processes are
    # replaced by CONN_HEALTH_CHECKS: tests/e2e/test_database_outage.py.)
    assert click(client, "never-seen").status_code == 404
    assert client.get("/readyz").status_code == 200


def test_readyz_reports_the_database_down(client):
    with database_down():
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "refused" in response.json()["checks"]["database"].lower()


# --- Smart ads ------------------------------------------------------------------------------


def serve(client, link: TrackingLink, smart_ad_id: int):
    query = urlencode({"ref": link.code, "smart_ad_id": smart_ad_id, "spid": "s-1"})
    return client.get(f"/smart?{query}", HTTP_USER_AGENT=BROWSER)


def ad_links(response) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]+)"', response.content.decode())]


def test_it_serves_the_last_known_smart_ad_and_its_clicks_during_an_outage(
    client, link, travel_smart_ad
):
    smart_ad = travel_smart_ad
    assert len(ad_links(serve(client, link, smart_ad.pk))) == 2
    with database_down():
        response = serve(client, link, smart_ad.pk)
        assert response.status_code == 200
        href, _ = ad_links(response)
        click_id = click_id_of(client.get(href, HTTP_USER_AGENT=BROWSER))
        # A smart ad never seen answers a blank unit, framable like any other.
        unknown = serve(client, link, smart_ad.pk + 1000)
    clickbuffer.clicks_flush_all()
    assert Click.objects.get(click_id=click_id).smart_ad_id == str(smart_ad.pk)
    assert unknown.status_code == 503
    assert "X-Frame-Options" not in unknown
    assert "frame-ancestors *" in unknown["Content-Security-Policy"]
    assert b"<body></body>" in unknown.content


# --- Conversion intake ------------------------------------------------------------------------


def assert_retry_later(response) -> None:
    assert response.status_code == 503, response.content[:300]
    assert int(response["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert "temporarily unavailable" in error["message"]
    assert "unchanged" in error["message"]


def test_the_intake_answers_503_with_retry_after_during_an_outage(
    client, link, api_key, postback_token, settings
):
    settings.DATABASE_OUTAGE_RETRY_AFTER = 7
    click_id = click_id_of(click(client, link.code))
    clickbuffer.clicks_flush_all()
    body = {"click_id": click_id, "txn_id": "order-1"}
    with database_down():
        posted = client.post(
            "/api/v1/conversions",
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {api_key}",
        )
        pixel = client.get("/postback", {"token": postback_token, **body})
    assert_retry_later(posted)
    assert_retry_later(pixel)
    assert posted["Retry-After"] == "7"
    # The same request, unchanged, once the database is back.
    again = client.post(
        "/api/v1/conversions",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    assert again.status_code == 201, again.content[:300]
