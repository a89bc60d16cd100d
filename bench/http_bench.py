"""Click redirect, conversion intake and growth benchmarks (issue: fast where it matters).

Runs on PostgreSQL + Redis with production settings (DEBUG off; `bench.settings` adds only the
bare-Django baseline URL). Every figure is the median of `--repeat` wrk runs, and each endpoint is
measured side by side with its baselines in the same run, so ratios are meaningful on a noisy
shared machine. Results go to var/bench/http.json (docs/performance.md is rendered from it by
bench/report.py).

    python bench/http_bench.py            # full run (about 8 minutes)
    python bench/http_bench.py --quick    # shorter runs, growth only to 1 M clicks
"""

import argparse
import contextlib
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
BIN = Path(sys.executable).parent
OUT = ROOT / "var" / "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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

    def manage(self, *args: str, **extra: str) -> str:
        result = subprocess.run(
            [str(BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=self.vars(**extra),
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout


@contextlib.contextmanager
def server(kind: str, app: str, env: dict[str, str]):
    port = free_port()
    if kind == "granian":
        cmd = [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port",
               str(port), "--workers", "2", "--blocking-threads", "2", "--no-ws", "--log-level",
               "warning", app]  # fmt: skip
    else:
        cmd = [str(BIN / "gunicorn"), app, "--bind", f"127.0.0.1:{port}", "--workers", "4",
               "--worker-class", "gthread", "--threads", "4", "--log-level", "warning"]  # fmt: skip
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


def wrk(url: str, seconds: int, connections: int = 32, script: list[str] | None = None) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
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


def reset_database(url: str) -> None:
    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


SEED = """
from publishers.models import CallbackTemplate, Publisher
pub = Publisher.objects.get(name="Demo Publisher")
CallbackTemplate.objects.get_or_create(publisher=pub, name="second",
    defaults={"url_template": "http://127.0.0.1:9/second?s=[spid]&e=[event_id]"})
"""

CLICK_IDS = """
import sys
from tracking.models import Click, TrackingLink
link = TrackingLink.objects.get(code="demo")
clicks = [Click(link=link, publisher_id=link.publisher_id, campaign_id=link.campaign_id,
                spid=f"bench-{i}") for i in range(2000)]
Click.objects.bulk_create(clicks)
sys.stdout.write("\\n".join(c.click_id for c in clicks))
"""


def bench_click(
    env: Env, seconds: int, repeat: int, server_kind: str, only: tuple[str, ...] = ()
) -> dict:
    """Plain WSGI vs bare Django vs /click (buffered and direct), interleaved per repetition."""
    variants = {
        "plain_wsgi": ("bench.baselines:plain_wsgi", "/", {}),
        "bare_django": ("config.wsgi:application", "/bench/bare", {}),
        "click_buffered": ("config.wsgi:application", "/click?ref=demo&spid=bench%20spid",
                           {"CLICKS_BUFFERED": "true"}),
        "click_direct": ("config.wsgi:application", "/click?ref=demo&spid=bench%20spid",
                         {"CLICKS_BUFFERED": "false"}),
    }  # fmt: skip
    if only:
        variants = {name: spec for name, spec in variants.items() if name in only}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, (app, path, extra) in variants.items():
            ctx = flusher(env) if name == "click_buffered" else contextlib.nullcontext()
            with ctx, server(server_kind, app, env.vars(**extra)) as port:
                wrk(f"http://127.0.0.1:{port}{path}", 2)  # warm-up
                runs[name].append(wrk(f"http://127.0.0.1:{port}{path}", seconds))
    return {name: median_of(r) for name, r in runs.items()}


def bench_intake(env: Env, seconds: int, repeat: int, server_kind: str, key: str) -> dict:
    ids_file = Path(tempfile.mkstemp(prefix="click-ids-")[1])
    ids_file.write_text(env.manage("shell", "-c", CLICK_IDS))
    runs = []
    try:
        for _ in range(repeat):
            with server(server_kind, "config.wsgi:application", env.vars()) as port:
                script = [str(ROOT / "bench" / "intake.lua"), str(ids_file), key]
                runs.append(wrk(f"http://127.0.0.1:{port}", seconds, script=script))
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


def bench_growth(env: Env, seconds: int, repeat: int, server_kind: str, sizes: list[int]) -> list:
    """Click cost and report query time as the clicks table grows (rows loaded with COPY)."""
    rows = []
    loaded = 0
    for size in sizes:
        if size > loaded:
            print(f"loading clicks up to {size:,} ...", flush=True)
            env.manage("generate_clicks", "--clicks", str(size - loaded), "--days", "30",
                       "--seed", str(size))  # fmt: skip
            loaded = size
        env.manage("shell", "-c", "from django.db import connection; "
                   "connection.cursor().execute('VACUUM ANALYZE tracking_click')")  # fmt: skip
        query = json.loads(env.manage("shell", "-c", REPORT_QUERY).strip().splitlines()[-1])
        clicks = bench_click(env, seconds, repeat, server_kind, only=("bare_django",
                             "click_buffered", "click_direct"))  # fmt: skip
        rows.append({"target_clicks": size, **query, "click": clicks})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server", default="granian", choices=["granian", "gunicorn"])
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/roundtrip_bench"))  # fmt: skip
    parser.add_argument("--redis-url", default=os.environ.get(
        "BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))  # fmt: skip
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    seconds, repeat = (5, 3) if args.quick else (8, 3)
    env = Env(args.database_url, args.redis_url)
    reset_database(args.database_url)
    redis.Redis.from_url(args.redis_url).flushdb()  # no stale buffered clicks or queued tasks
    env.manage("migrate", "-v", "0")
    seed = json.loads(env.manage("seed_demo", "--json"))
    env.manage("shell", "-c", SEED)

    results: dict = {"server": args.server, "seconds": seconds, "repeat": repeat}
    print("click redirect ...", flush=True)
    results["click"] = bench_click(env, seconds, repeat, args.server)
    print(json.dumps(results["click"], indent=1), flush=True)
    print("conversion intake ...", flush=True)
    results["intake"] = bench_intake(env, seconds, repeat, args.server, seed["advertiser_api_key"])
    print(json.dumps(results["intake"], indent=1), flush=True)
    sizes = [0, 1_000_000] if args.quick else [0, 1_000_000, 10_000_000]
    results["growth"] = bench_growth(env, max(3, seconds // 2), repeat, args.server, sizes)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "http.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT / 'http.json'}")


if __name__ == "__main__":
    main()
