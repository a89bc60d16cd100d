"""Time every dashboard page on a database holding a million clicks.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/roundtrip_bench python bench/dashboard.py
    python bench/dashboard.py --clicks 1000000 --repeat 7 --write docs/performance.md

Loads the data once with bench/dataset.py (COPY; skipped when the bench publisher
already has enough clicks), then requests each page in-process through Django's test client
with production settings (DEBUG off, the whole middleware stack, templates rendered): server
time without the network. Each page is warmed up once, then timed `--repeat` times; the table
gives the median and the slowest run, and the number of SQL queries. Results go to
var/bench/dashboard.json and, with --write, into the "Dashboard" section of docs/performance.md
(between its markers; the rest of the file is left alone).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("DEBUG", "false")

START = "<!-- dashboard-bench:start -->"
END = "<!-- dashboard-bench:end -->"
PUBLISHER = "Bench Publisher"
BUDGET_MS = 300


def setup(clicks: int):
    import django

    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database (it will be filled).")
    django.setup()
    from django.core.management import call_command

    from bench.dataset import dataset_generate
    from publishers.models import Publisher
    from tracking.models import Click

    call_command("migrate", verbosity=0, skip_checks=True)
    # Production static storage needs its manifest (var/static, as on a real deploy).
    call_command("collectstatic", interactive=False, verbosity=0, skip_checks=True)
    publisher = Publisher.objects.filter(name=PUBLISHER).first()
    have = Click.objects.filter(publisher=publisher).count() if publisher else 0
    if have < clicks:
        started = time.monotonic()
        dataset_generate(clicks=clicks - have, publisher=PUBLISHER, owner="bench")
        print(f"generated {clicks - have} clicks in {time.monotonic() - started:.1f}s")
    publisher = Publisher.objects.get(name=PUBLISHER)
    _pairs_ensure(publisher)
    return publisher


def _pairs_ensure(publisher) -> None:
    """Clicks loaded before the pair rollup existed: build it once, as beat would have."""
    from django.utils import timezone

    from tracking.models import Click, PairStatDay
    from tracking.rollups import stats_pairs_build

    if PairStatDay.objects.filter(publisher=publisher).exists():
        return
    first = Click.objects.filter(publisher=publisher).order_by("created_at").first()
    if first is None:
        return
    now = timezone.now()
    started = time.monotonic()
    stats_pairs_build(
        publisher_id=publisher.pk, first=first.created_at.date(), last=now.date(), until=now
    )
    print(f"built the pair rollup in {time.monotonic() - started:.1f}s")


def pages(publisher) -> list[tuple[str, str]]:
    """(label, url) for every dashboard page, with realistic parameters."""
    from django.utils import timezone

    from postbacks.models import Postback
    from publishers.models import CallbackTemplate
    from tracking.models import Click, Conversion
    from tracking.selectors.logs import CONVERSION_LOG

    today = timezone.now().date()
    month = f"start={today - timedelta(days=29)}&end={today}"
    converted = Conversion.objects.filter(publisher=publisher).select_related("click").first()
    spid = converted.click.spid
    deep = (
        Conversion.objects.filter(publisher=publisher).order_by("-created_at", "-public_id")[
            20_000:20_001
        ]
    ).first()
    click_id = Click.objects.filter(publisher=publisher).values_list("click_id", flat=True)[0]
    template = CallbackTemplate.objects.filter(publisher=publisher).first()
    postback = Postback.objects.filter(publisher=publisher).first()
    return [
        ("Overview, last 7 days", "/dashboard/"),
        ("Overview, last 30 days", "/dashboard/?period=30d"),
        ("Reports by day, 30 days", f"/dashboard/reports/?group_by=day&{month}"),
        ("Reports by day, 30 days, Berlin time", f"/dashboard/reports/?group_by=day&{month}&tz=Europe/Berlin"),
        ("Reports by day, click-time attribution", f"/dashboard/reports/?group_by=day&{month}&attribution=click"),
        ("Reports by country", f"/dashboard/reports/?group_by=country&{month}&sort=clicks&dir=desc"),
        ("Reports by placement", f"/dashboard/reports/?group_by=placement&{month}"),
        ("Reports by campaign", f"/dashboard/reports/?group_by=campaign&{month}"),
        ("Reports by creative", f"/dashboard/reports/?group_by=creative&{month}"),
        ("Reports by smart ad", f"/dashboard/reports/?group_by=smart_ad&{month}"),
        ("Reports by keyword", f"/dashboard/reports/?group_by=keyword&{month}"),
        ("Reports by day, country = US", f"/dashboard/reports/?group_by=day&country=US&{month}"),
        ("Reports CSV export by country", f"/dashboard/reports/?group_by=country&{month}&format=csv"),
        ("Reports, two dimensions (pair rollup), 7 days", f"/dashboard/reports/?group_by=country&placement=sidebar&start={today - timedelta(days=6)}&end={today}"),
        ("Reports, two dimensions (pair rollup), 30 days", f"/dashboard/reports/?group_by=country&placement=sidebar&{month}"),
        ("Conversions, first page", "/dashboard/conversions/"),
        ("Conversions, page 400 (keyset)", f"/dashboard/conversions/?after={CONVERSION_LOG.encode(deep.created_at, deep.public_id)}"),
        ("Conversions, status = pending", "/dashboard/conversions/?status=pending"),
        ("Conversions, by spid", f"/dashboard/conversions/?spid={spid}"),
        ("Trace a spid", f"/dashboard/trace/?q={spid}"),
        ("Trace a click id", f"/dashboard/trace/?q={click_id}"),
        ("Trace an event id", f"/dashboard/trace/?q={postback.event_id}"),
        ("Callbacks", "/dashboard/callbacks/"),
        ("Callback editor", f"/dashboard/callbacks/{template.public_id}/"),
        ("Deliveries, failing", "/dashboard/deliveries/"),
        ("Deliveries, pending", "/dashboard/deliveries/?state=pending"),
        ("Links & ads", "/dashboard/links/"),
        ("API keys", "/dashboard/api-keys/"),
        ("Settings", "/dashboard/settings/"),
        ("Activity", "/dashboard/activity/"),
    ]  # fmt: skip


def measure(publisher, repeat: int) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    results = []
    for label, url in pages(publisher):
        response = client.get(url)  # warm-up: caches, plans, session
        assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        results.append(
            {
                "page": label,
                "url": url,
                "median_ms": round(statistics.median(times), 1),
                "max_ms": round(max(times), 1),
                "queries": len(queries.captured_queries),
            }
        )
        print(f"{results[-1]['median_ms']:8.1f} ms  {results[-1]['max_ms']:8.1f} ms  {label}")
    return results


def environment(publisher) -> dict:
    from django.db import connection

    from tracking.models import Click, Conversion, HourlyStat

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    return {
        "clicks": Click.objects.filter(publisher=publisher).count(),
        "conversions": Conversion.objects.filter(publisher=publisher).count(),
        "rollup_rows": HourlyStat.objects.filter(publisher=publisher).count(),
        "postgresql": version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(results: list[dict], env: dict, repeat: int) -> str:
    slowest = max(results, key=lambda r: r["median_ms"])
    within = sum(r["median_ms"] < BUDGET_MS for r in results)
    lines = [
        START,
        "## Dashboard",
        "",
        f"Every dashboard page on PostgreSQL {env['postgresql']} with **{env['clicks']:,} clicks**, "
        f"{env['conversions']:,} conversions and their postbacks for one publisher "
        f"({env['rollup_rows']:,} rows in the hourly rollup), loaded by "
        "`bench/dataset.py`. Server time through Django's test client with production "
        f"settings (DEBUG off, full middleware, templates rendered), median of {repeat} runs after a "
        f"warm-up; {env['cpus']} shared cores, load average {env['load_average'][0]} during the run.",
        "",
        f"**{within} of {len(results)} pages under {BUDGET_MS} ms**; slowest median: "
        f"{slowest['page']} ({slowest['median_ms']} ms).",
        "",
        "| Page | Median ms | Slowest ms | SQL queries |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['page']} | {r['median_ms']} | {r['max_ms']} | {r['queries']} |" for r in results
    ]
    lines += [
        "",
        "Reports read `tracking.HourlyStat` (one row per hour × campaign × dimension value, rebuilt "
        "from raw rows every minute and for every hour a conversion touches), so their cost "
        "follows the number of distinct values per hour, not the number of clicks. A report that "
        "filters on one dimension and groups by another reads `tracking.DailyPairStat` (clicks per "
        "UTC day × campaign × pair of values, extended every minute with the clicks since its last "
        "run and rebuilt once per finished day) for its whole days, raw clicks only for the hours "
        "around them (another time zone's day edges, the last minutes), and conversions through "
        "their copies of the click's dimensions (no join to the partitioned clicks): the "
        "two-dimension rows cost about the same at any click volume. Only a report crossing three "
        "dimensions reads raw clicks throughout. The conversion log pages by keyset, so page 400 "
        "costs what page 1 does.",
        "",
        "Reproduce: `DATABASE_URL=postgres://…/roundtrip_bench python bench/dashboard.py "
        f"--clicks {env['clicks']} --repeat {repeat} --write docs/performance.md`.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, start: str = START, end: str = END) -> None:
    """Replace the part of `path` between the markers `start` and `end` (which `section`
    carries), or append `section` when they are not there yet."""
    text = path.read_text() if path.exists() else "# Performance\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--write", type=Path, help="Markdown file whose Dashboard section to replace"
    )
    args = parser.parse_args()
    publisher = setup(args.clicks)
    results = measure(publisher, args.repeat)
    env = environment(publisher)
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard.json").write_text(
        json.dumps({"environment": env, "pages": results}, indent=2)
    )
    if args.write:
        write_section(args.write, markdown(results, env, args.repeat))
        print(f"wrote the Dashboard section of {args.write}")


if __name__ == "__main__":
    main()
