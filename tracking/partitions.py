"""Time partitions of the clicks table (PostgreSQL declarative partitioning).

`tracking_click` is `PARTITION BY RANGE (created_at)`: one partition per UTC day
(`tracking_click_pYYYYMMDD`) and a default partition (`tracking_click_default`) that catches a
click no day partition covers, so an insert never fails for want of a partition. Why, and the
query plans: docs/scaling.md.

- `partitions_ensure` creates the partitions of the coming days (beat runs it hourly, the
  `manage_partitions` command on demand). Rows that landed in the default partition for such a
  day are moved into it in the same transaction.
- `partitions_expire` retires the days older than the retention cutoff. A day without
  conversions is detached and dropped: O(1), no DELETE, no WAL per row, no vacuum. A day some of
  whose clicks converted is *compacted*: its converted clicks are copied into a new table that
  replaces the day (the conversions keep their click), the rest is dropped with the old table.
  Once a whole month is compacted, its days are merged into one partition
  (`tracking_click_pYYYYMM`), so the number of partitions stays bounded by the retention days
  plus one per month of history.

Why not a foreign key from conversions: PostgreSQL lets a foreign key reference a partitioned
table only through a unique key that includes the partition column (`(id, created_at)`), and
refuses to detach a partition that referenced rows live in. `Conversion.click` is therefore
declared without a database constraint. A constraint trigger created with the partitioning
refuses to delete a click that has conversions (checked at commit, as the deferred foreign key
was), and compaction keeps converted clicks when whole days go. The insert side is left to the
intake, which records a conversion only for a click it has just read and that is inside its
attribution window, hence far from expiry (a trigger there would probe every partition's
primary key on each conversion).

Lookups by click id prune to the day partitions around the id's own timestamp (`click_first`).

Statements that take the parent's ACCESS EXCLUSIVE lock (DETACH) run last in short
transactions with a `lock_timeout`, so a long report query makes the run give up and retry on
the next one rather than stall click inserts behind it.
"""

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Max

from tracking.models import Campaign

logger = logging.getLogger(__name__)

PARENT = "tracking_click"
DEFAULT = "tracking_click_default"
COMPACTED = "roundtrip:compacted"  # table comment of a partition that holds only kept rows
LOCK_TIMEOUT = "3s"
# Converted clicks are kept with their conversion; everything else in an expired day goes.
# `{source}` is the table read (aliased `s`). Ids grow with time, so the conversions pointing
# into one day are a range of tracking_conversion's click_id index: the work is proportional
# to that day's conversions and one read of the day, never to the whole conversions table.
KEEP = (
    "s.id IN (SELECT v.click_id FROM tracking_conversion v WHERE v.click_id "
    "BETWEEN (SELECT min(id) FROM {source}) AND (SELECT max(id) FROM {source}))"
)

_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
# Table names are spliced into DDL (identifiers can't be parameters); all of them are ours.
_NAME = re.compile(r"^tracking_click_[a-z0-9_]+$")


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"Not a click partition name: {name!r}")
    return name


@dataclass(frozen=True)
class Partition:
    name: str
    lower: datetime | None  # None for the default partition
    upper: datetime | None
    compacted: bool

    @property
    def is_default(self) -> bool:
        return self.lower is None


@dataclass
class ExpireReport:
    dropped: list[str]
    compacted: list[str]
    merged: list[str]
    rows_removed: int  # from the planner's statistics (reltuples): an estimate
    cutoff: datetime | None


def _conn(using: BaseDatabaseWrapper | None) -> BaseDatabaseWrapper:
    return using or connection


def clicks_partitioned(using: BaseDatabaseWrapper | None = None) -> bool:
    """Whether `tracking_click` is a partitioned table (PostgreSQL after the migration)."""
    conn = _conn(using)
    if conn.vendor != "postgresql":
        return False
    with conn.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [PARENT])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def partitions_list(using: BaseDatabaseWrapper | None = None) -> list[Partition]:
    """Every partition of the clicks table, oldest first (the default partition last)."""
    # Bounds print in the session's time zone, which Django sets to UTC.
    with _conn(using).cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid),
                   coalesce(obj_description(c.oid, 'pg_class'), '')
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = %s::regclass
            """,
            [PARENT],
        )
        rows = cursor.fetchall()
    partitions = []
    for name, bound, comment in rows:
        match = _BOUND.search(bound)
        if match is None:
            partitions.append(Partition(name, None, None, False))
            continue
        lower, upper = (datetime.fromisoformat(value).astimezone(UTC) for value in match.groups())
        partitions.append(Partition(name, lower, upper, comment == COMPACTED))
    return sorted(
        partitions, key=lambda p: (p.lower is None, p.lower or datetime.max.replace(tzinfo=UTC))
    )


def _day_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def _day_name(day: datetime) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def _month_name(month: datetime) -> str:
    return f"{PARENT}_p{month:%Y%m}"


def _next_month(month: datetime) -> datetime:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)


def _replace(
    cursor,
    *,
    name: str,
    lower: datetime,
    upper: datetime,
    sources: list[Partition],
    keep: str | None,
    comment: str | None = None,
) -> None:
    """Make `[lower, upper)` one partition called `name` holding the rows of `sources` (and
    of the default partition in that range) that match `keep` (None: all of them).

    The new table is filled first, under no lock that blocks inserts; the short tail (detach
    the old tables, attach the new one, drop) takes the parent's lock. Run inside a
    transaction.
    """

    def where(source: str) -> str:
        return f"WHERE {keep.format(source=source)}" if keep else ""

    staging = _checked(f"{name}_new")
    # Rows moved between partitions are deleted from one table and inserted into another: the
    # trigger that protects converted clicks from deletion lets this transaction through.
    cursor.execute("SET LOCAL roundtrip.moving_clicks = 'on'")
    cursor.execute(
        f"CREATE TABLE {staging} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    # The CHECK lets ATTACH skip scanning the new table to prove its rows fit the range.
    cursor.execute(
        f"ALTER TABLE {staging} ADD CONSTRAINT {staging}_bound "
        "CHECK (created_at IS NOT NULL AND created_at >= %s AND created_at < %s)",
        [lower, upper],
    )
    for source in sources:
        table = _checked(source.name)
        cursor.execute(f"INSERT INTO {staging} SELECT * FROM {table} s {where(table)}")  # noqa: S608
    # Clicks that went to the default partition because no day covered them when they came.
    move = (
        f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created_at >= %s AND created_at < %s "  # noqa: S608
        f"RETURNING *) INSERT INTO {staging} SELECT * FROM moved s {where('moved')}"
    )
    cursor.execute(move, [lower, upper])
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    for source in sources:
        cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {source.name}")
        cursor.execute(f"DROP TABLE {source.name}")
    cursor.execute(
        f"ALTER TABLE {PARENT} ATTACH PARTITION {staging} FOR VALUES FROM (%s) TO (%s)",
        [lower, upper],
    )
    cursor.execute(f"ALTER TABLE {staging} DROP CONSTRAINT {staging}_bound")
    cursor.execute(f"ALTER TABLE {staging} RENAME TO {name}")
    if comment:
        cursor.execute(f"COMMENT ON TABLE {name} IS %s", [comment])


def partitions_ensure(
    *, now: datetime | None = None, days_ahead: int = 7, using: BaseDatabaseWrapper | None = None
) -> list[str]:
    """Create the day partitions from yesterday to `days_ahead` days from now that don't exist
    yet. Returns the names created. Safe to run any time, from several places at once (an
    advisory lock makes concurrent runs take turns)."""
    conn = _conn(using)
    today = _day_start(now or datetime.now(UTC))
    created = []
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [PARENT])
        existing = [p for p in partitions_list(conn) if not p.is_default]
        for offset in range(-1, days_ahead + 1):
            lower = today + timedelta(days=offset)
            upper = lower + timedelta(days=1)
            if any(p.lower < upper and lower < p.upper for p in existing):
                continue
            _replace(cursor, name=_day_name(lower), lower=lower, upper=upper, sources=[], keep=None)
            created.append(_day_name(lower))
    if created:
        logger.info("Created click partitions %s", ", ".join(created))
    return created


def expiry_cutoff(*, now: datetime, retention_days: int) -> datetime | None:
    """Clicks older than this may go: older than the retention and than the longest
    attribution window of any campaign (so a late conversion still finds its click), at a day
    boundary. None when retention is off (0)."""
    if retention_days <= 0:
        return None
    longest = Campaign.objects.aggregate(longest=Max("attribution_window"))["longest"]
    keep = max(timedelta(days=retention_days), (longest or timedelta(0)) + timedelta(days=1))
    return _day_start(now - keep)


def partitions_expire(
    *, now: datetime | None = None, retention_days: int, using: BaseDatabaseWrapper | None = None
) -> ExpireReport:
    """Retire the day partitions that end before the cutoff: drop, or compact to their
    converted clicks; then merge months that are entirely compacted."""
    conn = _conn(using)
    cutoff = expiry_cutoff(now=now or datetime.now(UTC), retention_days=retention_days)
    report = ExpireReport([], [], [], 0, cutoff)
    if cutoff is None:
        return report
    for partition in partitions_list(conn):
        if partition.is_default or partition.compacted or partition.upper > cutoff:
            continue
        # One transaction per day: a lock timeout loses one day's work, not the run's.
        with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [PARENT])
            cursor.execute(
                f"SELECT c.reltuples::bigint, EXISTS (SELECT 1 FROM {_checked(partition.name)} s "  # noqa: S608
                f"WHERE {KEEP.format(source=partition.name)}) "
                "FROM pg_class c WHERE c.oid = %s::regclass",
                [partition.name],
            )
            estimate, has_kept = cursor.fetchone()
            report.rows_removed += max(estimate, 0)
            if has_kept:
                _replace(
                    cursor,
                    name=partition.name,
                    lower=partition.lower,
                    upper=partition.upper,
                    sources=[partition],
                    keep=KEEP,
                    comment=COMPACTED,
                )
                report.compacted.append(partition.name)
            else:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {partition.name}")
                cursor.execute(f"DROP TABLE {partition.name}")
                report.dropped.append(partition.name)
    report.merged = _merge_compacted_months(conn, cutoff)
    logger.info(
        "Click partitions expired before %s: dropped %s, compacted %s, merged %s (~%d rows)",
        cutoff,
        report.dropped,
        report.compacted,
        report.merged,
        report.rows_removed,
    )
    return report


def _merge_compacted_months(conn: BaseDatabaseWrapper, cutoff: datetime) -> list[str]:
    """One partition per month for months that ended before the cutoff and whose partitions
    are all compacted days (days without conversions have no partition left at all)."""
    merged = []
    partitions = [p for p in partitions_list(conn) if not p.is_default]
    months: dict[datetime, list[Partition]] = {}
    for partition in partitions:
        month = partition.lower.replace(day=1)
        months.setdefault(month, []).append(partition)
    for month, members in sorted(months.items()):
        end = _next_month(month)
        whole_month = all(p.compacted and month <= p.lower and p.upper <= end for p in members)
        if end > cutoff or not whole_month or (len(members) == 1 and members[0].lower == month):
            continue
        with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [PARENT])
            _replace(
                cursor,
                name=_month_name(month),
                lower=month,
                upper=end,
                sources=members,
                keep=None,
                comment=COMPACTED,
            )
        merged.append(_month_name(month))
    return merged


def days_in_default(using: BaseDatabaseWrapper | None = None) -> list[date]:
    """UTC days that have clicks in the default partition (none, when partitions are kept
    ahead of time)."""
    with _conn(using).cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM {DEFAULT} ORDER BY 1"  # noqa: S608
        )
        return [row[0] for row in cursor.fetchall()]


def partitions_split_default(
    *, before: datetime | None = None, using: BaseDatabaseWrapper | None = None
) -> list[str]:
    """Move the default partition's clicks into day partitions of their own (after an outage
    of partition maintenance, or for the rows of a table converted by the migration)."""
    conn = _conn(using)
    created = []
    for day in days_in_default(conn):
        lower = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if before is not None and lower >= before:
            continue
        upper = lower + timedelta(days=1)
        with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [PARENT])
            if any(
                p.lower < upper and lower < p.upper
                for p in partitions_list(conn)
                if not p.is_default
            ):
                continue
            _replace(cursor, name=_day_name(lower), lower=lower, upper=upper, sources=[], keep=None)
        created.append(_day_name(lower))
    if created:
        _truncate_default_if_empty(conn)
    return created


def _truncate_default_if_empty(conn: BaseDatabaseWrapper) -> None:
    """Give back the space of the rows moved out of the default partition (a DELETE leaves
    it allocated). Under the partition's lock, so no click can arrive between the check and
    the TRUNCATE; inserts into other partitions are not blocked."""
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
        cursor.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {DEFAULT})")  # noqa: S608
        if cursor.fetchone()[0]:
            # Rows written earlier in an enclosing transaction (tests) have commit-time checks
            # pending (foreign keys, the protect trigger), and PostgreSQL won't TRUNCATE under
            # them: run those checks now, then defer again (all of ours are deferred).
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f"TRUNCATE {DEFAULT}")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")


_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # publishers.ids
# A click's id is minted when the click is built, its created_at a moment later.
ID_TIME_SLACK = timedelta(hours=1)


def click_id_time(click_id: str) -> datetime | None:
    """When a click id was minted: its first 48 bits are milliseconds (publishers.ids).
    None for anything that isn't such an id.

    >>> click_id_time("01m8mp3gbqqzn9qdgh4hbvt6c8").isoformat()
    '2026-11-29T22:16:42.103000+00:00'
    """
    if len(click_id) != 26:
        return None
    value = 0
    for char in click_id:
        digit = _ID_ALPHABET.find(char)
        if digit < 0:
            return None
        value = value * 32 + digit
    try:
        return datetime.fromtimestamp((value >> 80) / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def click_first(queryset, click_id: str):
    """`queryset.first()` for a queryset filtered on `click_id`, looking first only around the
    time the id was minted: partition pruning then reads one or two day partitions instead of
    probing every partition's index (see docs/scaling.md). A click whose created_at was set
    apart from its id (imports, tests) is still found by the unbounded second query."""
    minted = click_id_time(click_id)
    if minted is not None:
        found = queryset.filter(
            created_at__gte=minted - ID_TIME_SLACK, created_at__lt=minted + ID_TIME_SLACK
        ).first()
        if found is not None:
            return found
    return queryset.first()


def in_default_partition(queryset):
    """Narrow a Click queryset to the rows in the default partition (PostgreSQL's `tableoid`
    system column names the partition a row was read from)."""
    from django.db.models import BooleanField
    from django.db.models.expressions import RawSQL

    flag = RawSQL(  # noqa: S611 (constants only)
        f"{PARENT}.tableoid = '{DEFAULT}'::regclass", [], output_field=BooleanField()
    )
    return queryset.alias(in_default_partition=flag).filter(in_default_partition=True)


def partitions_maintain(
    *, now: datetime | None = None, days_ahead: int = 7, retention_days: int
) -> tuple[list[str], ExpireReport]:
    """Create the coming days' partitions, then retire expired days. The hourly beat task."""
    created = partitions_ensure(now=now, days_ahead=days_ahead)
    return created, partitions_expire(now=now, retention_days=retention_days)
