"""Smart ads: creative selection, the iframe unit and its headers, signed click links,
impression counters (real Redis and the direct fallback), and the report."""

import random
import re
from collections import Counter
from html import unescape
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.utils import timezone

from config.redis import get_redis
from postbacks.models import Postback
from publishers.models import CallbackTemplate
from tests.tracking.helpers import isolate_tracking_state
from tracking import clickbuffer, smart
from tracking.cache import process_caches_clear
from tracking.models import (
    Campaign,
    Click,
    ClickRejection,
    Creative,
    ImpressionFlush,
    SmartAd,
    SmartAdImpression,
    TrackingLink,
)
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated(settings):
    clean_up = isolate_tracking_state(settings)
    settings.GEOIP_COUNTRY_HEADER = "CF-IPCountry"  # tests choose the visitor's country
    yield
    clean_up()


@pytest.fixture
def travel(advertiser) -> Campaign:
    return Campaign.objects.create(
        advertiser=advertiser,
        name="Travel",
        landing_url="https://travel.example/go?cid=[click_id]&kw=[keyword]&cr=[creative_id]",
    )


@pytest.fixture
def flights(travel) -> Creative:
    return Creative.objects.create(
        campaign=travel,
        name="Flights",
        headline="Cheap flights",
        body="Fly for less.",
        keywords="Cheap Flights, flights, paris",
    )


@pytest.fixture
def hotels(travel) -> Creative:
    return Creative.objects.create(
        campaign=travel, name="Hotels", headline="Hotels", body="Sleep well.", keywords="hotels"
    )


@pytest.fixture
def house(campaign) -> Creative:
    return Creative.objects.create(campaign=campaign, name="House", headline="Our network")


@pytest.fixture
def smart_ad(travel, flights, hotels, house) -> SmartAd:
    unit = SmartAd.objects.create(name="Sidebar", width=200, height=200, fallback_creative=house)
    unit.campaigns.add(travel)
    return unit


def serve(client, link, smart_ad, q="", spid="123456789", country="FR", headers=None, **extra):
    query = urlencode({"ref": link.code, "smart_ad_id": smart_ad.pk, "q": q, "spid": spid, **extra})
    headers = {"HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131", **(headers or {})}
    return client.get(f"/smart?{query}", HTTP_CF_IPCOUNTRY=country, **headers)


def ad_links(response) -> list[str]:
    return [unescape(href) for href in re.findall(r'href="([^"]+)"', response.content.decode())]


# --- Selection (pure) -----------------------------------------------------------------------


def _pool(*creatives: Creative, slots: int = 1, fallback: Creative | None = None) -> smart.Pool:
    return smart.Pool(
        smart_ad=SmartAd(pk=1, name="t", slots=slots),
        candidates=tuple(smart._candidate(c) for c in creatives),
        fallback=smart._candidate(fallback) if fallback else None,
    )


def test_it_prefers_creatives_matching_more_of_the_keyword(flights, hotels):
    pool = _pool(flights, hotels, slots=2)
    rng = random.Random(1)
    for _ in range(20):
        chosen = smart.choose_creatives(pool, keyword="cheap flights hotels", country="", rng=rng)
        # "cheap flights" and "flights" both match the flights creative: it always leads.
        assert [c.creative for c in chosen] == [flights, hotels]


def test_it_matches_whole_words_ignoring_case_and_punctuation(flights, hotels):
    pool = _pool(flights, hotels)
    pick = lambda q: [  # noqa: E731
        c.creative for c in smart.choose_creatives(pool, keyword=q, country="", rng=random.Random())
    ]
    assert pick("PARIS!") == [flights]
    assert pick("cheap-hotels") == [hotels]
    # "hotelsx" is not the word "hotels"; nothing matches and no fallback: drawn by weight.
    assert len(pick("hotelsx")) == 1


def test_it_draws_equally_good_matches_by_weight(travel):
    heavy = Creative.objects.create(campaign=travel, name="H", keywords="shoes", weight=300)
    light = Creative.objects.create(campaign=travel, name="L", keywords="shoes", weight=100)
    pool, rng = _pool(heavy, light), random.Random(42)
    counts = Counter(
        smart.choose_creatives(pool, keyword="shoes", country="", rng=rng)[0].creative.name
        for _ in range(4000)
    )
    assert 2.5 < counts["H"] / counts["L"] < 3.5


def test_it_shows_the_fallback_when_nothing_matches(flights, hotels, house):
    pool = _pool(flights, hotels, slots=2, fallback=house)
    chosen = smart.choose_creatives(pool, keyword="tractors", country="", rng=random.Random())
    assert [c.creative for c in chosen] == [house]
    # Without a keyword the unit rotates its own creatives by weight.
    chosen = smart.choose_creatives(pool, keyword="", country="", rng=random.Random())
    assert {c.creative for c in chosen} == {flights, hotels}


def test_it_only_shows_campaigns_allowed_in_the_visitors_country(advertiser, flights):
    us_only = Campaign.objects.create(
        advertiser=advertiser, name="US", landing_url="https://us.example/", allowed_countries="us"
    )
    assert us_only.allowed_countries == "US"
    yankee = Creative.objects.create(campaign=us_only, name="Y", keywords="flights", weight=30000)
    pool = _pool(flights, yankee, slots=2)
    pick = lambda country: {  # noqa: E731
        c.creative
        for c in smart.choose_creatives(
            pool, keyword="flights", country=country, rng=random.Random()
        )
    }
    assert pick("US") == {flights, yankee}
    assert pick("FR") == {flights}
    assert pick("") == {flights}  # unknown country: only unrestricted campaigns


# --- The unit -------------------------------------------------------------------------------


def test_it_serves_a_small_framable_unit_with_signed_links(client, link, smart_ad, flights):
    response = serve(client, link, smart_ad, q="cheap flights")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "X-Frame-Options" not in response
    csp = response["Content-Security-Policy"]
    assert "frame-ancestors *" in csp
    assert "default-src 'none'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'<style nonce="{nonce}">' in response.content.decode()
    assert response["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert "no-store" in response["Cache-Control"]
    assert not response.cookies
    html = response.content.decode()
    assert len(response.content) < 2048
    # No external requests: no scripts, images, fonts or absolute URLs at all.
    assert not re.search(r"<script|<img|<link|src=|@import|url\(|https?://", html)
    assert "Cheap flights" in html and "Fly for less." in html
    [href] = ad_links(response)
    url = urlsplit(href)
    assert url.path == "/click"
    params = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert params == {
        "ref": link.code,
        "spid": "123456789",
        "creative": flights.public_id,
        "smart_ad_id": str(smart_ad.pk),
        "keyword": "cheap flights",
        "sig": params["sig"],
    }


def test_it_escapes_every_value(client, link, smart_ad, flights):
    flights.headline = '<script>alert("x")</script>'
    flights.body = "\"'><img src=x onerror=alert(1)>"
    flights.save()
    response = serve(client, link, smart_ad, q='flights"><script>', spid='"><b>x</b>')
    html = response.content.decode()
    assert "<script>" not in html and "<img" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_it_shows_headlines_only_with_that_template(client, link, smart_ad):
    smart_ad.template = SmartAd.Template.HEADLINES
    smart_ad.save()
    html = serve(client, link, smart_ad, q="flights").content.decode()
    assert "Cheap flights" in html and "Fly for less." not in html


@pytest.mark.parametrize(
    "params",
    [
        {"ref": "nope", "smart_ad_id": "SMART"},
        {"ref": "LINK", "smart_ad_id": "999999"},
        {"ref": "LINK", "smart_ad_id": "1e3"},
        {"ref": "LINK"},
    ],
)
def test_it_answers_a_blank_404_for_an_unknown_ref_or_smart_ad(client, link, smart_ad, params):
    params = {
        k: {"LINK": link.code, "SMART": str(smart_ad.pk)}.get(v, v) for k, v in params.items()
    }
    response = client.get(f"/smart?{urlencode(params)}")
    assert response.status_code == 404
    assert b"<body></body>" in response.content and len(response.content) < 200
    assert "X-Frame-Options" not in response
    assert "frame-ancestors *" in response["Content-Security-Policy"]


def test_it_answers_blank_for_an_inactive_unit_or_a_bad_spid(client, link, smart_ad):
    assert serve(client, link, smart_ad, spid="x" * 256).status_code == 400
    smart_ad.is_active = False
    smart_ad.save()
    process_caches_clear()
    assert serve(client, link, smart_ad).status_code == 404


def test_hostile_values_are_cleaned_before_they_are_signed_into_the_links(client, link, smart_ad):
    """NUL and bytes that are not UTF-8 in `q` and `placement`: the unit is served, its links
    carry the cleaned values, and the click on one is stored with them."""
    response = client.get(
        f"/smart?ref={link.code}&smart_ad_id={smart_ad.pk}&spid=s&q=cheap%00flights%FF"
        "&placement=side%00bar",
        HTTP_CF_IPCOUNTRY="FR",
    )
    assert response.status_code == 200
    href = ad_links(response)[0]
    query = parse_qs(urlsplit(href).query)
    assert query["keyword"] == ["cheapflights\ufffd"] and query["placement"] == ["sidebar"]
    assert client.get(href, HTTP_USER_AGENT="Mozilla/5.0 Chrome/131").status_code == 302
    clickbuffer.clicks_flush_all()
    stored = Click.objects.get()
    assert (stored.keyword, stored.placement) == ("cheapflights\ufffd", "sidebar")


@pytest.mark.parametrize("spid", ["%00", "%FF", "a%0Ab"])
def test_a_spid_it_cannot_keep_exactly_is_refused_and_counted(client, link, smart_ad, spid):
    response = client.get(f"/smart?ref={link.code}&smart_ad_id={smart_ad.pk}&spid={spid}")
    assert response.status_code == 400
    assert ClickRejection.objects.get().publisher_id == link.publisher_id


def test_it_answers_a_blank_200_when_no_creative_may_be_shown(client, link, smart_ad, travel):
    travel.allowed_countries = "US"
    travel.save()
    smart_ad.fallback_creative = None
    smart_ad.save()
    response = serve(client, link, smart_ad, q="flights", country="FR")
    assert response.status_code == 200
    assert b"<body></body>" in response.content


def test_it_caches_the_smart_ad_between_views(client, link, smart_ad, django_assert_num_queries):
    serve(client, link, smart_ad, q="flights")
    # The link and the pool both come from the per-process caches.
    with django_assert_num_queries(0):
        assert serve(client, link, smart_ad, q="flights").status_code == 200


# --- Signed clicks --------------------------------------------------------------------------


def test_it_records_a_smart_click_on_the_creatives_campaign(
    client, link, smart_ad, flights, travel, django_assert_num_queries
):
    [href] = ad_links(serve(client, link, smart_ad, q="Cheap  Flights", placement=" top "))
    # The link and the creative are cached, the click goes to the buffer: no query at all.
    with django_assert_num_queries(0):
        response = client.get(href, HTTP_CF_IPCOUNTRY="DE")
    assert response.status_code == 302
    clickbuffer.clicks_flush_all()
    click = Click.objects.get()
    assert (click.publisher_id, click.link_id) == (link.publisher_id, link.pk)
    assert (click.campaign_id, click.creative_id) == (travel.pk, flights.pk)
    assert (click.smart_ad_id, click.keyword, click.spid) == (
        str(smart_ad.pk),
        "Cheap Flights",
        "123456789",
    )
    assert (click.placement, click.country) == ("top", "DE")
    landing = urlsplit(response["Location"])
    assert landing.netloc == "travel.example"
    assert parse_qs(landing.query) == {
        "cid": [click.click_id],
        "kw": ["Cheap Flights"],
        "cr": [flights.public_id],
    }


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p, ctx: p | {"creative": ctx["hotels"].public_id},
        lambda p, ctx: p | {"creative": ctx["house"].public_id},
        lambda p, ctx: p | {"keyword": "other"},
        lambda p, ctx: p | {"smart_ad_id": "1"},
        lambda p, ctx: p | {"spid": "999"},
        lambda p, ctx: p | {"ref": ctx["other_link"].code},
        lambda p, ctx: p | {"sig": p["sig"][:-1] + ("A" if p["sig"][-1] != "A" else "B")},
        lambda p, ctx: {k: v for k, v in p.items() if k != "sig"},
        lambda p, ctx: {k: v for k, v in p.items() if k != "keyword"},
    ],
)
def test_it_refuses_a_tampered_smart_link(
    client, link, smart_ad, hotels, house, other_publisher, campaign, tamper
):
    other_link = TrackingLink.objects.create(
        publisher=other_publisher, campaign=campaign, code="other"
    )
    [href] = ad_links(serve(client, link, smart_ad, q="flights"))
    params = {k: v[0] for k, v in parse_qs(urlsplit(href).query).items()}
    altered = tamper(params, {"hotels": hotels, "house": house, "other_link": other_link})
    response = client.get(f"/click?{urlencode(altered)}")
    assert response.status_code == 400
    assert b"altered" in response.content
    clickbuffer.clicks_flush_all()
    assert not Click.objects.exists()
    assert ClickRejection.objects.get().reason == "bad_signature"


def test_it_answers_404_when_the_ads_campaign_stopped(client, link, smart_ad, travel):
    [href] = ad_links(serve(client, link, smart_ad, q="flights"))
    travel.status = Campaign.Status.PAUSED
    travel.save()
    process_caches_clear()
    assert client.get(href).status_code == 404
    clickbuffer.clicks_flush_all()
    assert not Click.objects.exists()


def test_it_sends_smart_values_in_callbacks(
    client, link, smart_ad, flights, advertiser, publisher, receiver
):
    CallbackTemplate.objects.create(
        publisher=publisher,
        url_template=f"{receiver.base_url}/cb?s=[spid]&c=[creative_id]&a=[smart_ad_id]"
        "&k=[keyword]&g=[country]&d=[device]",
    )
    [href] = ad_links(serve(client, link, smart_ad, q="paris"))
    client.get(
        href, HTTP_CF_IPCOUNTRY="IT", HTTP_USER_AGENT="Mozilla/5.0 (iPhone; like Mac OS X) Mobile"
    )
    clickbuffer.clicks_flush_all()
    click = Click.objects.get()
    outcome = conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="o-1")
    [postback] = Postback.objects.filter(conversion=outcome.conversion)
    assert parse_qs(urlsplit(postback.url).query) == {
        "s": ["123456789"],
        "c": [flights.public_id],
        "a": [str(smart_ad.pk)],
        "k": ["paris"],
        "g": ["IT"],
        "d": ["mobile"],
    }


# --- Impressions ----------------------------------------------------------------------------


def test_it_counts_impressions_in_redis_and_flushes_them_in_batches(
    client, link, smart_ad, flights, hotels
):
    smart_ad.slots = 2
    smart_ad.save()
    process_caches_clear()
    for _ in range(3):
        serve(client, link, smart_ad, q="flights hotels", country="FR")
    serve(client, link, smart_ad, q="flights", country="DE")
    assert not SmartAdImpression.objects.exists()  # nothing written per impression
    assert smart.impressions_flush() == 7
    today = timezone.localdate()
    rows = set(
        SmartAdImpression.objects.values_list(
            "day", "publisher_id", "smart_ad_id", "creative_id", "country", "impressions"
        )
    )
    pub, unit = link.publisher_id, smart_ad.pk
    assert rows == {
        (today, pub, unit, flights.pk, "FR", 3),
        (today, pub, unit, hotels.pk, "FR", 3),
        (today, pub, unit, flights.pk, "DE", 1),
    }
    assert smart.impressions_flush() == 0
    serve(client, link, smart_ad, q="flights", country="DE")
    assert smart.impressions_flush() == 1
    assert SmartAdImpression.objects.get(creative=flights, country="DE").impressions == 2
    assert ImpressionFlush.objects.count() == 2


def test_it_applies_a_batch_once_when_the_delete_after_commit_was_lost(
    client, link, smart_ad, settings
):
    serve(client, link, smart_ad, q="flights")
    live, pending = smart._impression_keys()
    client_redis = get_redis()
    # A flusher that committed and then died before deleting the pending batch:
    batch = client_redis.eval(smart._ROTATE_SCRIPT, 2, live, pending, "batch-1").decode()
    smart._apply_batch(batch, smart._parse_counters(client_redis.hgetall(pending)))
    serve(client, link, smart_ad, q="flights")  # meanwhile, a new impression goes live
    assert smart.impressions_flush() == 0  # the pending batch is recognised and dropped
    assert SmartAdImpression.objects.get().impressions == 1
    assert smart.impressions_flush() == 1  # then the live one
    assert SmartAdImpression.objects.get().impressions == 2


def test_it_writes_impressions_directly_without_redis(client, link, smart_ad, settings):
    settings.REDIS_URL = ""
    serve(client, link, smart_ad, q="flights")
    serve(client, link, smart_ad, q="flights")
    assert SmartAdImpression.objects.get().impressions == 2
    assert smart.impressions_flush() == 0


@pytest.mark.parametrize(
    "user_agent", ["", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"]
)
def test_it_does_not_count_a_bots_view_as_an_impression(
    client, link, smart_ad, flights, settings, user_agent
):
    settings.REDIS_URL = ""
    response = serve(client, link, smart_ad, q="flights", headers={"HTTP_USER_AGENT": user_agent})
    assert response.status_code == 200 and ad_links(response)  # the bot still sees the ads
    assert not SmartAdImpression.objects.exists()
    serve(client, link, smart_ad, q="flights")
    assert SmartAdImpression.objects.get().impressions == 1
