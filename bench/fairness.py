"""Fairness benchmark: hanging endpoints must cost only themselves (issue 20).

Production settings and processes: the API pool as `deploy/systemd/roundtrip-api.service`
starts it (granian), the Celery worker and beat as their units start them (bench/prod.py),
PostgreSQL and Redis, every POSTBACKS_* setting at its default (a 15 s total time-out).
Conversions go through `POST /api/v1/conversions` at a steady rate; we measure, at one healthy
endpoint, the time from the 201 to its first request (p95).

Each row compares two phases of one run with the same work: every conversion goes to the
measured endpoint and to N others. In the baseline the others answer at once; then they hang
(accept the request, never answer) for longer than the time-out.

- N = 1 at 40 conversions/s, N = 5 at 30/s, N = 20 at 30/s (2, 6 and 21 callbacks each);
- 200 hanging endpoints of another publisher, one conversion per second each, beside the
  measured publisher's 30/s (in the baseline the same 200 answer at once).

Bound: hanging p95 <= max(2 x baseline p95, baseline p95 + 250 ms), in every row.

    python bench/fairness.py [--seconds 10] [--hang-seconds 20] [--repeat 3] [--rows 1,5,20,200]
        [--write docs/performance.md]

The receivers and the load generator are one asyncio process on the same machine. Uses
BENCH_DATABASE_URL (its database is replaced by `<name>_fairness`) and BENCH_REDIS_URL, else
DATABASE_URL and REDIS_URL. Results: var/bench/fairness.json and docs/performance.md.
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import prod  # noqa: E402
from bench.dashboard import write_section  # noqa: E402
from bench.http_bench import reset_database, wait_http  # noqa: E402

OUT = ROOT / "var" / "bench"
START, END = "<!-- fairness-bench:start -->", "<!-- fairness-bench:end -->"
HOST = "api.bench.test"
# (others, conversions/s to the measured publisher, conversions/s to each other endpoint's
# own publisher: 0 when the others are callbacks of the measured conversions themselves)
ROWS = {1: (1, 40, 0), 5: (5, 30, 0), 20: (20, 30, 0), 200: (200, 30, 1)}


# --- Receivers --------------------------------------------------------------------------------


class Receivers:
    """The measured endpoint and the others, each on its own port (a host of its own for the
    gate); the others answer at once or hang until released."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.measured_port = 0
        self.other_ports: list[int] = []
        self.arrivals: dict[str, float] = {}  # click id -> first request (monotonic)
        self.hang = False
        self.release = asyncio.Event()
        self.others_seen = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        if port == self.measured_port:
            click_id = request.query.get("c", "")
            self.arrivals.setdefault(click_id, time.monotonic())
            return web.Response(text="ok")
        self.others_seen += 1
        if self.hang:
            release = self.release
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 120)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        ports = []
        for _ in range(self.count + 1):
            # Port 0: the system picks a free one (picking first and binding later can race).
            site = web.TCPSite(self.runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])
        self.measured_port, *self.other_ports = ports

    def set_hanging(self, hang: bool) -> None:
        self.hang = hang
        if not hang:
            self.release.set()
            self.release = asyncio.Event()

    async def stop(self) -> None:
        self.set_hanging(False)
        if self.runner is not None:
            await self.runner.cleanup()


# --- Load -------------------------------------------------------------------------------------


class Stream:
    """Conversions at `rate`/s from `clicks` (each used once), round robin over `keys` and
    `events`, forwarded-for a few addresses (the per-address limit is for one client)."""

    def __init__(self, clicks: list[str], keys: list[str], events: list[str], rate: float):
        self.clicks = iter(clicks)
        self.keys = keys
        self.events = events
        self.rate = rate
        self.accepted: dict[str, float] = {}  # click id -> 201 received (monotonic)
        self.statuses: dict[str, int] = {}

    async def run(self, session: aiohttp.ClientSession, base: str, seconds: float) -> None:
        if not self.rate:
            return
        started = time.monotonic()
        tasks = []
        for n in range(int(seconds * self.rate)):
            await asyncio.sleep(max(0.0, started + n / self.rate - time.monotonic()))
            tasks.append(asyncio.create_task(self.one(session, base, n)))
        await asyncio.gather(*tasks)

    async def one(self, session: aiohttp.ClientSession, base: str, n: int) -> None:
        click_id = next(self.clicks)
        body = {"click_id": click_id, "event": self.events[n % len(self.events)]}
        headers = {
            "Host": HOST,
            "Authorization": f"Bearer {self.keys[n % len(self.keys)]}",
            "X-Forwarded-For": f"198.51.100.{n % 64 + 1}",
        }
        try:
            async with session.post(f"{base}/api/v1/conversions", json=body, headers=headers) as r:
                await r.read()
                status = str(r.status)
                if r.status == 201:
                    self.accepted[click_id] = time.monotonic()
        except (TimeoutError, aiohttp.ClientError) as exc:
            status = type(exc).__name__
        self.statuses[status] = self.statuses.get(status, 0) + 1


def p95(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=20)[-1]


async def phase(receivers: Receivers, streams: list[Stream], base: str, seconds: float) -> dict:
    """Run the streams for `seconds`; the measured endpoint's 201 -> first request latencies."""
    measured = streams[0]
    measured.accepted.clear()
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(s.run(session, base, seconds) for s in streams))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(measured.accepted) <= set(receivers.arrivals):
        await asyncio.sleep(0.1)
    latencies = [
        (receivers.arrivals[c] - at) * 1000
        for c, at in measured.accepted.items()
        if c in receivers.arrivals
    ]
    offered = sum(int(seconds * st.rate) for st in streams)
    accepted = sum(st.statuses.get("201", 0) for st in streams)
    statuses = [dict(st.statuses) for st in streams]
    for st in streams:
        st.statuses.clear()
    return {
        "statuses": statuses,
        "accepted_per_s": round(accepted / seconds, 1),
        "offered_per_s": round(offered / seconds, 1),
        "accepted": len(measured.accepted),
        "delivered": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(p95(latencies), 1) if latencies else None,
    }


# --- The stack --------------------------------------------------------------------------------


class Stack(prod.Processes):
    """The API pool, a worker and beat, as deployed."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        super().__init__("fairness", database_url, redis_url, HOST)

    def up(self) -> str:
        port = prod.free_port()
        self.start(prod.web_argv(port, pool="api"), "api")
        self.start(prod.worker_argv("bench-fairness@%h"), "worker")
        beat = prod.unit_argv("roundtrip-beat.service")
        beat = [a if not a.startswith("/var/lib") else str(self.workdir / "beat") for a in beat]
        self.start(beat, "beat")
        wait_http(port)
        time.sleep(3)  # the worker's pool processes
        return f"http://127.0.0.1:{port}"


SETUP = """
import json
from datetime import timedelta
from decimal import Decimal
from django.db import transaction
from publishers.models import CallbackTemplate, Publisher
from tracking.models import Advertiser, AdvertiserAPIKey, Campaign, Click, TrackingLink
from tracking.services import advertiser_key_create

spec = json.loads(SPEC)
advertiser, _ = Advertiser.objects.get_or_create(name="Fairness Advertiser")
campaign, _ = Campaign.objects.get_or_create(advertiser=advertiser, name="Fairness", defaults={
    "landing_url": "https://landing.example/?c=[click_id]", "default_payout": Decimal("1.00"),
    "currency": "USD", "attribution_window": timedelta(days=30)})
out = {"keys": [advertiser_key_create(advertiser=advertiser, kind=AdvertiserAPIKey.Kind.API,
                                      name=f"k{n}")[1] for n in range(8)]}
for name, count in (("measured", spec["measured_clicks"]), ("others", spec["other_clicks"])):
    publisher, _ = Publisher.objects.get_or_create(name=f"Fairness {name}")
    link, _ = TrackingLink.objects.get_or_create(code=f"fair-{name}",
        defaults={"publisher": publisher, "campaign": campaign, "name": name})
    with transaction.atomic():
        clicks = Click.objects.bulk_create(
            Click(link=link, publisher=publisher, campaign=campaign, spid=f"{name}{n}",
                  user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36")
            for n in range(count))
    out[name] = [c.click_id for c in clicks]
    out[name + "_publisher"] = publisher.pk
print(json.dumps(out))
"""

TEMPLATES = """
import json
from postbacks.models import Postback
from publishers.models import CallbackTemplate
spec = json.loads(SPEC)
Postback.objects.filter(status="pending").update(status="failed")
# The last row's callbacks stop matching (deleting them could race a late conversion's insert).
CallbackTemplate.objects.update(events=["retired"])
CallbackTemplate.objects.create(publisher_id=spec["measured_publisher"],
    url_template=f"http://127.0.0.1:{spec['measured_port']}/cb?c=[click_id]&e=[event_id]")
for n, port in enumerate(spec["other_ports"]):
    if spec["separate"]:
        CallbackTemplate.objects.create(publisher_id=spec["others_publisher"], events=[f"h{n}"],
            url_template=f"http://127.0.0.1:{port}/cb?e=[event_id]")
    else:
        CallbackTemplate.objects.create(publisher_id=spec["measured_publisher"],
            url_template=f"http://127.0.0.1:{port}/cb?e=[event_id]")
"""


def clear_gate(redis_url: str) -> None:
    """Between rows: forget the last row's breakers and slots (its endpoints are gone)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    prefix = prod.documented_env().get("POSTBACKS_REDIS_PREFIX", "roundtrip:pb:")
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


async def run_row(
    stack: Stack, seed: dict, base: str, others: int, args: argparse.Namespace
) -> dict:
    _, rate, each = ROWS[others]
    each = each and args.others_rate
    receivers = Receivers(others)
    await receivers.start()
    try:
        separate = bool(each)
        spec = {
            "measured_publisher": seed["measured_publisher"],
            "others_publisher": seed["others_publisher"],
            "measured_port": receivers.measured_port,
            "other_ports": receivers.other_ports,
            "separate": separate,
        }
        stack.manage("shell", "-c", TEMPLATES.replace("SPEC", repr(json.dumps(spec))))
        clear_gate(stack.env["REDIS_URL"])
        measured = Stream(seed["measured"], seed["keys"][:4], ["conversion"], rate)
        streams = [measured]
        if separate:
            events = [f"h{n}" for n in range(others)]
            streams.append(Stream(seed["others"], seed["keys"][4:], events, each * others))
        await phase(receivers, streams, base, 2)  # warm-up
        baseline = await phase(receivers, streams, base, args.seconds)
        receivers.set_hanging(True)
        hanging = await phase(receivers, streams, base, args.hang_seconds)
        receivers.set_hanging(False)
        seed["measured"] = list(measured.clicks)
        if separate:
            seed["others"] = list(streams[1].clicks)
    finally:
        await receivers.stop()
    base = baseline["p95_ms"] or 0.0
    bound = max(2 * base, base + 250)
    return {
        "others": others,
        "rate": rate,
        "each": each,
        "baseline": baseline,
        "hanging": hanging,
        "bound_ms": round(bound, 1),
        "met": hanging["p95_ms"] is not None
        and hanging["p95_ms"] <= bound
        and hanging["delivered"] == hanging["accepted"],
    }


def markdown(summary: list[dict], meta: dict) -> str:
    lines = [
        START,
        "## Fair delivery: hanging endpoints beside a healthy one",
        "",
        f"`bench/fairness.py` (part of `make bench`), {meta['finished_at']}: the API pool "
        f"({meta['api']}), the Celery worker ({meta['worker']}) and beat as their units start "
        "them, PostgreSQL and Redis, every `POSTBACKS_*` setting at its default (15 s total "
        f"time-out, 4 requests in flight per host), all on this {meta['cpus']}-core machine "
        "with the receivers and the load generator (one Python process). Conversions through "
        "`POST /api/v1/conversions` at a steady rate; measured: the time from the 201 to the "
        "first request at the healthy endpoint. Baseline phase: the others answer at once "
        f"({meta['seconds']:g} s); then they hang, never answering ({meta['hang_seconds']:g} s, "
        f"past the time-out). {meta['runs']} {meta['note']}",
        "",
        "| Others hanging | Load offered | Accepted (baseline, hanging) | Healthy p95 baseline "
        "→ hanging | Bound | |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary:
        if row["each"]:
            load = (
                f"{row['others']} endpoints of another publisher at {row['each']:g} "
                f"conversion/s each, beside the healthy publisher's {row['rate']}/s"
            )
        else:
            load = f"{row['rate']} conversions/s, {row['others'] + 1} callbacks each"
        lines.append(
            f"| {row['others']} | {load} | {row['baseline_rate']:.0f}/s, "
            f"{row['hanging_rate']:.0f}/s | {_ms(row['baseline_p95'])} → "
            f"**{_ms(row['hanging_p95'])}** | ≤ {_ms(row['bound'])} | "
            f"{'met' if row['met'] else '**missed**'} |"
        )
    lines += [
        "",
        "Before this design (the claim leased the oldest due rows whatever their host), the "
        "same measurement gave 92 ms → 892 ms, 72 ms → 5.5 s and 448 ms → 22.0 s for 1, 5 and "
        '20 hanging endpoints (issue 20). How it works: docs/delivery.md, "Fair delivery".',
        END,
    ]
    return "\n".join(lines) + "\n"


def _or_inf(value: float | None) -> float:
    return float("inf") if value is None else value


def _ms(value: float) -> str:
    return "none delivered" if value == float("inf") else f"{value:.0f} ms"


def summarize(runs: dict[int, list[dict]]) -> list[dict]:
    out = []
    for others, results in runs.items():
        # A phase in which nothing was delivered (the API refused or timed out every
        # conversion) has no p95: it counts as infinitely slow, and the row as missed.
        base = statistics.median(_or_inf(r["baseline"]["p95_ms"]) for r in results)
        hang = statistics.median(_or_inf(r["hanging"]["p95_ms"]) for r in results)
        bound = max(2 * base, base + 250)
        out.append({
            "others": others, "rate": results[0]["rate"], "each": results[0]["each"],
            "baseline_p95": base, "hanging_p95": hang, "bound": bound,
            "baseline_rate": statistics.median(r["baseline"]["accepted_per_s"] for r in results),
            "hanging_rate": statistics.median(r["hanging"]["accepted_per_s"] for r in results),
            "met": hang < float("inf") and hang <= bound and all(
                r["hanging"]["delivered"] == r["hanging"]["accepted"] for r in results),
        })  # fmt: skip
    return out


async def amain(args: argparse.Namespace) -> None:
    base_db = os.environ.get("BENCH_DATABASE_URL") or os.environ["DATABASE_URL"]
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ["REDIS_URL"]
    prefix, name = base_db.rsplit("/", 1)
    name = name.split("?")[0]
    database_url = f"{prefix}/{'roundtrip_bench' if name == 'postgres' else name}_fairness"
    reset_database(database_url)
    stack = Stack(database_url, redis_url)
    rows = [int(r) for r in args.rows.split(",")]
    per_phase = {o: ROWS[o][1] * (args.seconds + args.hang_seconds + 2) for o in rows}
    need = {
        "measured_clicks": int(sum(per_phase.values()) * args.repeat * 1.1) + 100,
        "other_clicks": int(
            sum(ROWS[o][2] * args.others_rate * o * (args.seconds + args.hang_seconds + 2)
                for o in rows)
            * args.repeat * 1.1
        ) + 100,
    }  # fmt: skip
    try:
        stack.manage("migrate", "--no-input", "-v", "0")
        seed = json.loads(
            stack.manage("shell", "-c", SETUP.replace("SPEC", repr(json.dumps(need))))
            .strip()
            .splitlines()[-1]
        )
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        base = stack.up()
        runs: dict[int, list[dict]] = {o: [] for o in rows}
        # Row by row (its runs in turn), so a row that overloads the machine can only spoil
        # its own figures.
        for others in rows:
            for n in range(args.repeat):
                result = await run_row(stack, seed, base, others, args)
                runs[others].append(result)
                b, h = result["baseline"], result["hanging"]
                print(
                    f"run {n + 1} others={others}: p95 {b['p95_ms']} -> {h['p95_ms']} ms "
                    f"(p50 {b['p50_ms']} -> {h['p50_ms']}; delivered {h['delivered']}/"
                    f"{h['accepted']}; bound {result['bound_ms']}; "
                    f"{'met' if result['met'] else 'MISSED'}) accepted/s {b['accepted_per_s']}, "
                    f"{h['accepted_per_s']} of {h['offered_per_s']} offered {h['statuses']}",
                    flush=True,
                )
    finally:
        stack.down()
    summary = summarize(runs)
    meta = {
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": args.seconds,
        "hang_seconds": args.hang_seconds,
        "repeat": args.repeat,
        "runs": (
            f"Each figure is the median of {args.repeat} runs."
            if args.repeat > 1
            else "One run per row (a quick run, not a median)."
        ),
        "cpus": os.cpu_count(),
        "api": prod.web_summary("api"),
        "worker": prod.worker_summary().split(" worker ")[-1],
        "note": args.note,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fairness.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2)
    )
    print(json.dumps(summary, indent=2))
    if args.write:
        write_section(args.write, markdown(summary, meta), START, END)
        print(f"wrote the Fair delivery section of {args.write}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="baseline phase")
    parser.add_argument("--hang-seconds", type=float, default=20.0, help="hanging phase")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", default="1,5,20,200", help="which rows (others hanging)")
    parser.add_argument(
        "--others-rate",
        type=float,
        default=1.0,
        help="conversions/s to each of the 200 endpoints (lower it where the machine can't "
        "take 200/s through the API beside everything else; the report says so)",
    )
    parser.add_argument("--write", type=Path, help="Markdown file whose section to replace")
    parser.add_argument("--note", default="", help="a sentence for the report (machine load)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
