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
valid for conversion while still buffered: the intake stores it from a copy kept under its id.

An entry the database refuses, for whatever reason, is found by splitting the batch, set aside
as a `ClickDeadLetter` with its error, and acknowledged: one bad entry never holds up the rest.
docs/operations.md ("The click pipeline") states the guarantees and how a stall shows.
"""

import functools
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from config.redis import get_redis
from tracking.models import Click, ClickDeadLetter

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
    "cleaned_fields",
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


@dataclass
class _Entry:
    """One buffered click on its way to the database."""

    entry_id: str  # the stream entry id, "" for a click read by id
    raw: bytes
    click: Click | None = None


def _printable(value: bytes | str, limit: int = 20_000) -> str:
    """Text PostgreSQL will store whatever the value held: what it refused may be in it."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    return text.replace("\x00", "\\x00")[:limit]


def _database_answers() -> bool:
    """Whether the database is up: a refused batch is then the entries' fault, not an outage's
    (entries are never set aside because PostgreSQL was down: they wait in the buffer)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return False
    return True


def _insert(clicks: list[Click]) -> None:
    nested = connection.in_atomic_block
    with transaction.atomic():
        if nested and connection.vendor == "postgresql":
            # Foreign keys are checked at commit (Django makes them deferrable); inside an
            # outer transaction that would be its commit, long after this entry was judged.
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        Click.objects.bulk_create(clicks, batch_size=1000, ignore_conflicts=True)


def _insert_isolating(entries: list[_Entry]) -> list[tuple[_Entry, Exception]]:
    """Insert the entries' clicks; return those the database refuses, each with its error.

    The whole batch goes in one statement when it can. A refused batch is split in half until
    each refused entry stands alone, so one bad entry costs about 2·log2(batch) extra inserts
    and the others are stored at once. Raises when the database itself is unreachable.
    """
    if not entries:
        return []
    try:
        _insert([entry.click for entry in entries])
        return []
    except Exception as exc:
        # Whatever refuses an entry must not stop the rest: the database's errors, and the
        # model fields' own checks (a malformed IP address raises ValueError before any SQL).
        if isinstance(exc, DatabaseError) and not _database_answers():
            raise
        if len(entries) > 1:
            middle = len(entries) // 2
            return _insert_isolating(entries[:middle]) + _insert_isolating(entries[middle:])
        error: Exception = exc
    if isinstance(error, OperationalError):
        # A deadlock or a cancelled statement can hit a good row: one more try before the
        # entry is set aside.
        try:
            _insert([entries[0].click])
            return []
        except Exception as again:
            if isinstance(again, DatabaseError) and not _database_answers():
                raise
            error = again
    return [(entries[0], error)]


def _error_class(exc: Exception) -> str:
    # Django wraps the driver's error; the driver's class names the cause
    # (StringDataRightTruncation, ForeignKeyViolation, ...).
    cause = exc.__cause__ or exc
    return f"{type(cause).__module__}.{type(cause).__qualname__}"[:100]


def _dead_letter(refused: list[tuple[_Entry, Exception]]) -> None:
    """Set refused entries aside with their errors (one row each, never retried on its own)."""
    letters = []
    for entry, exc in refused:
        click = entry.click
        logger.error(
            "Click buffer entry %s refused, set aside as a dead letter: %s: %s",
            entry.entry_id or (click and click.click_id),
            type(exc).__name__,
            exc,
        )
        # The letter must be storable whatever the entry held: it is the last stop.
        publisher_id = getattr(click, "publisher_id", None)
        if not isinstance(publisher_id, int) or not -(2**63) <= publisher_id < 2**63:
            publisher_id = None
        letters.append(
            ClickDeadLetter(
                entry_id=entry.entry_id,
                click_id=_printable(str(click.click_id) if click else "", 64),
                publisher_id=publisher_id,
                payload=_printable(entry.raw),
                error_class=_error_class(exc),
                error=_printable(str(exc), 2000) or type(exc).__name__,
            )
        )
    ClickDeadLetter.objects.bulk_create(letters, ignore_conflicts=True)


def _store(entries: list[_Entry]) -> int:
    """Store what can be stored and set the rest aside; returns how many were set aside.
    Raises only when the database is down: then nothing is acknowledged and the entries wait
    in the buffer."""
    decoded, refused = [], []
    for entry in entries:
        try:
            entry.click = _click_from_json(entry.raw)
            decoded.append(entry)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Not a click at all (written by something other than click_buffer).
            refused.append((entry, exc))
    refused += _insert_isolating(decoded)
    if refused:
        _dead_letter(refused)
    return len(refused)


def click_materialize(click_id: str) -> bool:
    """Make sure a buffered click is in the database, from the copy kept under its id. Returns
    True if the click is there now.

    Never flushes the buffer: a made-up click id must not cost the advertiser's request more
    than one Redis read. A copy the database refuses is set aside like the flusher does.
    """
    client = get_redis()
    if client is None:
        return False
    raw = client.get(_key(click_id))
    if raw is None:
        return False
    return _store([_Entry(entry_id="", raw=raw)]) == 0


def _ensure_group(client) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: it exists already
        if "BUSYGROUP" not in str(exc):
            raise


def clicks_flush(*, batch_size: int | None = None, consumer: str | None = None) -> int:
    """Move up to `batch_size` buffered clicks into the database. Returns how many were read.

    Every entry read is acknowledged once it is either stored or set aside as a dead letter
    (ClickDeadLetter), so no entry can hold up the ones behind it. Only an unreachable database
    leaves the batch unacknowledged, to be claimed again after CLICKS_BUFFER_CLAIM_IDLE_MS.
    """
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
    read = list(stale)
    if len(read) < batch_size:
        fresh = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=batch_size - len(read))
        for _stream, stream_entries in fresh or []:
            read.extend(stream_entries)
    if not read:
        return 0
    ids = [entry_id for entry_id, _fields in read]
    _store(
        [
            _Entry(entry_id=_printable(entry_id, 32), raw=(fields or {}).get(b"c", b""))
            for entry_id, fields in read
        ]
    )
    # Acknowledge only after the commit: a crash before this line means a re-insert that the
    # unique click_id turns into a no-op.
    pipe = client.pipeline(transaction=False)
    pipe.xack(STREAM, GROUP, *ids)
    pipe.xdel(STREAM, *ids)
    pipe.execute()
    return len(ids)


def clicks_flush_all(*, max_batches: int = 50) -> int:
    """Flush while full batches come out, at most `max_batches` (so one task run is bounded
    under sustained load). Returns how many entries were read."""
    total = 0
    for _ in range(max_batches):
        flushed = clicks_flush()
        total += flushed
        if flushed < settings.CLICKS_BUFFER_BATCH:
            break
    return total


@dataclass(frozen=True)
class BufferStatus:
    """How far behind the click flusher is (for /metrics, /readyz and the admin status page)."""

    entries: int  # clicks acknowledged to visitors and not yet in the database
    oldest_seconds: float  # age of the oldest of them; 0 when the buffer is empty
    claimed: int  # read by a flusher that has not finished with them (or died)


def buffer_status(client=None) -> BufferStatus:
    """Read from Redis in one round trip. Raises redis errors."""
    client = client or get_redis()
    if client is None:
        return BufferStatus(0, 0.0, 0)
    pipe = client.pipeline(transaction=False)
    pipe.xlen(STREAM)
    pipe.xrange(STREAM, count=1)
    pipe.xpending(STREAM, GROUP)
    length, first, pending = pipe.execute(raise_on_error=False)
    if isinstance(length, Exception):
        raise length
    oldest = 0.0
    if first and not isinstance(first, Exception):
        entry_ms = int(first[0][0].split(b"-")[0])
        oldest = max(0.0, time.time() - entry_ms / 1000)
    # XPENDING fails with NOGROUP before the first flush: nothing is claimed then.
    claimed = 0 if isinstance(pending, Exception) else int(pending["pending"])
    return BufferStatus(entries=int(length), oldest_seconds=round(oldest, 3), claimed=claimed)


def buffer_behind() -> bool:
    """Whether a buffered click may have outlived its copy by id (the flusher is that far
    behind), so a conversion's click can't be declared unknown yet."""
    try:
        return buffer_status().oldest_seconds > settings.CLICKS_BUFFER_KEY_TTL
    except RedisError:
        return False


# --- Status: /metrics, /readyz and the admin status page ------------------------------------


@dataclass(frozen=True)
class PipelineStatus:
    """The click pipeline as an operator needs to see it."""

    buffer: BufferStatus | None  # None when Redis did not answer (then `buffer_error` says why)
    buffer_error: str
    dead_letters: int
    stall_seconds: float  # CLICKS_BUFFER_STALL_SECONDS

    @property
    def problem(self) -> str | None:
        """Why the pipeline is not healthy (readiness fails), or None."""
        if self.buffer is not None and self.buffer.oldest_seconds > self.stall_seconds:
            return (
                f"the oldest buffered click is {self.buffer.oldest_seconds:.0f} s old "
                f"(limit {self.stall_seconds:g} s): is the flusher (Celery worker + beat) running?"
            )
        return None


def pipeline_status() -> PipelineStatus:
    buffer, error = None, ""
    if buffering_enabled():
        try:
            buffer = buffer_status()
        except RedisError as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
    return PipelineStatus(
        buffer=buffer,
        buffer_error=error,
        dead_letters=ClickDeadLetter.objects.count(),
        stall_seconds=settings.CLICKS_BUFFER_STALL_SECONDS,
    )


class PipelineCollector(Collector):
    """Click pipeline figures, read at scrape time (one Redis round trip, one count)."""

    def collect(self) -> Iterator[Metric]:
        status = pipeline_status()
        buffer = status.buffer or BufferStatus(0, 0.0, 0)
        yield GaugeMetricFamily(
            "roundtrip_click_buffer_entries",
            "Clicks acknowledged to visitors and not yet in the database.",
            value=buffer.entries,
        )
        yield GaugeMetricFamily(
            "roundtrip_click_buffer_oldest_seconds",
            "Age of the oldest click waiting in the buffer; alert when it grows.",
            value=buffer.oldest_seconds,
        )
        yield GaugeMetricFamily(
            "roundtrip_click_dead_letters",
            "Buffered clicks the database refused, set aside with their error (admin).",
            value=status.dead_letters,
        )


def dead_letters_retry(letters: Iterable[ClickDeadLetter]) -> tuple[int, int]:
    """Try set-aside clicks again (once their cause is fixed, e.g. a link restored). Stored
    ones leave the dead-letter record; the others keep it with their new error. Returns
    (stored, still refused)."""
    stored = refused = 0
    for letter in letters:
        entry = _Entry(entry_id=letter.entry_id, raw=letter.payload.encode())
        try:
            entry.click = _click_from_json(entry.raw)
            failed = _insert_isolating([entry])
            error = failed[0][1] if failed else None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            error = exc
        if error is None:
            letter.delete()
            stored += 1
        else:
            letter.error_class = _error_class(error)
            letter.error = _printable(str(error), 2000) or type(error).__name__
            letter.save(update_fields=["error_class", "error"])
            refused += 1
    return stored, refused
