"""Bulk-load realistic traffic for one publisher: clicks, conversions, postbacks and attempts.
The benchmarks' dataset (bench/dashboard.py, bench/http_bench.py), not part of the product.

    DATABASE_URL=postgres://… python manage.py shell -c "from bench.dataset import \\
        dataset_generate; dataset_generate(clicks=1_000_000, owner='bench', password='bench')"

PostgreSQL only: rows go in with COPY (psycopg 3 `cursor.copy`), ids are reserved from each
table's sequence up front, then the dashboard rollups are rebuilt for the whole range. Values
follow skewed (Zipf-like) distributions over a handful of campaigns, creatives, placements,
countries, smart ads and keywords, as real traffic does. Run it on a database that isn't
taking traffic at the same time.
"""

import base64
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.db.models import NOT_PROVIDED
from django.utils import timezone

from postbacks.models import Postback, PostbackAttempt
from publishers.ids import new_id
from publishers.models import CallbackTemplate, Membership, Publisher
from tracking.models import Advertiser, Campaign, Click, Conversion, Creative, TrackingLink
from tracking.rollups import stats_pairs_build, stats_rebuild

COUNTRIES = [
    "US", "DE", "GB", "FR", "IN", "BR", "CA", "IT", "ES", "NL", "PL", "AU",
    "JP", "MX", "SE", "TR", "BE", "CH", "AT", "ID", "PH", "NG", "ZA", "AR",
]  # fmt: skip
PLACEMENTS = ["sidebar", "header", "footer", "in-article", "newsletter", "popup"]
KEYWORDS = [
    "running shoes", "flights", "hotels", "car insurance", "laptops", "vpn", "headphones",
    "mortgage", "dating", "casino", "weight loss", "credit card", "web hosting", "crypto",
    "fitness tracker", "phone case", "sunglasses", "coffee", "pet food", "mattress",
]  # fmt: skip
SMART_ADS = ["1491", "1492", "1493"]
DEVICES = ["mobile", "desktop", "tablet"]
BROWSERS = ["Chrome", "Safari", "Firefox", "Edge"]
OSES = ["Android", "iOS", "Windows", "macOS", "Linux"]

_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789abcdefghjkmnpqrstvwxyz")


def bulk_ids(n: int, prefix: str = "") -> list[str]:
    """`n` ids shaped like `publishers.ids.new_id` (the current millisecond in the first 10
    characters, 80 random bits after), made in one go: new_id's per-id loop would cost more
    than the whole COPY of a million rows."""
    head = new_id()[:10]
    tail = base64.b32encode(os.urandom(10 * n)).decode().translate(_CROCKFORD)
    return [f"{prefix}{head}{tail[16 * i : 16 * i + 16]}" for i in range(n)]


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (rank + 1) ** s for rank in range(n)]


def copy_value(value) -> str:
    """One field in COPY text format. Generated values never hold tabs, newlines or
    backslashes; NULL is \\N."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def copy_rows(model, columns: list[str], rows, chunk: int = 20_000) -> int:
    """COPY `rows` (tuples in `columns` order) into the model's table; other columns get the
    model field's Python default (fields added by other features keep working)."""
    fields = {f.column: f for f in model._meta.concrete_fields}
    extra = [
        c
        for c, f in fields.items()
        if c not in columns and c != "id" and not f.null and f.db_default is NOT_PROVIDED
    ]
    defaults = tuple(copy_value(fields[c].get_default()) for c in extra)
    names = ", ".join(connection.ops.quote_name(c) for c in [*columns, *extra])
    count = 0
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg 3 cursor
        with raw.copy(f"COPY {model._meta.db_table} ({names}) FROM STDIN") as copy:
            buffer: list[str] = []
            for row in rows:
                buffer.append("\t".join([*(copy_value(v) for v in row), *defaults]))
                count += 1
                if len(buffer) >= chunk:
                    copy.write("\n".join(buffer) + "\n")
                    buffer.clear()
            if buffer:
                copy.write("\n".join(buffer) + "\n")
    return count


def secondary_indexes_drop(model) -> list[str]:
    """Drop the table's plain (non-unique) indexes; returns their definitions. A partitioned
    table's are defined "ON ONLY" the parent: built again without ONLY, each covers every
    partition."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname, pg_get_indexdef(x.indexrelid)
              FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = %s::regclass AND NOT x.indisunique AND NOT x.indisprimary
            """,
            [model._meta.db_table],
        )
        found = cursor.fetchall()
        for name, _ in found:
            cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
    return [definition for _, definition in found]


class SecondaryIndexesDropped:
    """Drop a table's plain indexes for the duration of a bulk load and build them again
    afterwards: one sorted build is several times cheaper than a million random B-tree
    inserts. Inside the load's transaction, so a failure restores them."""

    def __init__(self, model):
        self.model = model
        self.definitions: list[str] = []

    def __enter__(self):
        self.definitions = secondary_indexes_drop(self.model)
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            return
        with connection.cursor() as cursor:
            for definition in self.definitions:
                cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))


def reserve_ids(model, n: int) -> int:
    """Take `n` consecutive ids from the table's sequence; returns the first."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [model._meta.db_table])
        sequence = cursor.fetchone()[0]
        # Held only around the two calls (sequences aren't transactional): loaders running in
        # parallel, each in its own long transaction, take turns here and nowhere else.
        cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", [sequence])
        try:
            cursor.execute(
                "SELECT setval(%s, nextval(%s) + %s - 1)", [sequence, sequence, max(n, 1)]
            )
            last = cursor.fetchone()[0]
        finally:
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [sequence])
    return last - n + 1


def dataset_generate(
    *,
    clicks: int = 100_000,
    days: int = 30,
    publisher: str = "Bench Publisher",
    owner: str = "",
    password: str = "",
    conversion_rate: float = 0.03,
    spids: int = 0,
    seed: int = 1,
    skip_rollup: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    """Load `clicks` clicks over the last `days` days for the publisher named `publisher`
    (created if new, with an owner `owner` when given), their conversions and postbacks.
    `skip_rollup` leaves the rollup rebuild to the caller (parallel loads rebuild it once)."""
    if connection.vendor != "postgresql":
        raise SystemExit("The bench dataset needs PostgreSQL (it loads rows with COPY).")
    # Reproducible test data, not secrets.
    rng = random.Random(seed)
    started = time.monotonic()

    def progress(what: str) -> None:
        log(f"  {time.monotonic() - started:6.1f}s  {what}")

    loaded_for, links, template = dataset_setup(publisher, owner=owner, password=password)
    now = timezone.now().replace(microsecond=0)
    start = now - timedelta(days=days)
    with transaction.atomic():
        _skip_foreign_key_triggers(log)
        with SecondaryIndexesDropped(Click):
            made = _clicks(rng, loaded_for, links, clicks, spids, start, now)
            progress("clicks copied")
        progress("click indexes rebuilt")
        conversions = _conversions(rng, loaded_for, made, conversion_rate, now)
        postbacks = _postbacks(rng, loaded_for, template, conversions)
        progress("conversions and postbacks copied")
    loaded = time.monotonic() - started
    if not skip_rollup:
        stats_rebuild(publisher_id=loaded_for.pk, start=start, end=now + timedelta(hours=1))
        progress("rollup rebuilt")
        stats_pairs_build(
            publisher_id=loaded_for.pk,
            first=start.astimezone(UTC).date(),
            last=now.astimezone(UTC).date(),
            until=now + timedelta(seconds=1),
        )
        progress("pair rollup rebuilt")
    with connection.cursor() as cursor:
        for table in (
            "tracking_click",
            "tracking_conversion",
            "postbacks_postback",
            "tracking_hourlystat",
            "tracking_dailypairstat",
        ):
            cursor.execute(f"ANALYZE {table}")
    log(
        f"{loaded_for.name} ({loaded_for.public_id}): {len(made)} clicks, "
        f"{len(conversions)} conversions, {postbacks} postbacks loaded in {loaded:.1f}s; "
        f"rollup rebuilt, {time.monotonic() - started:.1f}s in all."
    )


def _skip_foreign_key_triggers(log: Callable[[str], None]) -> None:
    """Generated rows reference only rows made above, so the per-row foreign-key triggers
    (deferred to commit: millions of checks queued) are pure cost. Turning them off for
    this transaction needs a superuser; without one the load is just slower."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
    except DatabaseError:
        log("  (not a superuser: foreign keys are checked row by row)")


def dataset_setup(
    name: str, *, owner: str = "", password: str = ""
) -> tuple[Publisher, list[TrackingLink], CallbackTemplate]:
    """The publisher named `name` with its links and callback, made on first use."""
    publisher, _ = Publisher.objects.get_or_create(name=name)
    if owner:
        user_model = get_user_model()
        user = user_model.objects.filter(username=owner).first()
        if user is None:
            user = user_model.objects.create_user(owner, password=password or None)
        Membership.objects.get_or_create(
            publisher=publisher, user=user, defaults={"role": Membership.Role.OWNER}
        )
    links = list(TrackingLink.objects.filter(publisher=publisher).select_related("campaign"))
    if not links:
        advertiser, _ = Advertiser.objects.get_or_create(name="Bench Advertiser")
        for number, campaign_name in enumerate(
            ["Summer Sale", "VPN Pro", "Flights+", "Casino Royal"]
        ):
            campaign = Campaign.objects.create(
                advertiser=advertiser,
                name=campaign_name,
                landing_url="https://advertiser.example/landing?click_id=[click_id]",
                default_payout=Decimal("1.50") + number,
            )
            for variant in ("A", "B", "C"):
                Creative.objects.create(campaign=campaign, name=f"{campaign_name} {variant}")
            links.append(
                TrackingLink.objects.create(
                    publisher=publisher, campaign=campaign, name=f"{campaign_name} link"
                )
            )
    template = CallbackTemplate.objects.filter(publisher=publisher).first()
    if template is None:
        template = CallbackTemplate.objects.create(
            publisher=publisher,
            name="main",
            url_template="https://postback.example/cb?spid=[spid]&payout=[payout]",
        )
    return publisher, links, template


def _clicks(rng, publisher, links, n: int, spids: int, start, now) -> list[tuple]:
    creatives = {
        link.pk: list(
            Creative.objects.filter(campaign=link.campaign_id).values_list("pk", flat=True)
        )
        for link in links
    }
    first_id = reserve_ids(Click, n)
    span = (now - start).total_seconds()
    # Traffic grows a little over the period and has a daily rhythm.
    offsets = sorted(span * (rng.random() ** 0.85) for _ in range(n))
    picks = {
        "link": rng.choices(links, zipf_weights(len(links), 0.8), k=n),
        "country": rng.choices(COUNTRIES, zipf_weights(len(COUNTRIES)), k=n),
        "placement": rng.choices(PLACEMENTS, zipf_weights(len(PLACEMENTS)), k=n),
        "keyword": rng.choices(KEYWORDS, zipf_weights(len(KEYWORDS)), k=n),
        "smart": rng.choices(SMART_ADS, k=n),
        "device": rng.choices(DEVICES, [6, 3, 1], k=n),
    }
    spid_count = spids or max(1, n // 3)
    clicks = []  # (pk, click time, link, spid, dimensions): what conversions need
    click_ids = bulk_ids(n)

    def rows():
        for i in range(n):
            link = picks["link"][i]
            smart = rng.random() < 0.4
            created_at = start + timedelta(seconds=offsets[i])
            spid = f"u{rng.randrange(spid_count):08d}"
            pk = first_id + i
            choices = creatives[link.pk]
            creative = rng.choice(choices) if choices and rng.random() < 0.8 else None
            # The report dimensions a conversion of this click copies, in
            # Conversion.CLICK_COPIES order.
            dimensions = (
                created_at,
                picks["country"][i],
                picks["placement"][i],
                creative,
                picks["smart"][i] if smart else "",
                picks["keyword"][i] if smart else "",
            )
            clicks.append((pk, created_at, link, spid, dimensions))
            yield (
                pk,
                click_ids[i],
                link.pk,
                publisher.pk,
                link.campaign_id,
                creative,
                spid,
                dimensions[2],
                dimensions[4],
                dimensions[5],
                dimensions[1],
                picks["device"][i],
                rng.choice(OSES),
                rng.choice(BROWSERS),
                f"198.51.{rng.randrange(256)}.{rng.randrange(256)}",
                "Mozilla/5.0 (bench)",
                "https://publisher.example/page",
                created_at,
            )

    copy_rows(
        Click,
        [
            "id", "click_id", "link_id", "publisher_id", "campaign_id", "creative_id",
            "spid", "placement", "smart_ad_id", "keyword", "country", "device", "os",
            "browser", "ip", "user_agent", "referer", "created_at",
        ],
        rows(),
    )  # fmt: skip
    return clicks


def _conversions(rng, publisher, clicks, rate: float, now) -> list[tuple]:
    chosen = [c for c in clicks if rng.random() < rate]
    first_id = reserve_ids(Conversion, len(chosen))
    advertisers = dict(Campaign.objects.values_list("pk", "advertiser_id"))
    payouts = dict(Campaign.objects.values_list("pk", "default_payout"))
    conversions = []
    public_ids = bulk_ids(len(chosen), "cnv_")

    def rows():
        for i, (click_pk, click_time, link, spid, dimensions) in enumerate(chosen):
            delay = timedelta(seconds=min(rng.expovariate(1 / 7200), 6 * 86400))
            created_at = min(click_time + delay, now)
            status = rng.choices(["approved", "pending", "rejected"], [85, 10, 5])[0]
            pk = first_id + i
            conversions.append((pk, created_at, spid, status))
            payout = payouts[link.campaign_id]
            yield (
                pk, public_ids[i], click_pk, publisher.pk, advertisers[link.campaign_id],
                link.campaign_id, "conversion", "", status, payout, None, "USD",
                created_at, created_at, *dimensions,
            )  # fmt: skip

    copy_rows(
        Conversion,
        [
            "id", "public_id", "click_id", "publisher_id", "advertiser_id", "campaign_id",
            "event", "txn_id", "status", "payout", "revenue", "currency", "created_at",
            "updated_at", *(Conversion._meta.get_field(f).column for f in Conversion.CLICK_COPIES),
        ],
        rows(),
    )  # fmt: skip
    return conversions


def _postbacks(rng, publisher, template, conversions) -> int:
    approved = [c for c in conversions if c[3] == "approved"]
    first_id = reserve_ids(Postback, len(approved))
    outcomes = rng.choices(["succeeded", "failed", "pending"], [95, 2, 3], k=len(approved))
    attempts = []
    # Waiting retries are due later, so a worker pointed at this database stays calm.
    retry_at = timezone.now() + timedelta(hours=6)
    event_ids = bulk_ids(len(approved), "evt_")

    def rows():
        for i, (conversion_pk, created_at, spid, _) in enumerate(approved):
            pk = first_id + i
            status = outcomes[i]
            url = f"https://postback.example/cb?spid={spid}&payout=2.50"
            tries = 1 if status == "succeeded" else rng.randint(1, 4)
            code = 200 if status == "succeeded" else 503
            attempts.extend(
                (pk, n, created_at + timedelta(seconds=5 * n), url, code, status, n == tries)
                for n in range(1, tries + 1)
            )
            yield (
                pk, event_ids[i], conversion_pk, template.pk, publisher.pk, "approved",
                url, status, tries, retry_at if status == "pending" else created_at, None,
                code, "" if status == "succeeded" else f"HTTP {code}", created_at,
                created_at + timedelta(seconds=1) if status == "succeeded" else None,
            )  # fmt: skip

    copy_rows(
        Postback,
        [
            "id", "event_id", "conversion_id", "template_id", "publisher_id",
            "conversion_status", "url", "status", "attempts", "next_attempt_at",
            "leased_until", "last_status_code", "last_error", "created_at", "delivered_at",
        ],
        rows(),
    )  # fmt: skip

    def attempt_rows():
        for postback_pk, number, started_at, url, code, status, last in attempts:
            if code == 200:
                outcome = "success"
            else:
                outcome = "failed" if last and status == "failed" else "retry"
            body = "ok" if code == 200 else "Service Unavailable"
            yield (
                postback_pk, number, started_at, rng.randint(20, 400), url, code, body,
                "", "" if code == 200 else f"HTTP {code}", "203.0.113.10", outcome,
            )  # fmt: skip

    copy_rows(
        PostbackAttempt,
        [
            "postback_id", "number", "started_at", "duration_ms", "url", "status_code",
            "response_excerpt", "error_kind", "error", "resolved_ip", "outcome",
        ],
        attempt_rows(),
    )  # fmt: skip
    return len(approved)
