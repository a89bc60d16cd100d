"""Isolation benchmark: a burst on one path must not slow the click redirect (issue 23).

The deployed layout, started from `deploy/`: the three web pools as their systemd units start
them (bench/prod.py: redirect, API, portal, sizes from deploy/roundtrip.env.example), nginx with
deploy/nginx/roundtrip.conf in front (each pool's upstream pointed at 127.0.0.1), the click
flusher, PostgreSQL and Redis, production settings (`config.settings`, DEBUG off, the per-caller
limits at their documented values). No Celery worker: conversions queue their postbacks in
Redis, which is all the web side does; the worker's cost is docs/performance.md's dispatch
benchmark.

Three phases, `--repeat` times in turn, each `--seconds` long, every request through nginx:

1. **alone**: clicks from 8 connections.
2. **intake flood**: the same clicks while one advertiser posts conversions from 64 connections
   with one key, and a second advertiser posts one conversion every 100 ms.
3. **dashboard flood**: the same clicks while 16 connections (16 signed-in sessions of the
   publisher) load the Reports page.

Targets: click p99 beside either flood at most 2x alone, clicks/s at least 0.8x alone; the
flood advertiser gets 429s with Retry-After; the second advertiser gets every conversion
accepted, p99 under 100 ms. The load generators are Python (aiohttp) processes on the same
machine, one per load. Results: var/bench/isolation.json and docs/performance.md.

    python bench/isolation.py [--seconds 10] [--repeat 3] [--write docs/performance.md]

Uses BENCH_DATABASE_URL (its database is replaced by `<name>_isolation`) and BENCH_REDIS_URL,
else DATABASE_URL and REDIS_URL.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import prod  # noqa: E402
from bench.dashboard import write_section  # noqa: E402
from bench.http_bench import reset_database, wait_http  # noqa: E402

OUT = ROOT / "var" / "bench"
START, END = "<!-- isolation-bench:start -->", "<!-- isolation-bench:end -->"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
HOST = "track.bench.test"
CLICKS_PER_ADVERTISER = 2000

SEED = """
import json
from datetime import timedelta
from decimal import Decimal
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from publishers.models import Publisher
from tracking.models import Advertiser, AdvertiserAPIKey, Campaign, TrackingLink
from tracking.services import advertiser_key_create, click_record

seed = json.loads(SEED_JSON)
publisher = Publisher.objects.get(name="Demo Publisher")
# One callback per conversion, as measured before the demo had its JSON webhook.
publisher.callback_templates.filter(name="Demo JSON webhook").delete()
second, _ = Advertiser.objects.get_or_create(name="Second Advertiser")
campaign, _ = Campaign.objects.get_or_create(advertiser=second, name="Second Campaign", defaults={
    "landing_url": "https://second.example/?c=[click_id]", "default_payout": Decimal("2.00"),
    "currency": "USD", "attribution_window": timedelta(days=30)})
link, _ = TrackingLink.objects.update_or_create(
    code="second", defaults={"publisher": publisher, "campaign": campaign, "name": "Second"})
second_key = advertiser_key_create(advertiser=second, kind=AdvertiserAPIKey.Kind.API, name="b")[1]
demo_link = TrackingLink.objects.get(code="demo")
ua = "BROWSER_UA"
flood_clicks = [click_record(link=demo_link, spid=f"f{i}", user_agent=ua).click_id
                for i in range(N_CLICKS)]
second_clicks = [click_record(link=link, spid=f"s{i}", user_agent=ua).click_id
                 for i in range(N_CLICKS)]
user = get_user_model().objects.get(username="publisher")
sessions = []
for _ in range(16):
    client = Client()
    client.force_login(user)
    sessions.append(client.cookies[settings.SESSION_COOKIE_NAME].value)
print(json.dumps({"flood_key": seed["advertiser_api_key"], "second_key": second_key,
                  "flood_clicks": flood_clicks, "second_clicks": second_clicks,
                  "sessions": sessions, "cookie": settings.SESSION_COOKIE_NAME}))
"""


# --- Load generator (a separate process per load: `isolation.py load '<spec json>'`) ---------


async def _load(spec: dict) -> dict:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    missing_retry_after = 0
    stop_at = time.monotonic() + spec["seconds"]
    counter = 0
    prefix = f"{random.getrandbits(32):x}"

    def next_request(worker: int) -> tuple[str, str, dict, str | None]:
        nonlocal counter
        counter += 1
        headers = {"Host": HOST, "User-Agent": BROWSER, **spec.get("headers", {})}
        if spec["kind"] == "click":
            return "GET", f"{spec['base']}/click?ref=demo&spid=c{counter}", headers, None
        if spec["kind"] == "conversion":
            click_id = random.choice(spec["clicks"])
            body = json.dumps({"click_id": click_id, "txn_id": f"{prefix}-{counter}"})
            headers["Content-Type"] = "application/json"
            return "POST", f"{spec['base']}/api/v1/conversions", headers, body
        cookie = spec["sessions"][worker % len(spec["sessions"])]
        headers["Cookie"] = f"{spec['cookie']}={cookie}"
        return "GET", f"{spec['base']}/dashboard/reports/", headers, None

    async def worker(session: aiohttp.ClientSession, number: int) -> None:
        nonlocal missing_retry_after
        interval = spec.get("interval")
        while time.monotonic() < stop_at:
            method, url, headers, body = next_request(number)
            started = time.monotonic()
            try:
                async with session.request(
                    method, url, headers=headers, data=body, allow_redirects=False
                ) as response:
                    await response.read()
                    status = str(response.status)
                    if response.status in (429, 503) and "Retry-After" not in response.headers:
                        missing_retry_after += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = type(exc).__name__
            elapsed = time.monotonic() - started
            statuses[status] = statuses.get(status, 0) + 1
            if status == str(spec["ok"]) or (spec["kind"] == "conversion" and status == "201"):
                latencies.append(elapsed * 1000)
            if interval:
                await asyncio.sleep(max(0.0, interval - elapsed))

    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session, n) for n in range(spec["connections"])))
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 2)

    return {
        "requests": sum(statuses.values()),
        "ok": len(latencies),
        "ok_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "statuses": statuses,
        "missing_retry_after": missing_retry_after,
    }


def load_main(spec_json: str) -> None:
    print(json.dumps(asyncio.run(_load(json.loads(spec_json)))))


def start_load(spec: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "load", json.dumps(spec)], stdout=subprocess.PIPE, text=True
    )


def finish_load(process: subprocess.Popen) -> dict:
    out, _ = process.communicate(timeout=120)
    if process.returncode:
        raise SystemExit(f"load generator failed ({process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


# --- The deployed layout ----------------------------------------------------------------------


class Layout(prod.Processes):
    """The three web pools behind nginx, and the click flusher."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        super().__init__("isolation", database_url, redis_url, HOST)

    def up(self) -> str:
        ports = {pool: prod.free_port() for pool in prod.POOLS}
        for pool, port in ports.items():
            self.start(prod.web_argv(port, pool=pool), pool)
        self.start([sys.executable, "manage.py", "flush_clicks", "--loop"], "flusher")
        listen = prod.free_port()
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        config = prod.nginx_config(prod.local_upstreams(ports), f"127.0.0.1:{listen}", self.workdir)
        self.start([nginx, "-c", str(config), "-g", "daemon off;"], "nginx")
        for port in ports.values():
            wait_http(port)
        wait_http(listen)
        return f"http://127.0.0.1:{listen}"


# --- Phases -----------------------------------------------------------------------------------


def phase(base: str, seed: dict, flood: str | None, seconds: float) -> dict:
    """Clicks for `seconds` (from 8 connections), beside `flood` (None, "intake", "dashboard"),
    which starts a second earlier and ends a second later."""
    loads = {}
    if flood == "intake":
        loads["flood"] = start_load({"kind": "conversion", "base": base, "connections": 64,
            "seconds": seconds + 2, "ok": 201, "clicks": seed["flood_clicks"],
            "headers": {"Authorization": f"Bearer {seed['flood_key']}"}})  # fmt: skip
        loads["second"] = start_load({"kind": "conversion", "base": base, "connections": 1,
            "seconds": seconds + 2, "ok": 201, "interval": 0.1, "clicks": seed["second_clicks"],
            "headers": {"Authorization": f"Bearer {seed['second_key']}"}})  # fmt: skip
    elif flood == "dashboard":
        loads["flood"] = start_load({"kind": "dashboard", "base": base, "connections": 16,
            "seconds": seconds + 2, "ok": 200, "sessions": seed["sessions"],
            "cookie": seed["cookie"]})  # fmt: skip
    if loads:
        time.sleep(1)
    clicks = finish_load(
        start_load({"kind": "click", "base": base, "connections": 8, "seconds": seconds, "ok": 302})
    )
    return {"clicks": clicks, **{name: finish_load(p) for name, p in loads.items()}}


def median(runs: list[dict], path: tuple[str, str]) -> float | None:
    values = [run[path[0]][path[1]] for run in runs if run[path[0]][path[1]] is not None]
    return round(statistics.median(values), 2) if values else None


def summarize(runs: dict[str, list[dict]]) -> dict:
    alone = runs["alone"]
    summary = {"alone": {k: median(alone, ("clicks", k)) for k in ("ok_per_s", "p50_ms", "p99_ms")}}
    for flood in ("intake", "dashboard"):
        rows = runs[flood]
        clicks = {k: median(rows, ("clicks", k)) for k in ("ok_per_s", "p50_ms", "p99_ms")}
        entry = {
            "clicks": clicks,
            "p99_ratio": round(clicks["p99_ms"] / summary["alone"]["p99_ms"], 2),
            "rps_ratio": round(clicks["ok_per_s"] / summary["alone"]["ok_per_s"], 2),
            "flood": {
                "ok_per_s": median(rows, ("flood", "ok_per_s")),
                "p99_ms": median(rows, ("flood", "p99_ms")),
                "statuses": [row["flood"]["statuses"] for row in rows],
                "missing_retry_after": sum(row["flood"]["missing_retry_after"] for row in rows),
            },
            "click_statuses": [row["clicks"]["statuses"] for row in rows],
        }
        if flood == "intake":
            entry["second"] = {
                "p50_ms": median(rows, ("second", "p50_ms")),
                "p99_ms": median(rows, ("second", "p99_ms")),
                "statuses": [row["second"]["statuses"] for row in rows],
                "all_accepted": all(set(row["second"]["statuses"]) == {"201"} for row in rows),
            }
        summary[flood] = entry
    return summary


def markdown(summary: dict, meta: dict) -> str:
    alone = summary["alone"]
    intake, dashboard = summary["intake"], summary["dashboard"]

    def statuses(entries: list[dict]) -> str:
        total: dict[str, int] = {}
        for entry in entries:
            for status, count in entry.items():
                total[status] = total.get(status, 0) + count
        return ", ".join(f"{count:,} × {status}" for status, count in sorted(total.items()))

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines = [
        START,
        "## Isolation: a burst on one path beside the click redirect",
        "",
        f"`bench/isolation.py` (part of `make bench`), {meta['finished_at']}: the deployed "
        "layout (the three web pools as `deploy/systemd/roundtrip-{redirect,api,portal}.service` "
        f"start them — {meta['pools']} — behind nginx with `deploy/nginx/roundtrip.conf`, the "
        "click flusher, PostgreSQL and Redis, production settings with the documented per-caller "
        f"limits), all on this {meta['cpus']}-core machine with the Python load generators. "
        f"Clicks from 8 connections, {meta['seconds']:g} s per phase; each figure is the median "
        f"of {meta['repeat']} runs, phases in turn run after run. {meta['note']}",
        "",
        "| Clicks | req/s | p50 | p99 | p99 vs alone | req/s vs alone |",
        "|---|---|---|---|---|---|",
        f"| alone | {alone['ok_per_s']:,.0f} | {alone['p50_ms']:.1f} ms | "
        f"{alone['p99_ms']:.1f} ms | | |",
    ]
    for name, entry in (
        ("beside an intake flood (64 connections, one key)", intake),
        ("beside a dashboard flood (16 connections, Reports)", dashboard),
    ):
        c = entry["clicks"]
        lines.append(
            f"| {name} | {c['ok_per_s']:,.0f} | {c['p50_ms']:.1f} ms | {c['p99_ms']:.1f} ms | "
            f"{entry['p99_ratio']:.2f}× ({verdict(entry['p99_ratio'] <= 2)}: ≤ 2×) | "
            f"{entry['rps_ratio']:.2f}× ({verdict(entry['rps_ratio'] >= 0.8)}: ≥ 0.8×) |"
        )
    second = intake["second"]
    lines += [
        "",
        f"- Flood advertiser: {statuses(intake['flood']['statuses'])} over the runs "
        f"({intake['flood']['ok_per_s']:,.0f} accepted/s; every 429 carried Retry-After: "
        f"{'yes' if intake['flood']['missing_retry_after'] == 0 else 'no'}).",
        f"- Second advertiser, one conversion per 100 ms meanwhile: "
        f"{statuses(second['statuses'])}; p50 {second['p50_ms']} ms, p99 {second['p99_ms']} ms "
        f"(target: all accepted, {verdict(second['all_accepted'])}; p99 < 100 ms, "
        f"{verdict(second['p99_ms'] is not None and second['p99_ms'] < 100)}).",
        f"- Dashboard flood: {statuses(dashboard['flood']['statuses'])} "
        f"({dashboard['flood']['ok_per_s']:,.1f} pages/s, p99 {dashboard['flood']['p99_ms']} ms).",
        f"- Clicks answered other than 302: "
        f"{statuses([s for e in (intake, dashboard) for s in e['click_statuses'] if set(s) != {'302'}]) or 'none'}.",
        END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--write", type=Path, help="Markdown file whose Isolation section to replace"
    )
    parser.add_argument("--note", default="", help="a sentence for the report (machine load)")
    args = parser.parse_args()
    base_db = os.environ.get("BENCH_DATABASE_URL") or os.environ["DATABASE_URL"]
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ["REDIS_URL"]
    database_url = (
        base_db.rsplit("/", 1)[0] + "/" + base_db.rsplit("/", 1)[1].split("?")[0] + "_isolation"
    )
    if base_db.rsplit("/", 1)[1].split("?")[0] == "postgres":
        database_url = base_db.rsplit("/", 1)[0] + "/roundtrip_bench_isolation"
    reset_database(database_url)
    layout = Layout(database_url, redis_url)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        layout.manage("migrate", "--no-input", "-v", "0")
        layout.manage("collectstatic", "--no-input", "-v", "0")
        demo = layout.manage("seed_demo", "--json", POSTBACKS_ALLOW_PRIVATE_DESTINATIONS="true")
        script = (
            SEED.replace("SEED_JSON", repr(demo))
            .replace("BROWSER_UA", BROWSER)
            .replace("N_CLICKS", str(CLICKS_PER_ADVERTISER))
        )
        seed = json.loads(
            layout.manage("shell", "-c", script, CLICKS_BUFFERED="false").strip().splitlines()[-1]
        )
        base = layout.up()
        # Warm-up: imports, connections, the key and link caches of every process.
        for flood in (None, "intake", "dashboard"):
            phase(base, seed, flood, 2)
        runs: dict[str, list[dict]] = {"alone": [], "intake": [], "dashboard": []}
        for n in range(args.repeat):
            for flood in (None, "intake", "dashboard"):
                result = phase(base, seed, flood, args.seconds)
                runs[flood or "alone"].append(result)
                c = result["clicks"]
                extra = {k: v["statuses"] for k, v in result.items() if k != "clicks"}
                print(f"run {n + 1} {flood or 'alone'}: clicks {c['ok_per_s']}/s p50 "
                      f"{c['p50_ms']} p99 {c['p99_ms']} ms {extra}", flush=True)  # fmt: skip
    finally:
        layout.down()
    summary = summarize(runs)
    pools = ", ".join(
        f"{pool} {prod.web_summary(pool).split('--workers ')[1].replace(' --blocking-threads ', '×')}"
        for pool in prod.POOLS
    )
    meta = {
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": args.seconds,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "pools": f"workers×threads: {pools}",
        "note": args.note,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "isolation.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2)
    )
    print(json.dumps(summary, indent=2))
    if args.write:
        write_section(args.write, markdown(summary, meta), START, END)
        print(f"wrote the Isolation section of {args.write}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "load":
        load_main(sys.argv[2])
    else:
        main()
