"""A per-process cache for the public endpoints' reads (links, advertiser keys, smart ads and
creatives), which also keeps the last known *live* values to serve through a database outage.

Each entry is `(fresh until, usable in an outage until, value)` on the monotonic clock. A fresh
entry is served without a query. An expired one is read again; when that read fails because the
database is unreachable (config.outage), the entry is served anyway as long as its outage bound
(`CLICKS_OUTAGE_STALE_SECONDS` after the last successful read) has not passed. Only live values
(not None) get an outage bound: a link or creative known to be paused or missing is never
served from memory once its freshness is over.
"""

import logging
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, ClassVar

from django.conf import settings

from config.outage import DATABASE_OUTAGE_ERRORS

logger = logging.getLogger(__name__)

MISS: Any = object()


class ProcessCache(dict):
    """`{key: (fresh until, outage until, value)}`, bounded crudely: when full it is cleared
    whole and refilled within one TTL."""

    # Every cache of the process, so that `process_caches_clear` reaches them all (weak: a
    # cache is a dict, unhashable, so no WeakSet).
    instances: ClassVar[list[weakref.ref]] = []

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        ProcessCache.instances.append(weakref.ref(self))

    def fresh(self, key: Hashable, clock: float) -> Any:
        """The value kept for `key` unless it has expired; `MISS` when there is none."""
        entry = self.get(key)
        return entry[2] if entry is not None and entry[0] > clock else MISS

    def keep(
        self, key: Hashable, value: Any, *, clock: float, ttl: float, outage_ttl: float = 0.0
    ) -> None:
        """Keep `value` fresh for `ttl` seconds and usable in an outage for `outage_ttl`."""
        if ttl <= 0 and outage_ttl <= 0:
            self.pop(key, None)
            return
        if key not in self and len(self) >= self.limit:
            self.clear()
        self[key] = (clock + ttl, clock + max(outage_ttl, 0.0), value)

    def load(self, key: Hashable, load: Callable[[], Any], *, ttl: float) -> Any:
        """The value for `key`: fresh from the cache, else `load()` (kept `ttl` seconds, and
        when it is live, i.e. not None, `CLICKS_OUTAGE_STALE_SECONDS` for outages). When
        `load()` fails on an unreachable database, the last live value still inside its outage
        bound is returned instead; without one, the error propagates (the caller answers 503)."""
        clock = time.monotonic()
        if ttl > 0 and (hit := self.fresh(key, clock)) is not MISS:
            return hit
        try:
            value = load()
        except DATABASE_OUTAGE_ERRORS:
            entry = self.get(key)
            if entry is None or entry[1] <= clock:
                raise
            # Served from memory; and not asked for again before one TTL, so an outage costs
            # one failed connection per key and TTL, not one per request.
            self[key] = (clock + ttl, entry[1], entry[2])
            logger.warning("Database unavailable; serving %r from its last live copy", key)
            return entry[2]
        outage_ttl = settings.CLICKS_OUTAGE_STALE_SECONDS if value is not None else 0.0
        self.keep(key, value, clock=clock, ttl=ttl, outage_ttl=outage_ttl)
        return value


def process_caches_clear() -> None:
    """Empty every per-process cache, so the next read of each goes to the database (the
    suite does it between tests, which run with production's cache times)."""
    ProcessCache.instances[:] = [ref for ref in ProcessCache.instances if ref() is not None]
    for ref in ProcessCache.instances:
        if (cache := ref()) is not None:
            cache.clear()
