"""Buffered click writes: the redirect appends the click to a Redis stream, a flusher copies
batches into PostgreSQL.

Why: a synchronous database commit per click caps the click endpoint at a fraction of what the
web server can do (see docs/performance.md). An `XADD` is one round trip to Redis with no fsync
on the request path. Durability moves to Redis: with AOF `appendfsync everysec` (the production
setting in docs/deploy.md) a Redis crash can cost at most about one second of clicks; a web or
flusher crash costs nothing (entries stay in the stream until a flush has committed them).

Delivery into the database is at least once: a flusher reads with a consumer group, inserts with
`ON CONFLICT (click_id) DO NOTHING`, and acknowledges only after its transaction committed;
entries a dead flusher held are claimed again after `CLICKS_BUFFER_CLAIM_IDLE_MS`. A click is
valid for conversion while still buffered: the intake flushes the buffer when it misses a click.
"""

import functools
import json
import logging
import os
import socket
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction

from config.redis import get_redis
from tracking.models import Click

logger = logging.getLogger(__name__)

STREAM = "roundtrip:clicks"
GROUP = "flushers"

# Click fields carried through the buffer; everything else has a model default. `is_unique`
# is not here: it is decided in Redis by the same script that buffers the click.
_FIELDS = (
    "click_id",
    "link_id",
    "publisher_id",
    "campaign_id",
    "creative_id",
    "spid",
    "placement",
    "smart_ad_id",
    "keyword",
    "country",
    "device",
    "os",
    "browser",
    "is_bot",
    "ip",
    "user_agent",
    "referer",
)


def buffering_enabled() -> bool:
    return settings.CLICKS_BUFFERED and get_redis() is not None


def _key(click_id: str) -> str:
    return f"roundtrip:click:{click_id}"


# One round trip per click: the unique-click window (`SET NX EX`: the first caller of the
# window creates the key), the stream append, and the copy kept under the click id. The payload
# arrives as JSON without its closing brace; the script appends the unique flag.
_RECORD = """
local unique = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
local payload = ARGV[2] .. (unique and 'true' or 'false') .. '}'
redis.call('XADD', KEYS[2], '*', 'c', payload)
redis.call('SET', KEYS[3], payload, 'EX', ARGV[3])
return unique and 1 or 0
"""


@functools.cache
def _record_script(client):
    return client.register_script(_RECORD)


def _payload_prefix(click: Click) -> str:
    """The click as JSON up to its last member, `"is_unique":` (the value comes last)."""
    payload = {name: getattr(click, name) for name in _FIELDS}
    payload["created_at"] = click.created_at.isoformat()
    return json.dumps(payload, separators=(",", ":"))[:-1] + ',"is_unique":'


def click_buffer(click: Click, *, unique_key: str) -> bool:
    """Append an unsaved click to the stream and decide its unique flag in the same round trip
    (`unique_key`: tracking.intelligence.unique_key); returns the flag, also set on `click`.
    Raises redis errors: the caller falls back to a direct insert.

    The payload is also kept under the click id for a few minutes, so a conversion arriving
    before the flush can materialise its click directly.
    """
    unique = _record_script(get_redis())(
        keys=[unique_key, STREAM, _key(click.click_id)],
        args=[
            settings.CLICKS_UNIQUE_WINDOW_SECONDS,
            _payload_prefix(click),
            settings.CLICKS_BUFFER_KEY_TTL,
        ],
    )
    click.is_unique = bool(unique)
    return click.is_unique


def _click_from_json(raw: bytes) -> Click:
    data = json.loads(raw)
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    return Click(**data)


def click_materialize(click_id: str) -> bool:
    """Make sure a buffered click is in the database. Returns True if something was written."""
    client = get_redis()
    if client is None:
        return False
    raw = client.get(_key(click_id))
    if raw is not None:
        Click.objects.bulk_create([_click_from_json(raw)], ignore_conflicts=True)
        return True
    # Older than the key's lifetime and still buffered: the flushers are behind; help them.
    return clicks_flush_all() > 0


def _ensure_group(client) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: it exists already
        if "BUSYGROUP" not in str(exc):
            raise


def _decode(entries) -> tuple[list[bytes], list[Click]]:
    ids, clicks = [], []
    for entry_id, fields in entries:
        ids.append(entry_id)
        try:
            clicks.append(_click_from_json(fields[b"c"]))
        except (KeyError, ValueError, TypeError):
            # A malformed entry can't become a click; log it loudly rather than wedge the stream.
            logger.error("Dropping malformed click buffer entry %s: %r", entry_id, fields)
    return ids, clicks


def clicks_flush(*, batch_size: int | None = None, consumer: str | None = None) -> int:
    """Move up to `batch_size` buffered clicks into the database. Returns how many were read."""
    client = get_redis()
    if client is None:
        return 0
    batch_size = batch_size or settings.CLICKS_BUFFER_BATCH
    consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
    _ensure_group(client)
    # Entries a crashed flusher read but never acknowledged come first.
    _, stale, _ = client.xautoclaim(
        STREAM,
        GROUP,
        consumer,
        min_idle_time=settings.CLICKS_BUFFER_CLAIM_IDLE_MS,
        count=batch_size,
    )
    entries = list(stale)
    if len(entries) < batch_size:
        fresh = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=batch_size - len(entries))
        for _stream, stream_entries in fresh or []:
            entries.extend(stream_entries)
    if not entries:
        return 0
    ids, clicks = _decode(entries)
    try:
        with transaction.atomic():
            Click.objects.bulk_create(clicks, batch_size=1000, ignore_conflicts=True)
    except IntegrityError:
        _insert_one_by_one(clicks)
    # Acknowledge only after the commit: a crash before this line means a re-insert that the
    # unique click_id turns into a no-op.
    pipe = client.pipeline(transaction=False)
    pipe.xack(STREAM, GROUP, *ids)
    pipe.xdel(STREAM, *ids)
    pipe.execute()
    return len(ids)


def _insert_one_by_one(clicks: list[Click]) -> None:
    """A batch that can't go in whole (e.g. one click's link or publisher was deleted while it
    sat in the buffer): insert the clicks one at a time and drop, loudly, only those the
    database refuses, so one bad entry can't wedge the stream."""
    for click in clicks:
        try:
            with transaction.atomic():
                Click.objects.bulk_create([click], ignore_conflicts=True)
        except IntegrityError as exc:
            logger.error("Dropping buffered click %s the database refuses: %s", click.click_id, exc)


def clicks_flush_all(*, max_batches: int = 100) -> int:
    """Flush until the buffer is empty (bounded). Used by the intake on a click miss."""
    total = 0
    for _ in range(max_batches):
        flushed = clicks_flush()
        total += flushed
        if flushed < settings.CLICKS_BUFFER_BATCH:
            break
    return total


def buffer_length() -> int:
    client = get_redis()
    return int(client.xlen(STREAM)) if client is not None else 0
