"""Click intelligence: country (MaxMind database, offline iptocc, CDN header), user agents,
bot and unique flags (real Redis, also under concurrency)."""

import doctest
import socket
import threading

import pytest
from django.db import connection
from django.test import Client

from config.redis import get_redis
from tests.tracking.helpers import build_country_mmdb, isolate_tracking_state
from tracking import clickbuffer, intelligence, smart
from tracking.models import Click, TrackingLink

CHROME_DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(autouse=True)
def isolated(settings):
    clean_up = isolate_tracking_state(settings)
    yield
    clean_up()


@pytest.fixture
def mmdb(tmp_path, settings):
    path = build_country_mmdb(
        tmp_path / "countries.mmdb",
        {"203.0.113.0/24": "FR", "198.51.100.0/24": "DE", "2001:db8::/32": "JP"},
    )
    settings.GEOIP_DB_PATH = str(path)
    return path


# --- Country --------------------------------------------------------------------------------


def test_it_reads_the_country_from_a_maxmind_database(mmdb):
    assert intelligence.country_for_ip("203.0.113.77") == "FR"
    assert intelligence.country_for_ip("198.51.100.1") == "DE"
    assert intelligence.country_for_ip("2001:db8::1") == "JP"


def test_it_answers_blank_for_addresses_the_database_lacks_or_garbage(mmdb):
    # 8.8.8.8 is not in this small database: no silent fallback to another source.
    assert intelligence.country_for_ip("8.8.8.8") == ""
    assert intelligence.country_for_ip("not-an-ip") == ""
    assert intelligence.country_for_ip(None) == ""


def test_it_reads_a_city_database_too(tmp_path, settings):
    path = build_country_mmdb(
        tmp_path / "city.mmdb", {"203.0.113.0/24": "ES"}, database_type="GeoLite2-City"
    )
    settings.GEOIP_DB_PATH = str(path)
    assert intelligence.country_for_ip("203.0.113.5") == "ES"


def test_it_uses_the_offline_package_without_a_database(settings):
    settings.GEOIP_DB_PATH = ""
    assert intelligence.country_for_ip("8.8.8.8") == "US"
    assert intelligence.country_for_ip("1.0.16.1") == "JP"
    assert intelligence.country_for_ip("10.1.2.3") == ""
    assert intelligence.country_for_ip("127.0.0.1") == ""


def test_it_survives_a_missing_database_file(tmp_path, settings):
    settings.GEOIP_DB_PATH = str(tmp_path / "missing.mmdb")
    assert intelligence.country_for_ip("8.8.8.8") == ""


@pytest.mark.django_db
def test_it_records_the_country_of_the_visitor(client, link, mmdb):
    client.get(f"/click?ref={link.code}&spid=1", REMOTE_ADDR="203.0.113.9")
    clickbuffer.clicks_flush_all()
    assert Click.objects.get().country == "FR"


@pytest.mark.django_db
def test_it_trusts_the_cdn_country_header_only_when_configured(client, link, mmdb, settings):
    client.get(f"/click?ref={link.code}&spid=1", REMOTE_ADDR="203.0.113.9", HTTP_CF_IPCOUNTRY="NL")
    clickbuffer.clicks_flush_all()
    assert Click.objects.latest("pk").country == "FR"
    settings.GEOIP_COUNTRY_HEADER = "CF-IPCountry"
    client.get(f"/click?ref={link.code}&spid=2", REMOTE_ADDR="203.0.113.9", HTTP_CF_IPCOUNTRY="nl")
    clickbuffer.clicks_flush_all()
    assert Click.objects.latest("pk").country == "NL"
    # Cloudflare's "unknown" and "Tor" markers are not countries: the database answers.
    for marker in ("XX", "T1", "", "NLD"):
        client.get(
            f"/click?ref={link.code}&spid=3", REMOTE_ADDR="203.0.113.9", HTTP_CF_IPCOUNTRY=marker
        )
        clickbuffer.clicks_flush_all()
        assert Click.objects.latest("pk").country == "FR"


# --- User agents ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "device", "os", "browser", "is_bot"),
    [
        (CHROME_DESKTOP, "desktop", "Windows", "Chrome", False),
        (IPHONE, "mobile", "iOS", "Mobile Safari", False),
        (
            "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/16.0 Mobile/15E148 Safari/604.1",
            "tablet",
            "iOS",
            "Mobile Safari",
            False,
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-S908B) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/112.0.0.0 Mobile Safari/537.36",
            "mobile",
            "Android",
            "Chrome Mobile",
            False,
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; SM-T510) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Safari/537.36",
            "tablet",
            "Android",
            "Chrome",
            False,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:121.0) Gecko/20100101 "
            "Firefox/121.0",
            "desktop",
            "Mac OS X",
            "Firefox",
            False,
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "bot",
            "",
            "Googlebot",
            True,
        ),
        ("Mozilla/5.0 (compatible; bingbot/2.0)", "bot", "", "bingbot", True),
        ("curl/8.4.0", "bot", "", "curl", True),
        ("python-requests/2.31.0", "bot", "", "Python Requests", True),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/120.0.0.0 Safari/537.36",
            "bot",
            "Linux",
            "HeadlessChrome",
            True,
        ),
        ("", "", "", "", True),
        ("   ", "", "", "", True),
    ],
)
def test_it_parses_user_agents(user_agent, device, os, browser, is_bot):
    info = intelligence.parse_user_agent(user_agent)
    assert (info.device, info.os, info.browser, info.is_bot) == (device, os, browser, is_bot)


@pytest.mark.django_db
def test_it_records_device_os_and_browser_on_the_click(client, link):
    client.get(f"/click?ref={link.code}&spid=1", HTTP_USER_AGENT=IPHONE)
    clickbuffer.clicks_flush_all()
    click = Click.objects.get()
    assert (click.device, click.os, click.browser, click.is_bot) == (
        "mobile",
        "iOS",
        "Mobile Safari",
        False,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("user_agent", ["", "Mozilla/5.0 (compatible; AhrefsBot/7.0)"])
def test_it_flags_bots_but_still_redirects_them(client, link, user_agent):
    response = client.get(f"/click?ref={link.code}&spid=1", HTTP_USER_AGENT=user_agent)
    assert response.status_code == 302
    assert "click_id=" in response["Location"]
    clickbuffer.clicks_flush_all()
    assert Click.objects.get().is_bot is True


# --- Unique clicks --------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_marks_only_the_first_click_of_an_ip_agent_and_link_unique(
    client, link, publisher, campaign
):
    other_link = TrackingLink.objects.create(publisher=publisher, campaign=campaign, code="linkb")

    def unique(code: str, ip: str, agent: str) -> bool:
        client.get(f"/click?ref={code}&spid=x", REMOTE_ADDR=ip, HTTP_USER_AGENT=agent)
        clickbuffer.clicks_flush_all()
        return Click.objects.latest("pk").is_unique

    assert unique(link.code, "203.0.113.1", CHROME_DESKTOP) is True
    assert unique(link.code, "203.0.113.1", CHROME_DESKTOP) is False
    assert unique(link.code, "203.0.113.1", IPHONE) is True
    assert unique(link.code, "203.0.113.2", CHROME_DESKTOP) is True
    assert unique(other_link.code, "203.0.113.1", CHROME_DESKTOP) is True


@pytest.mark.django_db
def test_it_keeps_the_unique_window_in_redis_for_the_configured_time(link, settings):
    settings.CLICKS_UNIQUE_WINDOW_SECONDS = 120
    assert intelligence.click_is_unique(ip="203.0.113.1", user_agent="UA", link_id=link.pk)
    key = intelligence.unique_key("203.0.113.1", "UA", link.pk)
    assert 110 <= get_redis().ttl(key) <= 120
    assert not intelligence.click_is_unique(ip="203.0.113.1", user_agent="UA", link_id=link.pk)
    get_redis().delete(key)  # the window ran out
    assert intelligence.click_is_unique(ip="203.0.113.1", user_agent="UA", link_id=link.pk)


@pytest.mark.django_db(transaction=True)
def test_it_marks_exactly_one_of_many_concurrent_identical_clicks_unique(link):
    threads, barrier, statuses = 16, threading.Barrier(16), []

    def visit(n: int) -> None:
        try:
            barrier.wait()
            response = Client().get(
                f"/click?ref={link.code}&spid=s{n}",
                REMOTE_ADDR="203.0.113.50",
                HTTP_USER_AGENT=CHROME_DESKTOP,
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    workers = [threading.Thread(target=visit, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert statuses == [302] * threads
    clickbuffer.clicks_flush_all()
    clicks = list(Click.objects.values_list("is_unique", "is_bot"))
    assert len(clicks) == threads
    assert sorted(clicks) == [(False, False)] * (threads - 1) + [(True, False)]


def _dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there any more


@pytest.mark.django_db
def test_it_still_redirects_and_counts_unique_when_redis_is_down(client, link, settings):
    settings.REDIS_URL = _dead_redis_url()
    for spid in ("1", "2"):
        response = client.get(f"/click?ref={link.code}&spid={spid}", HTTP_USER_AGENT=IPHONE)
        assert response.status_code == 302
    # Written straight to the database: the buffer is in the Redis that is down.
    assert list(Click.objects.values_list("is_unique", flat=True)) == [True, True]


@pytest.mark.django_db
def test_it_keeps_unique_windows_in_process_without_redis(client, link, settings):
    settings.REDIS_URL = ""
    for _ in range(2):
        client.get(f"/click?ref={link.code}&spid=1", HTTP_USER_AGENT=IPHONE)
    assert list(Click.objects.order_by("pk").values_list("is_unique", flat=True)) == [
        True,
        False,
    ]


def test_it_keeps_the_docstring_examples_true(settings):
    settings.GEOIP_DB_PATH = ""
    for module in (intelligence, smart):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
