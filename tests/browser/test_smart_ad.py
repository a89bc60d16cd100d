"""End to end in a real browser: a publisher's page on one local origin frames `/smart` from
the app on another; the visitor clicks the ad, the advertiser reports the conversion through
the API, and the publisher's callback carries the smart ad's values.

Headless Chromium is Debian's (`/usr/bin/chromium`), driven by Playwright for Python.
"""

import math
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import sync_playwright

from postbacks import dispatch
from postbacks.dispatch import Lane
from publishers.models import CallbackTemplate
from tests.receiver import Receiver
from tests.tracking.helpers import build_country_mmdb, isolate_tracking_state
from tracking import clickbuffer
from tracking.models import Campaign, Click, Creative, SmartAd

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Headless Chromium announces itself as "HeadlessChrome", which we (rightly) flag as a bot and
# whose conversions we hold for review; the visitor here plays a person's desktop browser.
DESKTOP_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
SPID = "123456789"
KEYWORD = "Paris Flights"


def _publisher_site(iframe_src: str) -> Receiver:
    """The publisher's page (the brief's embed code) and, on the same server, the
    advertiser's landing page the ad leads to."""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Publisher</title></head>"
        "<body><h1>A publisher's article</h1>"
        f'<iframe src="{iframe_src}" width="200" height="200" frameborder="0" '
        'scrolling="no" allowtransparency="true"></iframe></body></html>'
    ).encode()

    def respond(handler) -> None:
        body = page if handler.path.startswith("/article") else b"<h1>Landing</h1>"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return Receiver(responder=respond)


@pytest.mark.django_db(transaction=True)
def test_it_carries_smart_ad_values_from_an_iframe_click_to_the_callback(
    live_server, settings, tmp_path, publisher, link, advertiser, api_key, receiver
):
    clean_up = isolate_tracking_state(settings)
    # The browser connects from 127.0.0.1 / ::1; this database places it in Germany.
    settings.GEOIP_DB_PATH = str(
        build_country_mmdb(tmp_path / "geo.mmdb", {"127.0.0.0/8": "DE", "::1/128": "DE"})
    )
    travel = Campaign.objects.create(
        advertiser=advertiser,
        name="Travel",
        landing_url="http://127.0.0.1:1/landing?click_id=[click_id]",  # replaced below
    )
    flights = Creative.objects.create(
        campaign=travel, name="Flights", headline="Cheap flights to Paris", keywords="paris"
    )
    Creative.objects.create(campaign=travel, name="Hotels", headline="Hotels", keywords="hotels")
    unit = SmartAd.objects.create(name="Sidebar 200", width=200, height=200)
    unit.campaigns.add(travel)
    CallbackTemplate.objects.create(
        publisher=publisher,
        url_template=f"{receiver.base_url}/cb?spid=[spid]&creative=[creative_id]"
        "&smart_ad=[smart_ad_id]&keyword=[keyword]&country=[country]",
    )
    iframe_src = (
        f"{live_server.url}/smart?ref={link.code}&q=Paris%20Flights"
        f"&smart_ad_id={unit.pk}&spid={SPID}"
    )
    site = _publisher_site(iframe_src).start()
    travel.landing_url = f"{site.base_url}/landing?click_id=[click_id]"
    travel.save()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(user_agent=DESKTOP_CHROME)
            page = context.new_page()
            # localhost vs 127.0.0.1: the ad is framed by a page of another site.
            page.goto(f"http://localhost:{site.port}/article")
            ad = page.frame_locator("iframe").get_by_role("link", name="Cheap flights to Paris")
            ad.wait_for()
            with context.expect_page() as landing_info:
                ad.click()
            landing = landing_info.value
            landing.wait_for_load_state()
            landing_url = landing.url
            browser.close()
    finally:
        site.stop()

    click_id = parse_qs(urlsplit(landing_url).query)["click_id"][0]
    clickbuffer.clicks_flush_all()  # as beat's flusher would
    click = Click.objects.get(click_id=click_id)
    assert (click.is_bot, click.device, click.browser) == (False, "desktop", "Chrome")

    response = requests.post(
        f"{live_server.url}/api/v1/conversions",
        json={"click_id": click_id, "txn_id": "order-1", "payout": "2.00"},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "approved"
    # Deliver as the worker would (no worker runs in this test).
    dispatch.drain(Lane.RETRY, wait=math.inf, kicks=False)
    clean_up()

    [callback] = [r for r in receiver.requests if r.path.startswith("/cb")]
    assert parse_qs(urlsplit(callback.path).query) == {
        "spid": [SPID],
        "creative": [flights.public_id],
        "smart_ad": [str(unit.pk)],
        "keyword": [KEYWORD],
        "country": ["DE"],
    }
