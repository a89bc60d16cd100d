"""Postback dispatch benchmark (issue: fast where it matters, item 3).

Measured side by side in one run, on PostgreSQL + Redis with production settings (DEBUG off),
against one fast local receiver (aiohttp, its own process):

- **raw aiohttp**: a plain asyncio sender, 100 requests in flight, no database: the ceiling.
- **batch dispatch**: the production worker, started as `deploy/systemd/roundtrip-worker.service`
  starts it (bench/prod.py), draining a backlog of due postbacks: claim, sign, SSRF check, send,
  record every attempt.
- **latency**: conversions posted to the real API (the web server as
  `deploy/systemd/roundtrip-api.service` starts it) at a fixed 200/s, then as fast as 32
  connections go, `--seconds` each; latency is API answer → callback received, p50/p95/p99.

Every figure is the median of `--repeat` runs. The receiver is on 127.0.0.1, so the workers run
with POSTBACKS_ALLOW_PRIVATE_DESTINATIONS=true; nothing else differs from production.

    DATABASE_URL=postgres://…/roundtrip_bench REDIS_URL=redis://127.0.0.1:6379/11 \\
        python bench/dispatch.py --write docs/performance.md
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from bench import prod  # noqa: E402

MARK_START, MARK_END = "<!-- dispatch-bench:start -->", "<!-- dispatch-bench:end -->"


# --- The receiver and the raw sender (own processes, no Django) -------------------------------


def run_receiver(port: int) -> None:
    """A fast receiver: answers 200 "ok" and notes when each event id arrived."""
    from aiohttp import web

    arrivals: list[tuple[str, float]] = []

    async def callback(request: web.Request) -> web.Response:
        arrivals.append((request.headers.get("Roundtrip-Event-Id", ""), time.time()))
        return web.Response(text="ok")

    async def dump(request: web.Request) -> web.Response:
        return web.json_response({"arrivals": arrivals})

    async def reset(request: web.Request) -> web.Response:
        arrivals.clear()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/_dump", dump)
    app.router.add_get("/_reset", reset)
    app.router.add_get("/{tail:.*}", callback)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def raw_sender(url: str, total: int, in_flight: int = 100) -> float:
    """GETs per second of a plain aiohttp sender (the ceiling for any Python sender here)."""
    import aiohttp

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=in_flight)
        async with aiohttp.ClientSession(connector=connector) as session:
            remaining = iter(range(total))

            async def worker() -> None:
                for _ in remaining:
                    async with session.get(url) as response:
                        await response.read()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return total / (time.perf_counter() - started)

    return asyncio.run(main())


def _raw_in_process(url: str, total: int, queue: multiprocessing.Queue) -> None:
    queue.put(raw_sender(url, total))


# --- Helpers ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.logs = Path(tempfile.mkdtemp(prefix="roundtrip-bench-dispatch-"))
        self.receiver_port = prod.free_port()
        self.receiver_url = f"http://127.0.0.1:{self.receiver_port}"
        redis_url = os.environ["REDIS_URL"]
        parts = urlsplit(redis_url)
        db = int(parts.path.strip("/") or 0)
        self.broker_url = os.environ.get(
            "BENCH_BROKER_URL", parts._replace(path=f"/{db + 1}").geturl()
        )
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "PYTHONPATH": str(ROOT),
            "CELERY_BROKER_URL": self.broker_url,
            "POSTBACKS_ALLOW_PRIVATE_DESTINATIONS": "true",
            "CLICKS_BUFFERED": "false",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.processes: list[subprocess.Popen] = []

    # processes

    def start(self, argv: list[str], name: str, **env: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
                process.wait(10)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)

    def start_worker(self, **env: str) -> subprocess.Popen:
        from kombu import Connection

        with Connection(self.broker_url) as broker:
            for queue in ("celery", "postbacks", "postbacks_retry"):
                broker.default_channel.queue_purge(queue)
        worker = self.start(prod.worker_argv(f"bench{time.time_ns()}@%h"), "worker", **env)
        self.wait_worker()
        return worker

    def wait_worker(self, timeout: float = 30.0) -> None:
        """Until the worker answers a ping (boot: Django set-up, pool fork)."""
        from config.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if app.control.ping(timeout=0.5):
                    return
            time.sleep(0.2)
        raise SystemExit(f"The worker did not start; logs in {self.logs}")

    def wait_http(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                time.sleep(0.5)
                return
            time.sleep(0.1)
        raise SystemExit(f"The web server did not start; logs in {self.logs}")

    def arrivals(self) -> dict[str, float]:
        import requests

        data = requests.get(f"{self.receiver_url}/_dump", timeout=30).json()["arrivals"]
        return {event_id: at for event_id, at in data if event_id}

    def reset_receiver(self) -> None:
        import requests

        requests.get(f"{self.receiver_url}/_reset", timeout=10)

    # data

    def setup(self) -> None:
        import django

        os.environ.update({k: v for k, v in self.env.items() if k != "PATH"})
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from publishers.models import CallbackTemplate, Publisher
        from tracking.models import Advertiser, Campaign, TrackingLink
        from tracking.services import advertiser_key_create

        stamp = time.time_ns()
        self.publisher = Publisher.objects.create(name=f"bench-dispatch-{stamp}")
        self.template = CallbackTemplate.objects.create(
            publisher=self.publisher,
            url_template=f"{self.receiver_url}/cb?id=[spid]&e=[event_id]&p=[payout]",
        )
        advertiser = Advertiser.objects.create(name=f"bench-dispatch-{stamp}")
        self.campaign = Campaign.objects.create(
            advertiser=advertiser, name="bench", landing_url="https://a.example/?c=[click_id]"
        )
        self.link = TrackingLink.objects.create(
            publisher=self.publisher, campaign=self.campaign, code=f"bd{stamp}"
        )
        self.api_key = advertiser_key_create(advertiser=advertiser)[1]

    def backlog(self, count: int) -> list[int]:
        """`count` postbacks held far in the future (released by `release`)."""
        from postbacks.health import HELD_UNTIL
        from postbacks.http import destination_host
        from postbacks.models import Postback
        from tracking.models import Click, Conversion

        clicks = Click.objects.bulk_create(
            Click(link=self.link, publisher=self.publisher, campaign=self.campaign, spid=f"s{n}")
            for n in range(count)
        )
        conversions = Conversion.objects.bulk_create(
            Conversion(
                click=click,
                publisher=self.publisher,
                advertiser=self.campaign.advertiser,
                campaign=self.campaign,
                payout=1,
                currency="EUR",
            )
            for click in clicks
        )
        rows = []
        for conversion in conversions:
            row = Postback(
                conversion=conversion,
                template=self.template,
                publisher=self.publisher,
                conversion_status="approved",
                next_attempt_at=HELD_UNTIL,
            )
            row.url = f"{self.receiver_url}/cb?id={conversion.pk}&e={row.event_id}"
            row.host = destination_host(row.url)
            rows.append(row)
        return [row.pk for row in Postback.objects.bulk_create(rows, batch_size=2000)]

    def release(self, ids: list[int]) -> None:
        from django.db import connection
        from django.utils import timezone

        from postbacks.health import HELD_UNTIL
        from postbacks.models import Postback, PostbackAttempt

        PostbackAttempt.objects.filter(postback_id__in=ids).delete()
        Postback.objects.filter(pk__in=ids).update(next_attempt_at=HELD_UNTIL)
        # Reusing one backlog run after run leaves dead index entries a steady stream would
        # not (autovacuum keeps up with that): clean them so every run starts alike.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE postbacks_postback")
        Postback.objects.filter(pk__in=ids).update(
            status="pending",
            attempts=0,
            leased_until=None,
            delivered_at=None,
            next_attempt_at=timezone.now(),
        )

    def hold(self, ids: list[int]) -> None:
        from postbacks.health import HELD_UNTIL
        from postbacks.models import Postback

        Postback.objects.filter(pk__in=ids).update(next_attempt_at=HELD_UNTIL)

    def wait_recorded(self, ids: list[int], timeout: float) -> float:
        from postbacks.models import Postback

        deadline = time.monotonic() + timeout
        # Cheap to ask (the small partial index of pending rows), so that watching does not
        # take CPU from what is watched: a list of every id cost a core's quarter here.
        unfinished = Postback.objects.filter(
            status=Postback.Status.PENDING, pk__range=(min(ids), max(ids))
        )
        while unfinished.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"Backlog not delivered within {timeout:g}s; logs in {self.logs}")
            time.sleep(0.05)
        return time.time()

    # measurements

    def drain_rate(self, ids: list[int]) -> tuple[float, float]:
        """(delivered/s by receipt of the last callback, recorded/s) for a released backlog."""
        from postbacks import dispatch

        self.reset_receiver()
        self.release(ids)
        started = time.time()
        dispatch.kick(dispatch.Lane.FIRST, coalesce=False)
        recorded_at = self.wait_recorded(ids, timeout=300)
        arrivals = self.arrivals()
        assert len(arrivals) >= len(ids), (len(arrivals), len(ids))
        return len(ids) / (max(arrivals.values()) - started), len(ids) / (recorded_at - started)

    def raw_rate(self, total: int) -> float:
        # Spawned, not forked: this process has threads by now (database, broker), and a fork
        # can copy a lock one of them holds into a child that then waits for it forever.
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        process = context.Process(
            target=_raw_in_process, args=(f"{self.receiver_url}/raw", total, queue)
        )
        process.start()
        rate = queue.get(timeout=300)
        process.join(30)
        return rate

    def latency(self, web_url: str, *, rate: float | None, seconds: float) -> dict:
        """Post conversions (paced at `rate`/s, or closed-loop with 32 connections for
        `seconds`) and time API answer → callback received."""
        import aiohttp

        from tracking.models import Click

        # Closed loop: enough clicks for a fast intake; posting stops at the deadline anyway.
        count = int((rate or 1500) * seconds)
        clicks = Click.objects.bulk_create(
            Click(link=self.link, publisher=self.publisher, campaign=self.campaign, spid=f"l{n}")
            for n in range(count)
        )
        answered: dict[str, float] = {}
        self.reset_receiver()

        async def post(session: aiohttp.ClientSession, click_id: str) -> None:
            async with session.post(
                f"{web_url}/api/v1/conversions",
                json={"click_id": click_id},
                headers={"Authorization": f"Bearer {self.api_key}"},
            ) as response:
                body = await response.json()
                at = time.time()
                assert response.status == 201, body
                for postback in body["postbacks"]:
                    answered[postback["id"]] = at

        async def main() -> float:
            started = time.perf_counter()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
                if rate:
                    tasks = []
                    for n, click in enumerate(clicks):
                        delay = started + n / rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        tasks.append(asyncio.create_task(post(session, click.click_id)))
                    # An intake slower than the offered rate leaves a queue: what it hasn't
                    # answered shortly after the last send is dropped from the measurement.
                    grace = max(0.0, started + seconds + 2 - time.perf_counter())
                    _, late = await asyncio.wait(tasks, timeout=grace)
                    for task in late:
                        task.cancel()
                    await asyncio.gather(*late, return_exceptions=True)
                else:
                    todo = iter(clicks)
                    deadline = started + seconds

                    async def loop() -> None:
                        for click in todo:
                            if time.perf_counter() > deadline:
                                break
                            await post(session, click.click_id)

                    await asyncio.gather(*(loop() for _ in range(32)))
            return time.perf_counter() - started

        elapsed = asyncio.run(main())
        deadline = time.monotonic() + 120
        while True:
            arrivals = self.arrivals()
            if all(event_id in arrivals for event_id in answered) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        latencies = [(arrivals[e] - at) * 1000 for e, at in answered.items() if e in arrivals]
        assert len(latencies) == len(answered), "some callbacks never arrived"
        return {
            "offered": rate,
            "intake_rps": len(answered) / elapsed,
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
        }


def run(args: argparse.Namespace) -> dict:
    bench = Bench(args)
    receiver = multiprocessing.Process(
        target=run_receiver, args=(bench.receiver_port,), daemon=True
    )
    receiver.start()
    time.sleep(1)
    results: dict = {
        "repeat": args.repeat,
        "backlog": args.backlog,
        "raised_backlog": args.raised_backlog,
        "seconds": args.seconds,
        "worker": prod.worker_summary(),
        "web": prod.web_summary("api"),
    }
    try:
        bench.setup()
        from django.conf import settings

        results["settings"] = {
            "batch": settings.POSTBACKS_DISPATCH_BATCH_SIZE,
            "concurrency": settings.POSTBACKS_DISPATCH_CONCURRENCY,
            "host_cap": settings.POSTBACKS_HOST_MAX_IN_FLIGHT,
        }
        every = bench.backlog(max(args.backlog, args.raised_backlog))
        ids = every[: args.backlog]
        if args.raised_only:  # profiling: the raised-cap throughput runs alone
            return {**results, **_raised(bench, args, every[: args.raised_backlog])}
        worker = bench.start_worker()
        bench.drain_rate(ids[: args.backlog // 4])  # warm-up: connections, pools
        raw, batch, batch_recorded = [], [], []
        for _ in range(args.repeat):
            raw.append(bench.raw_rate(args.backlog))
            delivered, recorded = bench.drain_rate(ids)
            batch.append(delivered)
            batch_recorded.append(recorded)
            print(f"raw {raw[-1]:.0f}/s, batch {delivered:.0f}/s ({recorded:.0f}/s recorded)")
        bench.hold(ids)

        web_port = prod.free_port()
        web = bench.start(prod.web_argv(web_port, pool="api"), "web")
        web_url = f"http://127.0.0.1:{web_port}"
        bench.wait_http(web_port)
        paced, saturated = [], []
        for _ in range(args.repeat):
            paced.append(bench.latency(web_url, rate=200, seconds=args.seconds))
            saturated.append(bench.latency(web_url, rate=None, seconds=args.seconds))
            print(f"200/s: {paced[-1]}; saturation: {saturated[-1]}")
        bench.stop(web)
        bench.stop(worker)

        raised = _raised(bench, args, every[: args.raised_backlog])
    finally:
        bench.stop_all()
        receiver.terminate()

    def median_of(runs: list[dict], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    results.update(
        raw=statistics.median(raw),
        batch=statistics.median(batch),
        batch_recorded=statistics.median(batch_recorded),
        ratio=statistics.median(b / r for b, r in zip(batch, raw, strict=True)),
        **raised,
        paced={k: median_of(paced, k) for k in ("intake_rps", "p50", "p95", "p99")},
        saturated={k: median_of(saturated, k) for k in ("intake_rps", "p50", "p95", "p99")},
        load=os.getloadavg()[0],
    )
    return results


def _raised(bench: Bench, args: argparse.Namespace, ids: list[int]) -> dict:
    """The receiver's host given a cap of its own, as one would for a big publisher; each
    batch run right after a raw run."""
    raised = f"127.0.0.1:{bench.receiver_port}={args.raised_cap}"
    worker = bench.start_worker(POSTBACKS_HOST_MAX_IN_FLIGHT_BY_HOST=raised)
    bench.drain_rate(ids[: len(ids) // 4])  # warm-up: connections, pools
    raw_raised, batch_raised = [], []
    for _ in range(args.repeat):
        raw_raised.append(bench.raw_rate(len(ids)))
        batch_raised.append(bench.drain_rate(ids)[0])
        print(f"raw {raw_raised[-1]:.0f}/s, batch (cap {args.raised_cap}) {batch_raised[-1]:.0f}/s")
    bench.hold(ids)
    bench.stop(worker)
    return {
        "raw_raised": statistics.median(raw_raised),
        "batch_raised": statistics.median(batch_raised),
        "ratio_raised": statistics.median(
            b / r for b, r in zip(batch_raised, raw_raised, strict=True)
        ),
        "raised_cap": args.raised_cap,
    }


def render(results: dict) -> str:
    s = results["settings"]
    paced, sat = results["paced"], results["saturated"]
    lines = [
        MARK_START,
        "## Postback dispatch",
        "",
        f"Median of {results['repeat']} runs on this machine ({os.cpu_count()} shared cores, "
        f"{platform.python_implementation()} {platform.python_version()}, load average "
        f"{results['load']:.1f} at the end), PostgreSQL + Redis, production settings, one fast "
        "local receiver (aiohttp, its own process). Worker and web server as the systemd units "
        f"of docs/deploy.md start them: `{results['worker']}`, `{results['web']}`; "
        f"batch {s['batch']}, {s['concurrency']} requests in "
        f"flight per process, at most {s['host_cap']} per destination host unless that host "
        "has a cap of its own (`POSTBACKS_HOST_MAX_IN_FLIGHT_BY_HOST`).",
        "",
        "| Sender | Postbacks/s | vs raw aiohttp |",
        "| --- | ---: | ---: |",
        f"| Raw aiohttp sender, 100 in flight, no database | {results['raw']:,.0f} | 1.00 |",
        f"| Batch dispatch, default cap ({s['host_cap']} in flight per host) | "
        f"{results['batch']:,.0f} | {results['ratio']:.2f} |",
        f"| Batch dispatch, default cap, every attempt recorded in the database | "
        f"{results['batch_recorded']:,.0f} | {results['batch_recorded'] / results['raw']:.2f} |",
        f"| **Batch dispatch, receiver's host capped at {results['raised_cap']}** | "
        f"**{results['batch_raised']:,.0f}** | **{results['ratio_raised']:.2f}** |",
        "",
        f"Backlog of {results['backlog']:,} due postbacks per run "
        f"({results.get('raised_backlog', results['backlog']):,} with the raised cap), all to "
        "the one receiver, "
        "so the per-host cap is the limit: 4 in flight is the safe default (it bounds what a "
        "hanging publisher holds and what a crashed worker sends twice); a publisher that needs "
        "the throughput gets a cap of its own. The raw sender ran right before each batch run.",
        "",
        "Latency from the conversion API's answer to the callback's arrival (conversions posted "
        f"with `Authorization: Bearer` for {results.get('seconds', 5):g} s per run):",
        "",
        "| Offered load | Intake achieved, req/s | p50 ms | p95 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| 200/s, paced | {paced['intake_rps']:,.0f} | {paced['p50']:.0f} | "
        f"{paced['p95']:.0f} | {paced['p99']:.0f} |",
        f"| Saturation (32 connections) | {sat['intake_rps']:,.0f} | {sat['p50']:.0f} | "
        f"{sat['p95']:.0f} | {sat['p99']:.0f} |",
        "",
        "When the intake achieved less than it was offered, the conversion API (another "
        "section) was the limit on the shared machine, not the dispatcher.",
        "",
        "How: intake commits the conversion and its postback rows, then publishes one "
        "coalesced *kick* for the first-attempt lane; a `dispatch_postbacks` task claims up to "
        "a batch of due rows in one `UPDATE … FOR UPDATE SKIP LOCKED … RETURNING`, sends them "
        "from an asyncio loop (aiohttp, keep-alive, every connection to an address the SSRF guard "
        "vetted), and records outcomes as they arrive (one statement: bulk insert of attempts and "
        "bulk update of rows, guarded by the attempt number, commit without waiting for the WAL "
        "flush). A task claims its next batch while the last is in flight; a full first batch "
        "kicks a successor, so every pool process works.",
        "",
        "What limits it: the per-postback Python work of a pool process (signing, building and "
        "sending the request from the asyncio loop, reading the answer, recording the outcome) "
        "runs under one interpreter lock; py-spy puts one process at about 3,000 postbacks/s "
        "on a free core. Here the worker's processes share the two cores with PostgreSQL "
        "(claims and outcome records), Redis and the receiver, itself a Python process doing "
        "as much work per request as the sender; the raw sender, with no database and one "
        "process, is the ceiling of that receiver. More throughput per host comes from more "
        "worker cores: claims are `SKIP LOCKED` and the per-host cap is shared through Redis, "
        "so worker processes and nodes add up (docs/scaling.md).",
        "",
        "The worker takes every queue, as the unit starts it: first attempts still never wait "
        "behind retries, because the first lane's batches only claim postbacks never tried "
        "(docs/deploy.md has the split into a first-attempt and a retry worker for larger "
        "nodes).",
        "",
        "Reproduce: `DATABASE_URL=… REDIS_URL=… python bench/dispatch.py --write "
        "docs/performance.md`.",
        MARK_END,
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument(
        "--raised-backlog",
        type=int,
        default=20_000,
        help="per raised-cap run (a run of a few seconds is mostly start and finish)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per latency run")
    parser.add_argument("--raised-cap", type=int, default=64, help="the receiver's own cap")
    parser.add_argument("--write", type=Path, help="update this Markdown file's section")
    parser.add_argument(
        "--raised-only", action="store_true", help="only the raised-cap runs (profiling)"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "var" / "bench" / "dispatch.json")
    args = parser.parse_args()
    # A stopped benchmark (Ctrl-C, SIGTERM) still stops the worker and servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("DATABASE_URL", os.environ.get("BENCH_DATABASE_URL", ""))
    os.environ.setdefault("REDIS_URL", os.environ.get("BENCH_REDIS_URL", ""))
    if not os.environ["DATABASE_URL"] or not os.environ["REDIS_URL"]:
        raise SystemExit("Set DATABASE_URL (PostgreSQL) and REDIS_URL (or BENCH_*).")
    results = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    if args.raised_only:
        print(json.dumps(results, indent=2))
        return
    section = render(results)
    print(section)
    if args.write:
        write_section(args.write, section)


if __name__ == "__main__":
    main()
