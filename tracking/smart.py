"""Smart ads: choose creatives for an ad unit, sign their click links, count impressions.

A smart ad (`/smart?ref=<code>&smart_ad_id=<id>&q=<keyword>&spid=<spid>`) shows up to `slots`
creatives from the active campaigns of its pool that may be shown in the visitor's country:
the best keyword matches first, ties broken at random by weight. Each ad links to `/click`
with the spid, creative, smart ad and keyword in the query and an HMAC over all of them
(`sig`), so a visitor can neither swap the creative (and with it the campaign) nor move the
click to another publisher's `ref`.

Impressions are counters per day × publisher × smart ad × creative × country: one `HINCRBY`
per served creative into a Redis hash, copied into `SmartAdImpression` in batches by
`impressions_flush` (Celery beat). Without Redis they are added to the table directly.
"""

import logging
import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django.utils import timezone
from redis.exceptions import RedisError

from config.redis import get_redis
from publishers.models import Publisher
from tracking.cache import ProcessCache
from tracking.clickinput import KEYWORD_MAX_LENGTH, PLACEMENT_MAX_LENGTH, normalize_label
from tracking.models import (
    Campaign,
    Creative,
    ImpressionFlush,
    SmartAd,
    SmartAdImpression,
    TrackingLink,
)

logger = logging.getLogger(__name__)

# Ad rotation needs spread, not secrecy.
_rng = random.Random()  # noqa: S311

# --- Per-process cache of smart ads and creatives -------------------------------------------

# Smart ads and creatives by id; live ones are also kept for database outages.
_cache = ProcessCache(10_000)


def _cached(key: tuple, load: Callable[[], Any]) -> Any:
    """`load()`'s result, kept SMART_ADS_CACHE_SECONDS: smart ads are read on every served
    unit and click, but change only when staff edit them. During a database outage the last
    live value is served (tracking/cache.py)."""
    return _cache.load(key, load, ttl=settings.SMART_ADS_CACHE_SECONDS)


def _cache_put(key: tuple, value: Any) -> None:
    _cache.keep(
        key,
        value,
        clock=time.monotonic(),
        ttl=settings.SMART_ADS_CACHE_SECONDS,
        outage_ttl=settings.CLICKS_OUTAGE_STALE_SECONDS,
    )


# --- Keywords and selection -----------------------------------------------------------------


_NON_WORD = re.compile(r"[\W_]+")


def match_text(text: str) -> str:
    """Case- and punctuation-insensitive form used for matching, padded for whole words.

    >>> match_text("Cheap-Flights, to PARIS!")
    ' cheap flights to paris '
    """
    return f" {' '.join(_NON_WORD.sub(' ', text.casefold()).split())} "


@dataclass(frozen=True)
class Candidate:
    creative: Creative  # with .campaign loaded
    phrases: tuple[str, ...]  # keywords in match_text form

    @property
    def weight(self) -> int:
        return self.creative.weight

    def score(self, query_text: str) -> int:
        """How many of the creative's keywords occur as whole words in the query."""
        return sum(1 for phrase in self.phrases if phrase in query_text)

    def shown_in(self, country: str) -> bool:
        return self.creative.campaign.allows_country(country)


def _candidate(creative: Creative) -> Candidate:
    phrases = tuple(
        text for text in (match_text(k) for k in creative.keywords.split(",")) if text.strip()
    )
    return Candidate(creative=creative, phrases=phrases)


@dataclass(frozen=True)
class Pool:
    smart_ad: SmartAd
    candidates: tuple[Candidate, ...]
    fallback: Candidate | None


def weighted_sample(items: Iterable[Candidate], k: int, rng: random.Random) -> list[Candidate]:
    """Up to `k` distinct items, each draw proportional to weight (without replacement)."""
    remaining = list(items)
    chosen: list[Candidate] = []
    while remaining and len(chosen) < k:
        index = rng.choices(range(len(remaining)), weights=[c.weight for c in remaining])[0]
        chosen.append(remaining.pop(index))
    return chosen


def choose_creatives(
    pool: Pool,
    *,
    keyword: str,
    country: str,
    rng: random.Random,
    may_run: Callable[[Campaign], bool] | None = None,
) -> list[Candidate]:
    """The creatives a unit shows.

    - Only creatives whose campaign may be shown in `country`, and that the publisher may run
      (`may_run`, tracking/access.py: its click would be refused otherwise), are eligible.
    - With a keyword: creatives matching more of it first, each tier drawn by weight; only
      matching creatives are shown.
    - No keyword, or nothing matches: the smart ad's fallback creative when it has one (and
      it is live and allowed in the country), else a draw by weight among all eligible.
    - Nothing eligible: an empty list (the unit renders blank).
    """
    slots = pool.smart_ad.slots

    def allowed(candidate: Candidate) -> bool:
        return candidate.shown_in(country) and (
            may_run is None or may_run(candidate.creative.campaign)
        )

    eligible = [c for c in pool.candidates if allowed(c)]
    if keyword:
        query_text = match_text(keyword)
        tiers: dict[int, list[Candidate]] = defaultdict(list)
        for candidate in eligible:
            score = candidate.score(query_text)
            if score:
                tiers[score].append(candidate)
        chosen: list[Candidate] = []
        for score in sorted(tiers, reverse=True):
            chosen += weighted_sample(tiers[score], slots - len(chosen), rng)
            if len(chosen) >= slots:
                break
        if chosen:
            return chosen
        fallback = pool.fallback
        if fallback is not None and allowed(fallback):
            return [fallback]
    return weighted_sample(eligible, slots, rng)


def _live_creatives() -> Any:
    # The campaign's policy comes along: a smart click then reads it from the cached creative
    # (tracking/policy.py), without a query.
    return Creative.objects.select_related("campaign", "campaign__policy").filter(
        is_active=True, campaign__status=Campaign.Status.ACTIVE
    )


def _load_pool(smart_ad_id: int) -> Pool | None:
    smart_ad = SmartAd.objects.filter(pk=smart_ad_id, is_active=True).first()
    if smart_ad is None:
        return None
    creatives = _live_creatives().filter(campaign__smart_ads=smart_ad).order_by("pk")
    fallback = None
    if smart_ad.fallback_creative_id:
        found = _live_creatives().filter(pk=smart_ad.fallback_creative_id).first()
        fallback = _candidate(found) if found else None
    return Pool(
        smart_ad=smart_ad,
        candidates=tuple(_candidate(creative) for creative in creatives),
        fallback=fallback,
    )


def smart_ad_pool(smart_ad_id: int) -> Pool | None:
    """The live pool of an active smart ad (cached per process), else None."""

    def load() -> Pool | None:
        pool = _load_pool(smart_ad_id)
        if pool is not None:
            # The click on a served ad looks its creative up: have it ready.
            for candidate in (*pool.candidates, pool.fallback):
                if candidate is not None:
                    _cache_put(("creative", candidate.creative.public_id), candidate.creative)
        return pool

    return _cached(("pool", smart_ad_id), load)


def creative_for_click(public_id: str) -> Creative | None:
    """A live creative with its campaign (cached per process), else None."""
    if not public_id or len(public_id) > 32:
        return None
    return _cached(
        ("creative", public_id), lambda: _live_creatives().filter(public_id=public_id).first()
    )


# --- Signed click links ---------------------------------------------------------------------

# The query parameters of a smart-ad click that the signature covers, in signing order.
SIGNED_FIELDS = ("ref", "spid", "placement", "creative", "smart_ad_id", "keyword")
_SIGNER_SALT = "tracking.smart-click"


class BadSmartLink(Exception):
    """A smart-ad click whose signature doesn't match its parameters (tampered or truncated)."""


def _signing_message(values: Mapping[str, str]) -> str:
    # One unambiguous string: each value length-prefixed, so no value can borrow from another.
    return "|".join(f"{len(values.get(name, ''))}:{values.get(name, '')}" for name in SIGNED_FIELDS)


def _signer() -> signing.Signer:
    # SECRET_KEY signs; SECRET_KEY_FALLBACKS still verify during a key rotation.
    return signing.Signer(salt=_SIGNER_SALT)


def sign_click(values: Mapping[str, str]) -> str:
    return _signer().sign(_signing_message(values)).rsplit(":", 1)[1]


def smart_click_href(values: Mapping[str, str]) -> str:
    """The `/click` URL (path and query) for one ad: the values, empty ones left out, + `sig`."""
    params = [(name, values[name]) for name in SIGNED_FIELDS if values.get(name)]
    params.append(("sig", sign_click(values)))
    return f"{reverse('click')}?{urlencode(params, quote_via=quote)}"


@dataclass(frozen=True)
class SmartClick:
    creative: Creative  # with .campaign loaded
    smart_ad_id: str
    keyword: str


def is_smart_click(params: Mapping[str, str]) -> bool:
    return "sig" in params or "smart_ad_id" in params


def smart_click_verify(params: Mapping[str, str]) -> SmartClick | None:
    """Check a smart-ad click's signature. Raises BadSmartLink when it doesn't match; returns
    None when it matches but the creative or its campaign no longer runs."""
    values = {name: params.get(name, "") for name in SIGNED_FIELDS}
    message = _signing_message(values)
    try:
        _signer().unsign(f"{message}:{params.get('sig', '')}")
    except signing.BadSignature:
        raise BadSmartLink from None
    creative = creative_for_click(values["creative"])
    if creative is None:
        return None
    return SmartClick(
        creative=creative,
        smart_ad_id=values["smart_ad_id"][:32],
        keyword=normalize_label(values["keyword"], KEYWORD_MAX_LENGTH),
    )


# --- Serving --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedAd:
    href: str
    headline: str
    body: str
    creative_id: str


@dataclass(frozen=True)
class ServedUnit:
    smart_ad: SmartAd
    ads: list[ServedAd]


def parse_smart_ad_id(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def smart_ad_serve(
    *,
    link: TrackingLink,
    smart_ad_id: int,
    query: str,
    spid: str,
    placement: str,
    country: str,
    count_impressions: bool = True,
    may_run: Callable[[Campaign], bool] | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> ServedUnit | None:
    """Choose the ads for one unit view, count their impressions (not for a bot's view:
    `count_impressions` False), and return them with their signed click links. None when the
    smart ad doesn't exist or is inactive. `may_run` says which campaigns the link's
    publisher may run (see `choose_creatives`)."""
    pool = smart_ad_pool(smart_ad_id)
    if pool is None:
        return None
    # `query` and `placement` come from tracking.clickinput, already storable; normalising them
    # again keeps every signed link's values in the form the click will store.
    keyword = normalize_label(query, KEYWORD_MAX_LENGTH)
    placement = normalize_label(placement, PLACEMENT_MAX_LENGTH)
    chosen = choose_creatives(
        pool, keyword=keyword, country=country, rng=rng or _rng, may_run=may_run
    )
    ads = []
    for candidate in chosen:
        creative = candidate.creative
        values = {
            "ref": link.code,
            "spid": spid,
            "placement": placement,
            "creative": creative.public_id,
            "smart_ad_id": str(smart_ad_id),
            "keyword": keyword,
        }
        ads.append(
            ServedAd(
                href=smart_click_href(values),
                headline=creative.headline or creative.name,
                body=creative.body,
                creative_id=creative.public_id,
            )
        )
    if chosen and count_impressions:
        impressions_count(
            day=timezone.localdate(now or timezone.now()),
            publisher_id=link.publisher_id,
            smart_ad_id=smart_ad_id,
            creative_ids=[c.creative.pk for c in chosen],
            country=country,
        )
    return ServedUnit(smart_ad=pool.smart_ad, ads=ads)


# --- Impression counters --------------------------------------------------------------------

# Rename the live hash to the pending one unless a pending batch is still waiting (a flush
# that failed), and stamp it with a batch id; atomic, so no increment is lost or split.
_ROTATE_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.call('HGET', KEYS[2], '__batch__')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], '__batch__', ARGV[1])
return ARGV[1]
"""
_BATCH_FIELD = b"__batch__"


def _impression_keys() -> tuple[str, str]:
    # One hash tag, so both keys live on the same Redis Cluster slot (RENAME needs that).
    prefix = settings.TRACKING_REDIS_PREFIX
    return f"{prefix}{{imp}}:live", f"{prefix}{{imp}}:pending"


ImpressionRow = tuple[
    int, date, int, int, str, int
]  # publisher, day, smart ad, creative, country, n


def impressions_count(
    *, day: date, publisher_id: int, smart_ad_id: int, creative_ids: list[int], country: str
) -> None:
    """Add one impression per creative: into Redis, or straight into the table without it."""
    client = get_redis()
    if client is not None:
        live, _ = _impression_keys()
        try:
            pipe = client.pipeline(transaction=False)
            for creative_id in creative_ids:
                pipe.hincrby(
                    live, f"{day.isoformat()}|{publisher_id}|{smart_ad_id}|{creative_id}|{country}"
                )
            pipe.execute()
            return
        except RedisError:
            logger.warning("Redis unavailable for impression counters; writing them directly")
    _impressions_upsert(
        [(publisher_id, day, smart_ad_id, creative_id, country, 1) for creative_id in creative_ids]
    )


def _impressions_upsert(rows: list[ImpressionRow]) -> None:
    """Add counts to SmartAdImpression (PostgreSQL and SQLite both speak ON CONFLICT)."""
    if not rows:
        return
    quote_name = connection.ops.quote_name
    table = quote_name(SmartAdImpression._meta.db_table)
    # Sorted, so concurrent upserts lock rows in the same order and can't deadlock.
    rows = sorted(rows)
    sql = (
        f"INSERT INTO {table} (publisher_id, day, smart_ad_id, creative_id, country, impressions)"  # noqa: S608 -- names from the model, values bound
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (publisher_id, day, smart_ad_id, creative_id, country)"
        f" DO UPDATE SET impressions = {table}.impressions + EXCLUDED.impressions"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _parse_counters(raw: dict[bytes, bytes]) -> list[ImpressionRow]:
    rows = []
    for field, value in raw.items():
        if field == _BATCH_FIELD:
            continue
        try:
            day, publisher_id, smart_ad_id, creative_id, country = field.decode().split("|")
            rows.append(
                (
                    int(publisher_id),
                    date.fromisoformat(day),
                    int(smart_ad_id),
                    int(creative_id),
                    country,
                    int(value),
                )
            )
        except ValueError:
            logger.error("Dropping malformed impression counter %r=%r", field, value)
    return rows


def _apply_batch(batch_id: str, rows: list[ImpressionRow]) -> int:
    """Add one batch in one transaction, at most once (its id is recorded with it)."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                flush = ImpressionFlush.objects.create(batch_id=batch_id)
        except IntegrityError:
            return 0  # applied before; Redis just never heard the DEL
        # Rows whose publisher, smart ad or creative was deleted meanwhile would fail the
        # whole batch on their foreign key.
        publishers = set(
            Publisher.objects.filter(pk__in={r[0] for r in rows}).values_list("pk", flat=True)
        )
        smart_ads = set(
            SmartAd.objects.filter(pk__in={r[2] for r in rows}).values_list("pk", flat=True)
        )
        creatives = set(
            Creative.objects.filter(pk__in={r[3] for r in rows}).values_list("pk", flat=True)
        )
        rows = [r for r in rows if r[0] in publishers and r[2] in smart_ads and r[3] in creatives]
        _impressions_upsert(rows)
        flush.rows = len(rows)
        flush.impressions = sum(r[5] for r in rows)
        flush.save(update_fields=["rows", "impressions"])
    return flush.impressions


def impressions_flush() -> int:
    """Copy the counters accumulated in Redis into the table. Returns impressions added.

    Exactly once: the live hash is renamed to a pending batch with an id; the batch and its
    id are written in one transaction; only then is the pending hash deleted. A crash before
    the commit leaves the batch pending for the next flush; a crash after it (before the
    DEL) makes the next flush find the id recorded and just delete the batch.
    """
    client = get_redis()
    if client is None:
        return 0
    live, pending = _impression_keys()
    batch = client.eval(_ROTATE_SCRIPT, 2, live, pending, uuid.uuid4().hex)
    if batch is None:
        return 0
    rows = _parse_counters(client.hgetall(pending))
    added = _apply_batch(batch.decode() if isinstance(batch, bytes) else str(batch), rows)
    client.delete(pending)
    return added
