"""`make bench`: every benchmark in sequence, each stage timed, the whole run unattended.

Order matters for time: the growth datasets are loaded at most once (and kept between runs,
see bench/http_bench.py), the dashboard benchmark reads the 1 M-click dataset the growth step
just measured, and the 10 M-click step comes last. Stage durations go to var/bench/run.json;
bench/report.py, the last stage, writes them into docs/performance.md.

    BENCH_DATABASE_URL=postgres://…/roundtrip_bench BENCH_REDIS_URL=redis://…/11 \\
        python bench/run.py [--quick] [--only isolation]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.http_bench import dataset_url  # noqa: E402

PY = sys.executable
OUT = ROOT / "var" / "bench"
DOC = ROOT / "docs" / "performance.md"


def stages(args: argparse.Namespace) -> list[tuple[str, list[str], dict[str, str]]]:
    db, redis_url = args.database_url, args.redis_url
    quick = ["--quick"] if args.quick else []
    # Growth rows compare sizes with each other: shorter runs than the main table's suffice.
    growth = quick or ["--seconds", "3"]
    http = [PY, "bench/http_bench.py", "--database-url", db, "--redis-url", redis_url]
    django = {"DATABASE_URL": db, "REDIS_URL": redis_url}
    dashboard_db = {"DATABASE_URL": dataset_url(db, 1_000_000), "REDIS_URL": redis_url}
    dispatch = (
        ["--seconds", "2", "--backlog", "3000", "--raised-backlog", "5000"]
        if args.quick
        else ["--backlog", "8000"]
    )
    large = 1_000_000 if args.quick else 10_000_000
    isolation = ["--seconds", "4", "--repeat", "1"] if args.quick else []
    fair = ["--seconds", "4", "--hang-seconds", "8", "--repeat", "1"] if args.quick else []
    return [
        ("Click redirect, baselines, intake (fresh database)", [*http, "base", *quick], {}),
        ("Growth at 1 M clicks", [*http, "growth", "--clicks", "1000000", *growth], {}),
        ("Dashboard pages at 1 M clicks",
         [PY, "bench/dashboard.py", "--clicks", "1000000", "--repeat", "5", "--write", str(DOC)],
         dashboard_db),
        ("Postback dispatch", [PY, "bench/dispatch.py", "--write", str(DOC), *dispatch], django),
        ("Isolation: web pools and per-caller limits",
         [PY, "bench/isolation.py", "--write", str(DOC), *isolation], django),
        ("Fair delivery: hanging endpoints beside a healthy one",
         [PY, "bench/fairness.py", "--write", str(DOC), *fair], django),
        (f"Growth at {large // 1_000_000} M clicks",
         [*http, "growth", "--clicks", str(large), *growth], {}),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, growth to 1 M only")
    parser.add_argument("--only", help="run only the stages whose name contains this, e.g. "
                        "isolation")  # fmt: skip
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/roundtrip_bench"))  # fmt: skip
    parser.add_argument("--redis-url", default=os.environ.get(
        "BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))  # fmt: skip
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done: list[dict] = []
    chosen = [s for s in stages(args) if not args.only or args.only.lower() in s[0].lower()]
    if not chosen:
        raise SystemExit(f"no stage matches {args.only!r}")
    for name, argv, env in chosen:
        print(f"\n=== {name}", flush=True)
        stage_started = time.monotonic()
        stage = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env})
        try:
            if stage.wait():
                raise SystemExit(f"{name} failed (exit status {stage.returncode})")
        finally:
            if stage.poll() is None:  # stopped ourselves: stop the stage (it cleans up)
                stage.terminate()
                stage.wait(30)
        done.append({"stage": name, "seconds": round(time.monotonic() - stage_started, 1)})
        print(f"=== {name}: {done[-1]['seconds']:.0f} s", flush=True)
    if args.only:
        return  # a partial run: the stage wrote its own section; run.json keeps the full run's
    run = {
        "stages": done,
        "total_seconds": round(time.monotonic() - started, 1),
        "quick": args.quick,
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (OUT / "run.json").write_text(json.dumps(run, indent=2))
    subprocess.run([PY, "bench/report.py"], cwd=ROOT, check=True)
    print("\nStage                                               seconds")
    for stage in done:
        print(f"{stage['stage']:<52}{stage['seconds']:>7.0f}")
    total = time.monotonic() - started
    print(f"{'Total (with the report)':<52}{total:>7.0f}  ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
