"""Render the HTTP benchmark results (var/bench/http.json) into docs/performance.md.

Writes the section between the `http-bench` markers (other sections — dashboard, postback
dispatch — are left to their own scripts) and a PNG chart next to it.

    python bench/report.py
"""

import json
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "var" / "bench" / "http.json"
DOC = ROOT / "docs" / "performance.md"
CHART = ROOT / "docs" / "performance-http.png"
START, END = "<!-- http-bench:start -->", "<!-- http-bench:end -->"

LABELS = {
    "plain_wsgi": "Plain WSGI callable, 302",
    "bare_django": "Bare Django view, 302 (no database)",
    "click_buffered": "`/click`, buffered write (Redis stream → PostgreSQL)",
    "click_direct": "`/click`, synchronous PostgreSQL commit",
}


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def chart(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    click = results["click"]
    names = [name for name in LABELS if name in click]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.barh([LABELS[n].replace("`", "") for n in names], [click[n]["rps"] for n in names],
              color=["#94a3b8", "#64748b", "#2563eb", "#f59e0b"][: len(names)])  # fmt: skip
    left.set_xlabel("requests/s (median of runs, 32 connections)")
    left.invert_yaxis()
    left.set_title("Click redirect and baselines")
    growth = results.get("growth", [])
    if growth:
        sizes = [row["clicks_in_table"] / 1e6 for row in growth]
        for name, color in (("click_buffered", "#2563eb"), ("click_direct", "#f59e0b")):
            right.plot(sizes, [row["click"][name]["rps"] for row in growth], "o-", color=color,
                       label=LABELS[name].replace("`", ""))  # fmt: skip
        right.set_xlabel("clicks in the table (millions)")
        right.set_ylabel("requests/s")
        right.set_ylim(bottom=0)
        right.set_title("Click cost as the table grows")
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)


def section(results: dict) -> str:
    click = results["click"]
    bare = click["bare_django"]["rps"]
    lines = [
        "## Click redirect and conversion intake",
        "",
        f"Server: {results['server']} (WSGI, 2 workers × 2 threads — the production unit), "
        f"PostgreSQL and Redis on the same 2-core machine as the load generator "
        f"(`wrk -t1 -c32 -d{results['seconds']}s`), production settings (DEBUG off). Each figure "
        f"is the median of {results['repeat']} runs; the variants are interleaved run by run, so "
        "their ratios are comparable even on a noisy machine. "
        f"Python {platform.python_version()}, {_version(['psql', '--version'])}, "
        f"{_version(['redis-server', '--version']).split(' sha=')[0]}.",
        "",
        "| Endpoint | req/s | × bare Django | p50 ms | p99 ms | runs (req/s) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, label in LABELS.items():
        if name in click:
            row = click[name]
            lines.append(
                f"| {label} | {row['rps']:,.0f} | {row['rps'] / bare:.2f} | {row['p50_ms']:.1f} "
                f"| {row['p99_ms']:.1f} | {', '.join(f'{r:,}' for r in row['runs'])} |"
            )
    intake = results["intake"]
    lines += [
        "",
        f"**Conversion intake** (`POST /api/v1/conversions`, each creating one conversion and two "
        f"postbacks and publishing the delivery kick on commit): **{intake['rps']:,.0f} req/s**, "
        f"p50 {intake['p50_ms']:.1f} ms, p99 {intake['p99_ms']:.1f} ms "
        f"(runs: {', '.join(f'{r:,}' for r in intake['runs'])}).",
        "",
        f"![Click redirect and growth]({CHART.name})",
        "",
    ]
    growth = results.get("growth", [])
    if growth:
        lines += [
            "**Growth.** The same click measurements and the dashboard's report query "
            "(`tracking.selectors.report`, last 30 days, for the publisher that owns the loaded "
            "clicks) with the clicks table at each size (rows bulk-loaded with COPY by "
            "`manage.py generate_clicks`):",
            "",
            "| Clicks in table | buffered req/s | direct req/s | bare Django req/s | report by day ms "
            "| by country ms | by placement ms |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in growth:
            c, q = row["click"], row["report_ms"]
            lines.append(
                f"| {row['clicks_in_table']:,} | {c['click_buffered']['rps']:,.0f} | "
                f"{c['click_direct']['rps']:,.0f} | {c['bare_django']['rps']:,.0f} | "
                f"{q.get('day', '–')} | {q.get('country', '–')} | {q.get('placement', '–')} |"
            )
        lines.append("")
    lines += [
        "**Against the targets** (click ≥ 0.6 × bare Django with p99 ≤ 20 ms; intake ≥ 1,000 "
        "req/s): not met. What limits them, from cProfile runs of the same code in one process "
        "(Django's test client, production settings, 1,000 requests each):",
        "",
        "- A click costs ≈ 1.5 ms of CPU against ≈ 0.3 ms for the bare view. Before the "
        "per-process link cache the tracking-link query alone was 1.8 ms of 3.3 ms (compiling a "
        "three-table `select_related` is most of it); the cache removed it. What remains: two "
        "Redis round trips (the unique-click `SET NX EX` and the buffer's `XADD`+`SET` "
        "pipeline, ≈ 0.6 ms together), enrichment (country, user agent: ≈ 0.1 ms) and building "
        "the `Click` and the landing URL. Next steps: fold the unique check into the buffer's "
        "pipeline (one round trip, a Lua script), and build the buffered payload without a "
        "model instance.",
        "- A conversion runs ≈ 13 SQL statements (key lookup, click lookup across partitions, "
        "idempotency check, savepoint, insert, templates, postbacks, the rollup's dirty-hour "
        "mark, commit) and costs ≈ 13 ms of CPU, nearly all in the ORM's query compilation. "
        "Next steps: cache advertiser keys and publishers' templates per process for a few "
        "seconds, skip the idempotency read on the insert path (let the unique constraint "
        "answer), and write postbacks and the dirty-hour mark in one statement.",
        "",
        "Reproduce: `make bench` (or `python bench/http_bench.py [--quick]` then "
        "`python bench/report.py`).",
    ]
    return "\n".join(lines)


def main() -> None:
    results = json.loads(RESULTS.read_text())
    chart(results)
    body = f"{START}\n{section(results)}\n{END}"
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    if START in text:
        head, rest = text.split(START, 1)
        text = head + body + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    DOC.write_text(text)
    print(f"wrote {DOC} and {CHART}")


if __name__ == "__main__":
    main()
