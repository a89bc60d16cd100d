"""A campaign's bot and fraud policy (`CampaignPolicy`), applied on the click and on the
conversion.

On the click (`click_refusal`): the visitor's IP against the campaign's block list
(`ip_blocked`), then the click-rate caps — per IP, per publisher's spid, and for the whole
campaign, each per minute (`rate_cap_ip`, `rate_cap_spid`, `rate_cap_minute`). On a
conversion of a click flagged as a bot (`bot_conversion_verdict`): hold for review (the
default), flag but keep the advertiser's status, reject, or allow. The minimum time to convert
is `Campaign.min_seconds_to_convert` (tracking/services.py, `conversion_guard`).

Cost on the click path, the hottest one: the policy is read with the cached link (or smart-ad
creative) and kept parsed on its campaign, so reading it costs no query and the block list is
parsed once per read; a campaign without caps makes no Redis call, one with caps makes one round trip
(a Lua script that checks every counter and counts the click in all of them, atomically, so
concurrent clicks never overshoot a cap). Windows are fixed calendar minutes (UTC): at most
the cap per minute, so up to twice the cap across a minute's edge.

When Redis fails the caps let clicks through (logged, and Redis is left alone for a few
seconds): the caps protect the advertiser from floods, they must not cost good visitors their
redirect. During a database outage a campaign whose policy was never read is served the
defaults.
"""

import functools
import hashlib
import ipaddress
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from config.outage import DATABASE_OUTAGE_ERRORS
from config.redis import get_redis
from tracking.cache import ProcessCache
from tracking.models import (
    Campaign,
    CampaignPolicy,
    ClickRejection,
    Conversion,
    IPNetwork,
    parse_ip_blocks,
)

logger = logging.getLogger(__name__)

BotAction = CampaignPolicy.BotAction

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Policy:
    """A campaign's policy as the click path uses it (parsed, immutable, cacheable)."""

    bot_action: str = BotAction.HOLD
    blocked: tuple[IPNetwork, ...] = ()
    per_ip: int | None = None
    per_spid: int | None = None
    per_minute: int | None = None

    @classmethod
    def of(cls, row: CampaignPolicy) -> "Policy":
        try:
            blocked = parse_ip_blocks(row.blocked_ips)
        except ValueError:
            # Saved through the admin's validation, so only a hand-edited row gets here; its
            # valid entries still apply.
            logger.error("Campaign %s: unparsable IP block list", row.campaign_id)
            blocked = tuple(_parse_leniently(row.blocked_ips))
        return cls(
            bot_action=row.bot_action,
            blocked=blocked,
            per_ip=row.max_clicks_per_ip_per_minute,
            per_spid=row.max_clicks_per_spid_per_minute,
            per_minute=row.max_clicks_per_minute,
        )


DEFAULT = Policy()


def _parse_leniently(value: str):
    for entry in value.replace(",", "\n").splitlines():
        try:
            yield ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            continue


# Campaign id → Policy (DEFAULT for a campaign without a row), for campaigns that come
# without their policy (a conversion's click's campaign).
_POLICY_CACHE = ProcessCache(20_000)

# Where a campaign instance keeps its parsed policy.
_MEMO = "_click_policy"


def _policy_read(campaign_id: int) -> Policy:
    row = CampaignPolicy.objects.filter(campaign_id=campaign_id).first()
    return DEFAULT if row is None else Policy.of(row)


def campaign_policy(campaign: Campaign) -> Policy:
    """The campaign's policy. A campaign read with its policy (`select_related
    ("campaign__policy")`: the cached links and smart-ad creatives the click path uses) keeps
    it parsed on the instance, so it lives exactly as long as the cached link: no query, no
    parsing per click. Otherwise it is read and cached per process for
    CLICKS_LINK_CACHE_SECONDS. Either way an edit in the admin takes up to that long to reach
    every web process."""
    memo = campaign.__dict__.get(_MEMO)
    if memo is not None:
        return memo
    if Campaign.policy.is_cached(campaign):
        try:
            row = campaign.policy
        except CampaignPolicy.DoesNotExist:
            row = None
        memo = campaign.__dict__[_MEMO] = DEFAULT if row is None else Policy.of(row)
        return memo
    try:
        return _POLICY_CACHE.load(
            campaign.pk,
            lambda: _policy_read(campaign.pk),
            ttl=settings.CLICKS_LINK_CACHE_SECONDS,
        )
    except DATABASE_OUTAGE_ERRORS:
        logger.warning("Database unavailable; campaign %s gets the default policy", campaign.pk)
        return DEFAULT


# --- The click ------------------------------------------------------------------------------


def ip_blocked(policy: Policy, ip: str | None) -> bool:
    """Whether `ip` lies in one of the policy's blocked networks.

    >>> ip_blocked(Policy(blocked=parse_ip_blocks("198.51.100.0/24")), "198.51.100.9")
    True
    >>> ip_blocked(Policy(blocked=parse_ip_blocks("198.51.100.0/24")), "2001:db8::1")
    False
    """
    if not policy.blocked or not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:198.51.100.9 is that IPv4 visitor
    return any(address in network for network in policy.blocked)


# Checks each counter, and only when none is at its cap counts the click in all of them: a
# refused click uses up nothing, and no two concurrent clicks can both take the last slot.
# KEYS: the counters; ARGV[1]: their lifetime (s); ARGV[2…]: each counter's cap.
_RATE_CAP = """
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[i + 1]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then
    redis.call('EXPIRE', key, ARGV[1])
  end
end
return 0
"""


@functools.cache
def _rate_cap_script(client):
    return client.register_script(_RATE_CAP)


_REDIS_BACKOFF_SECONDS = 5.0
_redis_down_until = 0.0


def ip_bucket(ip: str) -> str:
    """What the per-IP cap counts: the address, or for IPv6 its /64 (one subscriber's
    network: a client picks any address in it at will).

    >>> ip_bucket("203.0.113.7"), ip_bucket("2001:db8:1:2:aaaa::1")
    ('203.0.113.7', '2001:db8:1:2::/64')
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else address)


def _rate_key(campaign_id: int, scope: str, value: str, window: int) -> str:
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    return f"{settings.TRACKING_REDIS_PREFIX}rate:{campaign_id}:{scope}:{digest}:{window}"


def rate_cap_refusal(
    policy: Policy,
    *,
    campaign_id: int,
    publisher_id: int,
    ip: str | None,
    spid: str,
    now: float | None = None,
) -> str | None:
    """The cap a click is over (a ClickRejection reason), else None; a click let through is
    counted. No Redis call for a campaign without caps."""
    global _redis_down_until
    window = int((time.time() if now is None else now) // WINDOW_SECONDS)
    checks: list[tuple[str, int, str]] = []
    if policy.per_ip and ip:
        checks.append(
            (
                _rate_key(campaign_id, "ip", ip_bucket(ip), window),
                policy.per_ip,
                ClickRejection.Reason.RATE_CAP_IP,
            )
        )
    if policy.per_spid and spid:
        checks.append(
            (
                _rate_key(campaign_id, "spid", f"{publisher_id}\x00{spid}", window),
                policy.per_spid,
                ClickRejection.Reason.RATE_CAP_SPID,
            )
        )
    if policy.per_minute:
        checks.append(
            (
                _rate_key(campaign_id, "all", "", window),
                policy.per_minute,
                ClickRejection.Reason.RATE_CAP_CAMPAIGN,
            )
        )
    if not checks:
        return None
    keys = [key for key, _, _ in checks]
    limits = [limit for _, limit, _ in checks]
    client = get_redis()
    if client is None:
        over = _rate_cap_local(keys, limits)
    else:
        if time.monotonic() < _redis_down_until:
            return None
        try:
            over = int(_rate_cap_script(client)(keys=keys, args=[WINDOW_SECONDS * 2, *limits]))
        except RedisError:
            _redis_down_until = time.monotonic() + _REDIS_BACKOFF_SECONDS
            logger.warning("Redis unavailable for click-rate caps; letting clicks through")
            return None
    return checks[over - 1][2] if over else None


def _rate_cap_local(keys: list[str], limits: list[int]) -> int:
    """Local mode (no Redis): Django's cache stands in, per process and not atomic across
    processes; good enough for a demo, not for production."""
    for index, (key, limit) in enumerate(zip(keys, limits, strict=True), start=1):
        if (cache.get(key) or 0) >= limit:
            return index
    for key in keys:
        if not cache.add(key, 1, timeout=WINDOW_SECONDS * 2):
            try:
                cache.incr(key)
            except ValueError:  # expired between the two calls
                cache.add(key, 1, timeout=WINDOW_SECONDS * 2)
    return 0


def click_refusal(
    *, campaign: Campaign, publisher_id: int, ip: str | None, spid: str
) -> str | None:
    """Why the campaign's policy refuses this click (a ClickRejection reason), or None: the
    block list first (a blocked click uses up no cap), then the rate caps."""
    policy = campaign_policy(campaign)
    if ip_blocked(policy, ip):
        return ClickRejection.Reason.IP_BLOCKED
    return rate_cap_refusal(
        policy, campaign_id=campaign.pk, publisher_id=publisher_id, ip=ip, spid=spid
    )


# --- The conversion -------------------------------------------------------------------------


def bot_conversion_verdict(campaign: Campaign, status: str) -> tuple[str, str, str]:
    """(status, reason, detail) for a new conversion of a bot click, by the campaign's bot
    action; reason "" when the policy lets it through unmarked (allow)."""
    action = campaign_policy(campaign).bot_action
    why = "The click came from a known bot, an automation tool or an empty user agent"
    if action == BotAction.ALLOW:
        return status, "", ""
    if action == BotAction.FLAG:
        return status, Conversion.Reason.BOT_FLAGGED, f"{why}; flagged, not held."
    if action == BotAction.REJECT:
        return (
            Conversion.Status.REJECTED,
            Conversion.Reason.BOT_REJECTED,
            f"{why}; the campaign rejects such conversions.",
        )
    return Conversion.Status.PENDING, Conversion.Reason.BOT_CLICK, f"{why}; held for review."
