"""Click intelligence: the visitor's country, device, OS and browser, and bot / unique flags.

Everything here runs on the click redirect, the hottest path, so nothing touches the database:
geo lookups are in-process (a memory-mapped MaxMind database, or the `iptocc` tables compiled
into its wheel), user agents go through ua-parser's cached native matcher, and the unique
check is one Redis `SET NX EX`. Every function answers something even when its source fails:
the flags describe a click, they never cost the visitor the redirect.
"""

import functools
import hashlib
import logging
import time
from dataclasses import dataclass

import geoip2.database
import geoip2.errors
import iptocc
import ua_parser
from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from config.redis import get_redis

logger = logging.getLogger(__name__)

# --- Country --------------------------------------------------------------------------------

# Cloudflare's CF-IPCountry uses XX for unknown and T1 for Tor exit nodes: not countries.
_NOT_COUNTRIES = frozenset({"XX", "T1", "ZZ"})


@functools.lru_cache(maxsize=4)
def _geoip_reader(path: str) -> geoip2.database.Reader:
    # Opened once per process and path; MODE_AUTO memory-maps the file (shared between workers).
    return geoip2.database.Reader(path)


def _country_from_geoip(path: str, ip: str) -> str:
    reader = _geoip_reader(path)
    # country() refuses City databases, so ask what the file holds.
    is_city = "City" in reader.metadata().database_type
    record = reader.city(ip) if is_city else reader.country(ip)
    return record.country.iso_code or ""


def country_for_ip(ip: str | None) -> str:
    """ISO 3166 alpha-2 code for an IP address, "" when unknown.

    MaxMind's database when `GEOIP_DB_PATH` is set, else the offline `iptocc` package.

    >>> country_for_ip("8.8.8.8"), country_for_ip("10.0.0.1"), country_for_ip("not an ip")
    ('US', '', '')
    """
    if not ip:
        return ""
    path = settings.GEOIP_DB_PATH
    try:
        code = _country_from_geoip(path, ip) if path else iptocc.country_code(ip)
    except (ValueError, geoip2.errors.AddressNotFoundError):
        return ""
    except OSError:
        # A missing or unreadable database must not break clicks; it is loud in the logs.
        logger.exception("GeoIP database %s unreadable", path)
        return ""
    code = (code or "").upper()
    return code if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES else ""


def cdn_country(meta: dict) -> str:
    """The country from the configured CDN header (`GEOIP_COUNTRY_HEADER`), "" if none."""
    header = settings.GEOIP_COUNTRY_HEADER
    if not header:
        return ""
    value = meta.get("HTTP_" + header.upper().replace("-", "_"), "").strip().upper()
    return value if len(value) == 2 and value.isalpha() and value not in _NOT_COUNTRIES else ""


def visitor_country(ip: str | None, cdn_value: str = "") -> str:
    """The CDN's answer when there is one (it saw the real client), else a lookup of `ip`."""
    return cdn_value or country_for_ip(ip)


# --- User agent -----------------------------------------------------------------------------

# Families ua-parser reports as browsers but that are scripts or automation, not people.
_AUTOMATION_FAMILIES = frozenset(
    {
        "curl",
        "Wget",
        "Python Requests",
        "Python-urllib",
        "Go-http-client",
        "HeadlessChrome",
        "PhantomJS",
        "Apache-HttpClient",
    }
)
_TABLET_MARKERS = ("ipad", "tablet", "kindle", "silk/", "playbook")


@dataclass(frozen=True)
class UserAgentInfo:
    device: str  # "desktop", "mobile", "tablet", "bot" or "" (no user agent)
    os: str
    browser: str
    is_bot: bool


@functools.lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str) -> UserAgentInfo:
    """Device type, OS and browser of a user agent, and whether it is a known bot.

    >>> parse_user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
    UserAgentInfo(device='mobile', os='iOS', browser='Mobile Safari', is_bot=False)
    >>> parse_user_agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    UserAgentInfo(device='bot', os='', browser='Googlebot', is_bot=True)
    """
    if not user_agent.strip():
        return UserAgentInfo(device="", os="", browser="", is_bot=True)
    result = ua_parser.parse(user_agent).with_defaults()
    browser = result.user_agent.family
    os_name = result.os.family
    is_bot = result.device.family == "Spider" or browser in _AUTOMATION_FAMILIES
    lowered = user_agent.lower()
    if is_bot:
        device = "bot"
    elif any(marker in lowered for marker in _TABLET_MARKERS) or (
        os_name == "Android" and "mobile" not in lowered
    ):
        device = "tablet"
    elif "mobi" in lowered or os_name in {"iOS", "Android", "Windows Phone"}:
        device = "mobile"
    else:
        device = "desktop"
    return UserAgentInfo(
        device=device,
        os="" if os_name == "Other" else os_name[:50],
        browser="" if browser == "Other" else browser[:50],
        is_bot=is_bot,
    )


# --- Unique clicks --------------------------------------------------------------------------

# After a Redis error, skip Redis for this long rather than pay a timeout on every click.
_REDIS_BACKOFF_SECONDS = 5.0
_redis_down_until: dict[str, float] = {}


def unique_key(ip: str | None, user_agent: str, link_id: int) -> str:
    """The Redis key of one visitor's unique-click window on one link."""
    digest = hashlib.blake2b(
        f"{link_id}\x00{ip or ''}\x00{user_agent}".encode(), digest_size=16
    ).hexdigest()
    return f"{settings.TRACKING_REDIS_PREFIX}uniq:{digest}"


def click_is_unique(*, ip: str | None, user_agent: str, link_id: int) -> bool:
    """True for the first click of this IP + user agent on this link within the window.

    Atomic across processes with Redis (`SET key 1 NX EX window`: exactly one concurrent
    caller creates the key). Without Redis (local mode) Django's default cache stands in:
    LocMemCache's `add` is atomic within one process, so a repeat that lands on another
    worker process counts as unique again. When Redis fails the click counts as unique: the
    flag may be generous, the visitor is never held up.
    """
    window = settings.CLICKS_UNIQUE_WINDOW_SECONDS
    key = unique_key(ip, user_agent, link_id)
    client = get_redis()
    if client is None:
        return bool(cache.add(key, 1, timeout=window))
    url = settings.REDIS_URL
    if time.monotonic() < _redis_down_until.get(url, 0.0):
        return True
    try:
        return bool(client.set(key, 1, nx=True, ex=window))
    except RedisError:
        _redis_down_until[url] = time.monotonic() + _REDIS_BACKOFF_SECONDS
        logger.warning("Redis unavailable for unique-click checks; counting clicks as unique")
        return True


@dataclass(frozen=True)
class ClickIntel:
    country: str
    device: str
    os: str
    browser: str
    is_bot: bool


def click_intel(*, ip: str | None, user_agent: str, cdn_value: str = "") -> ClickIntel:
    """Everything we infer about one click from its request, without a query or a round trip.
    Uniqueness is decided where the click is written (`click_is_unique`, or the click buffer's
    script in the same Redis round trip)."""
    agent = parse_user_agent(user_agent[:512])
    return ClickIntel(
        country=visitor_country(ip, cdn_value),
        device=agent.device,
        os=agent.os,
        browser=agent.browser,
        is_bot=agent.is_bot,
    )
