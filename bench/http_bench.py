"""Click redirect, conversion intake and growth benchmarks (issue: fast where it matters).

Runs on PostgreSQL + Redis with production settings (DEBUG off; `bench.settings` adds only the
bare-Django baseline URL and lifts the per-key intake limit), on the web server exactly as `deploy/systemd/roundtrip-redirect.service`
starts it (bench/prod.py). Every figure is the median of `--repeat` wrk runs; the variants of a
measurement run side by side (each on its own server, started once, then measured in turn run
after run), so ratios are meaningful on a noisy shared machine. Results go to
var/bench/http.json (docs/performance.md is rendered from it by bench/report.py).

Two stages, so `make bench` can put the 10 M-click load last (bench/run.py):

    python bench/http_bench.py base                      # fresh database: click + baselines,
                                                         # intake, growth at 0 clicks
    python bench/http_bench.py growth --clicks 1000000   # growth row at 1 M clicks
    python bench/http_bench.py growth --clicks 10000000

Growth datasets live in databases of their own (`<bench database>_1m`, `_10m`), loaded once
with bench/dataset.py (COPY, several loaders in parallel, the clicks table's
secondary indexes built once at the end) and kept between runs: a dataset is reused only if
its marker (clicks, generator version, load time) matches and the table holds exactly that
many generated clicks. The dashboard benchmark reads the 1 M dataset.
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import prod  # noqa: E402

BIN = Path(sys.executable).parent
OUT = ROOT / "var" / "bench"
RESULTS = OUT / "http.json"
GENERATOR = ROOT / "bench" / "dataset.py"
DATASET_PUBLISHER = "Bench Publisher"
DATASET_DAYS = 30
# Bump when the way a dataset is built changes (what the marker can't see from the generator).
DATASET_FORMAT = 2
# Session settings for bulk loads and index builds (libpq reads PGOPTIONS): memory for sorts,
# no WAL-flush wait per commit. Only the loading sessions get them.
LOAD_PGOPTIONS = "-c maintenance_work_mem=1GB -c work_mem=256MB -c synchronous_commit=off"
# tracking.clickbuffer.STREAM (not imported: this process doesn't set Django up).
CLICK_STREAM = "roundtrip:clicks"


def wait_http(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


class Env:
    def __init__(self, database_url: str, redis_url: str):
        self.database_url = database_url
        self.redis_url = redis_url

    def on(self, database_url: str) -> "Env":
        return Env(database_url, self.redis_url)

    def vars(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.redis_url,
            "POSTBACKS_ALLOW_PRIVATE_DESTINATIONS": "true",
            "PYTHONPATH": str(ROOT),
            **extra,
        }

    def manage_argv(self, *args: str) -> list[str]:
        return [str(BIN / "python"), "manage.py", *args]

    def manage(self, *args: str, **extra: str) -> str:
        result = subprocess.run(
            self.manage_argv(*args),
            cwd=ROOT,
            env=self.vars(**extra),
            capture_output=True,
            text=True,
        )
        if result.returncode:
            sys.stderr.write(result.stdout + result.stderr)
            raise subprocess.CalledProcessError(result.returncode, ["manage.py", *args])
        return result.stdout

    def shell(self, code: str, **extra: str) -> str:
        return self.manage("shell", "-c", code, **extra)

    def shell_json(self, code: str, **extra: str):
        """What the code printed last, as JSON (anything logged before is skipped)."""
        return json.loads(self.shell(code, **extra).strip().splitlines()[-1])


# --- Servers and load -------------------------------------------------------------------------


@contextlib.contextmanager
def server(kind: str, app: str, env: dict[str, str]):
    port = prod.free_port()
    if kind == "gunicorn":  # for comparison with the production server (docs/deploy.md)
        cmd = [str(BIN / "gunicorn"), app, "--bind", f"127.0.0.1:{port}", "--workers", "4",
               "--worker-class", "gthread", "--threads", "4", "--log-level", "warning"]  # fmt: skip
    else:
        cmd = prod.web_argv(port, app)
    OUT.mkdir(parents=True, exist_ok=True)
    log = (OUT / "server.log").open("a")  # errors, if any, are kept for inspection
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_http(port)
        time.sleep(0.5)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@contextlib.contextmanager
def flusher(env: Env):
    """The click buffer's flusher runs during click benchmarks: its cost is part of the price."""
    proc = subprocess.Popen(
        [str(BIN / "python"), "manage.py", "flush_clicks", "--loop"],
        cwd=ROOT, env=env.vars(), start_new_session=True,
    )  # fmt: skip
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def wrk(url: str, seconds: float, connections: int = 32, script: list[str] | None = None) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    if script:
        cmd += ["-s", script[0], url, "--", *script[1:]]
    else:
        cmd.append(url)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(label: str) -> float:
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"),
            "errors": int(non2xx.group(1)) if non2xx else 0}  # fmt: skip


def median_of(runs: list[dict]) -> dict:
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "runs": [round(r["rps"]) for r in runs],
    }


def wait_buffer_flushed(env: Env, timeout: float = 30.0) -> None:
    """After a buffered-click run, let the flusher finish before the next variant is measured
    (its work belongs to the buffered figure, not to whatever runs next)."""
    client = redis.Redis.from_url(env.redis_url)
    deadline = time.monotonic() + timeout
    while client.xlen(CLICK_STREAM) and time.monotonic() < deadline:
        time.sleep(0.1)


# --- Databases --------------------------------------------------------------------------------


def _admin(url: str) -> psycopg.Connection:
    base = url.rsplit("/", 1)[0]
    return psycopg.connect(f"{base}/postgres", autocommit=True)


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]


def reset_database(url: str, template: str | None = None) -> None:
    name = _name(url)
    with _admin(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if template:
            # A template must have no other session; ours are gone by now, but make sure.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [template],
            )
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')


def database_comment(url: str) -> dict | None:
    with _admin(url) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [_name(url)],
        ).fetchone()
    if row is None:
        return None
    try:
        return json.loads(row[0] or "null")
    except ValueError:
        return None


def set_database_comment(url: str, value: dict) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        literal = json.dumps(value).replace("'", "''")
        conn.execute(f"COMMENT ON DATABASE \"{_name(url)}\" IS '{literal}'")


SEED = """
from publishers.models import CallbackTemplate, Publisher
pub = Publisher.objects.get(name="Demo Publisher")
# The demo's JSON webhook too would make three postbacks per conversion, not the two measured.
CallbackTemplate.objects.filter(publisher=pub, name="Demo JSON webhook").delete()
CallbackTemplate.objects.get_or_create(publisher=pub, name="second",
    defaults={"url_template": "http://127.0.0.1:9/second?s=[spid]&e=[event_id]"})
"""


def prepare(env: Env) -> dict:
    """Schema, the demo publisher whose link the click benchmarks hit, a second template (a
    conversion makes two postbacks)."""
    env.manage("migrate", "-v", "0")
    seed = json.loads(env.manage("seed_demo", "--json"))
    env.shell(SEED)
    return seed


# --- Growth datasets --------------------------------------------------------------------------


def dataset_label(clicks: int) -> str:
    if clicks % 1_000_000 == 0:
        return f"{clicks // 1_000_000}m"
    return f"{clicks // 1000}k" if clicks % 1000 == 0 else str(clicks)


def dataset_url(base_url: str, clicks: int) -> str:
    base, rest = base_url.rsplit("/", 1)
    name, _, query = rest.partition("?")
    return f"{base}/{name}_{dataset_label(clicks)}" + (f"?{query}" if query else "")


def dataset_marker(clicks: int) -> dict:
    return {
        "clicks": clicks,
        "days": DATASET_DAYS,
        "format": DATASET_FORMAT,
        "generator": hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:16],
    }


CHECK = """
import json
from django.db import connection
from publishers.models import Publisher
from tracking.models import Click, Conversion
pub = Publisher.objects.filter(name=%r).first()
out = {"clicks": 0, "conversions": 0, "others": 0}
if pub is not None:
    # Clicks the growth benchmark made on the demo link (never converted) go: the table holds
    # the dataset and nothing else when a measurement starts.
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM tracking_click c WHERE c.publisher_id <> %%s AND NOT EXISTS "
            "(SELECT 1 FROM tracking_conversion v WHERE v.click_id = c.id)", [pub.pk])
    out = {"clicks": Click.objects.filter(publisher=pub).count(),
           "conversions": Conversion.objects.filter(publisher=pub).count(),
           "others": Click.objects.exclude(publisher=pub).count()}
print(json.dumps(out))
"""


def dataset_check(env: Env, clicks: int, max_age_hours: float) -> str | None:
    """Why the dataset can't be reused (None: it can)."""
    marker = database_comment(env.database_url)
    if marker is None:
        return "no dataset yet"
    loaded_at = marker.pop("loaded_at", 0)
    marker.pop("load_seconds", None)
    if marker != dataset_marker(clicks):
        return f"built differently ({marker})"
    if time.time() - loaded_at > max_age_hours * 3600:
        return f"older than {max_age_hours:g} h (its 30 days of clicks no longer end today)"
    try:
        env.manage("migrate", "-v", "0")
        env.shell("from tracking.partitions import partitions_ensure; partitions_ensure()")
        found = env.shell_json(CHECK % DATASET_PUBLISHER)
    except subprocess.CalledProcessError as exc:
        return f"check failed: {exc}"
    if found["clicks"] != clicks or not found["conversions"] or found["others"]:
        return f"holds {found}"
    return None


SETUP = """
import json
from bench.dataset import dataset_setup
from tracking.partitions import partitions_ensure
from django.utils import timezone
from datetime import timedelta
# Day partitions for the whole range, as partition maintenance keeps them in production (rows
# of days without one would all land in the default partition).
partitions_ensure(now=timezone.now() - timedelta(days=%d), days_ahead=%d)
publisher, links, template = dataset_setup(%r, owner="bench", password="bench")
print(json.dumps({"publisher": publisher.pk}))
"""

# One loader: its share of the clicks, without the rollup (rebuilt once at the end).
LOAD = """
from bench.dataset import dataset_generate
dataset_generate(clicks=%d, days=%d, publisher=%r, seed=%d, skip_rollup=True)
"""

DROP_INDEXES = """
import json
from bench.dataset import secondary_indexes_drop
from tracking.models import Click
print(json.dumps(secondary_indexes_drop(Click)))
"""

FINISH = """
from datetime import timedelta
from django.db import connection
from django.utils import timezone
from tracking.rollups import stats_rebuild
now = timezone.now()
stats_rebuild(publisher_id=%d, start=now - timedelta(days=%d, hours=1), end=now + timedelta(hours=1))
with connection.cursor() as cursor:
    for table in ("tracking_conversion", "postbacks_postback", "postbacks_postbackattempt",
                  "tracking_hourlystat"):
        cursor.execute(f"VACUUM ANALYZE {table}")
"""


def _build_index(url: str, definition: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        # Defined "ON ONLY" the partitioned parent; built without ONLY it covers every partition.
        conn.execute(definition.replace(" ON ONLY ", " ON ", 1))


def dataset_load(env: Env, clicks: int, start_from: int, loaders: int) -> None:
    """Add `clicks - start_from` generated clicks with `loaders` bench/dataset.py processes at
    once (the clicks table's secondary indexes dropped meanwhile and built once at the end, in
    parallel sessions; the rollup rebuilt once)."""
    started = time.monotonic()

    def step(what: str) -> None:
        print(f"  {time.monotonic() - started:6.1f}s  {what}", flush=True)

    setup = env.shell_json(SETUP % (DATASET_DAYS + 1, DATASET_DAYS + 8, DATASET_PUBLISHER))
    definitions = env.shell_json(DROP_INDEXES)
    todo = clicks - start_from
    shares = [todo // loaders + (1 if i < todo % loaders else 0) for i in range(loaders)]
    procs = []
    for i, share in enumerate(shares):
        argv = env.manage_argv(
            "shell", "-c", LOAD % (share, DATASET_DAYS, DATASET_PUBLISHER, clicks + start_from + i)
        )
        log = (OUT / f"generate-{dataset_label(clicks)}-{i}.log").open("w")
        procs.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env.vars(PGOPTIONS=LOAD_PGOPTIONS),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    if any(proc.wait() for proc in procs):
        raise SystemExit(f"bench/dataset.py failed: see {OUT}/generate-*.log")
    step(f"{todo:,} clicks copied by {loaders} loaders")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda d: _build_index(env.database_url, d), definitions))
    step("click indexes built")
    env.shell(FINISH % (setup["publisher"], DATASET_DAYS), PGOPTIONS=LOAD_PGOPTIONS)
    step("rollup rebuilt")
    with psycopg.connect(env.database_url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("VACUUM ANALYZE tracking_click")
    step("clicks vacuumed")


def dataset_ensure(base: Env, clicks: int, *, max_age_hours: float, loaders: int) -> tuple:
    """The Env of a database holding exactly `clicks` generated clicks (reused or loaded now),
    and how it was had."""
    env = base.on(dataset_url(base.database_url, clicks))
    why = dataset_check(env, clicks, max_age_hours)
    if why is None:
        marker = database_comment(env.database_url)
        print(f"reusing {_name(env.database_url)} ({clicks:,} clicks)", flush=True)
        return env, {"reused": True, "loaded_at": marker["loaded_at"],
                     "load_seconds": marker.get("load_seconds")}  # fmt: skip
    print(f"loading {_name(env.database_url)}: {why}", flush=True)
    started = time.monotonic()
    # Start from the largest smaller dataset that is reusable as it is (a copy of its files).
    start_from, template = 0, None
    for smaller in (1_000_000, 100_000):
        smaller_env = base.on(dataset_url(base.database_url, smaller))
        if smaller < clicks and dataset_check(smaller_env, smaller, max_age_hours) is None:
            start_from, template = smaller, _name(smaller_env.database_url)
            break
    reset_database(env.database_url, template)
    if template is None:
        prepare(env)
    else:
        env.manage("migrate", "-v", "0")
    dataset_load(env, clicks, start_from, loaders)
    seconds = round(time.monotonic() - started, 1)
    loaded_at = time.time()
    set_database_comment(
        env.database_url,
        {**dataset_marker(clicks), "loaded_at": loaded_at, "load_seconds": seconds},
    )
    print(f"loaded {clicks:,} clicks in {seconds:.0f}s (from {start_from:,})", flush=True)
    return env, {"reused": False, "loaded_at": loaded_at, "load_seconds": seconds,
                 "started_from": start_from}  # fmt: skip


# --- Measurements -----------------------------------------------------------------------------

CLICK_IDS = """
import sys
from tracking.models import Click, TrackingLink
link = TrackingLink.objects.get(code="demo")
clicks = [Click(link=link, publisher_id=link.publisher_id, campaign_id=link.campaign_id,
                spid=f"bench-{i}") for i in range(2000)]
Click.objects.bulk_create(clicks)
sys.stdout.write("\\n".join(c.click_id for c in clicks))
"""

VARIANTS = {
    "plain_wsgi": ("bench.baselines:plain_wsgi", "/", {}),
    "bare_django": ("config.wsgi:application", "/bench/bare", {}),
    "click_buffered": ("config.wsgi:application", "/click?ref=demo&spid=bench%20spid",
                       {"CLICKS_BUFFERED": "true"}),
    "click_direct": ("config.wsgi:application", "/click?ref=demo&spid=bench%20spid",
                     {"CLICKS_BUFFERED": "false"}),
}  # fmt: skip


def bench_click(
    env: Env, seconds: float, repeat: int, server_kind: str, only: tuple[str, ...] = ()
) -> dict:
    """Plain WSGI vs bare Django vs /click (buffered and direct): one server per variant,
    started once; then `repeat` rounds, each measuring every variant in turn."""
    variants = {name: spec for name, spec in VARIANTS.items() if not only or name in only}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with contextlib.ExitStack() as stack:
        if "click_buffered" in variants:
            stack.enter_context(flusher(env))
        urls = {}
        for name, (app, path, extra) in variants.items():
            port = stack.enter_context(server(server_kind, app, env.vars(**extra)))
            urls[name] = f"http://127.0.0.1:{port}{path}"
        for name, url in urls.items():
            wrk(url, 2)  # warm-up: imports, connections, caches
            if name == "click_buffered":
                wait_buffer_flushed(env)
        for _ in range(repeat):
            for name, url in urls.items():
                runs[name].append(wrk(url, seconds))
                if name == "click_buffered":
                    wait_buffer_flushed(env)
    return {name: median_of(r) for name, r in runs.items()}


def bench_intake(env: Env, seconds: float, repeat: int, server_kind: str, key: str) -> dict:
    ids_file = Path(tempfile.mkstemp(prefix="click-ids-")[1])
    ids_file.write_text(env.shell(CLICK_IDS))
    script = [str(ROOT / "bench" / "intake.lua"), str(ids_file), key]
    runs = []
    try:
        with server(server_kind, "config.wsgi:application", env.vars()) as port:
            url = f"http://127.0.0.1:{port}"
            wrk(url, 2, script=script)  # warm-up
            for _ in range(repeat):
                runs.append(wrk(url, seconds, script=script))
    finally:
        ids_file.unlink()
    return median_of(runs)


REPORT_QUERY = """
import statistics, time
from datetime import timedelta
from django.utils import timezone
from publishers.models import Publisher
from tracking.models import Click
from tracking.selectors import ReportParams, report
pub = Publisher.objects.filter(name="Bench Publisher").first()
timings = {}
if pub is not None:
    today = timezone.now().date()
    for group in ("day", "country", "placement"):
        params = ReportParams(start=today - timedelta(days=29), end=today, group_by=group)
        report(pub, params)  # warm-up
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            report(pub, params)
            runs.append((time.perf_counter() - started) * 1000)
        timings[group] = round(statistics.median(runs), 1)
print(__import__("json").dumps({"clicks_in_table": Click.objects.count(), "report_ms": timings}))
"""


def bench_growth_at(env: Env, size: int, seconds: float, repeat: int, server_kind: str) -> dict:
    """Click cost and the dashboard's report query with the clicks table at one size."""
    env.shell(
        "from django.db import connection; "
        "connection.cursor().execute('VACUUM ANALYZE tracking_click')"
    )
    query = env.shell_json(REPORT_QUERY)
    clicks = bench_click(env, seconds, repeat, server_kind,
                         only=("bare_django", "click_buffered", "click_direct"))  # fmt: skip
    row = {"target_clicks": size, **query, "click": clicks, "seconds": seconds}
    print(json.dumps(row), flush=True)
    return row


# --- Stages -----------------------------------------------------------------------------------


def stage_base(args: argparse.Namespace, env: Env) -> None:
    """Fresh database: the growth row at 0 clicks (report query on an empty table), then click
    and baselines (whose figures are also that row's), then intake."""
    reset_database(env.database_url)
    redis.Redis.from_url(env.redis_url).flushdb()  # no stale buffered clicks or queued tasks
    seed = prepare(env)
    env.shell(f"from publishers.models import Publisher; "
              f"Publisher.objects.get_or_create(name={DATASET_PUBLISHER!r})")  # fmt: skip
    env.shell(
        "from django.db import connection; "
        "connection.cursor().execute('VACUUM ANALYZE tracking_click')"
    )
    query = env.shell_json(REPORT_QUERY)
    results: dict = {
        "server": prod.web_summary() if args.server == "unit" else args.server,
        "seconds": args.seconds,
        "repeat": args.repeat,
    }
    print("click redirect ...", flush=True)
    results["click"] = bench_click(env, args.seconds, args.repeat, args.server)
    print(json.dumps(results["click"], indent=1), flush=True)
    growth_variants = ("bare_django", "click_buffered", "click_direct")
    results["growth"] = [
        {
            "target_clicks": 0,
            **query,
            "click": {name: results["click"][name] for name in growth_variants},
            "dataset": None,
        }
    ]
    print("conversion intake ...", flush=True)
    results["intake"] = bench_intake(
        env, args.seconds, args.repeat, args.server, seed["advertiser_api_key"]
    )
    print(json.dumps(results["intake"], indent=1), flush=True)
    save(results)


def stage_growth(args: argparse.Namespace, env: Env) -> None:
    redis.Redis.from_url(env.redis_url).flushdb()
    dataset_env, how = dataset_ensure(
        env, args.clicks, max_age_hours=args.max_age_hours, loaders=args.loaders
    )
    prepare(dataset_env)  # the demo link the click benchmarks hit (idempotent)
    print(f"growth at {args.clicks:,} clicks ...", flush=True)
    row = bench_growth_at(dataset_env, args.clicks, args.seconds, args.repeat, args.server)
    row["dataset"] = how
    # Leave the dataset as loaded (the dashboard benchmark and the next run reuse it).
    dataset_env.shell(CHECK % DATASET_PUBLISHER)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"growth": []}
    growth = [r for r in results.get("growth", []) if r["target_clicks"] != args.clicks]
    results["growth"] = sorted([*growth, row], key=lambda r: r["target_clicks"])
    save(results)


def stage_dataset(args: argparse.Namespace, env: Env) -> None:
    dataset_env, how = dataset_ensure(
        env, args.clicks, max_age_hours=args.max_age_hours, loaders=args.loaders
    )
    print(json.dumps({"database_url": dataset_env.database_url, **how}))


def save(results: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["base", "growth", "dataset"])
    parser.add_argument("--clicks", type=int, default=1_000_000, help="growth/dataset size")
    parser.add_argument("--quick", action="store_true", help="shorter wrk runs")
    parser.add_argument("--server", default="unit", choices=["unit", "gunicorn"],
                        help="unit: as deploy/systemd/roundtrip-redirect.service starts it")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument("--loaders", type=int, default=max(2, os.cpu_count() or 2),
                        help="bench/dataset.py processes loading a dataset at once")  # fmt: skip
    parser.add_argument("--max-age-hours", type=float, default=36.0,
                        help="reload a dataset older than this")  # fmt: skip
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/roundtrip_bench"))  # fmt: skip
    parser.add_argument("--redis-url", default=os.environ.get(
        "BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.seconds = 2.0
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    # A stopped benchmark (Ctrl-C, SIGTERM) still stops the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = Env(args.database_url, args.redis_url)
    {"base": stage_base, "growth": stage_growth, "dataset": stage_dataset}[args.stage](args, env)


if __name__ == "__main__":
    main()
