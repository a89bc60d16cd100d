"""CPU per conversion of the intake, in one process: no web server, no load generator.

On a shared machine wrk's req/s follow whatever else runs; the CPU time the Django process
spends per conversion (`time.process_time`, so other processes' load barely moves it) and the
statements it sends do not. This posts `--conversions` conversions (each making two postbacks,
as the HTTP benchmark's) through Django's test client, so every middleware, the URL resolver,
DRF and the services run as in production (`bench.settings`: production settings), against a
fresh database and Redis, and prints one JSON line per round:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/roundtrip_bench_intake \\
    REDIS_URL=redis://127.0.0.1:6379/9 python bench/intake_cpu.py --rounds 3

PostgreSQL's own CPU is not in the figure (another process); the statement count is its proxy.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.http_bench import CLICK_IDS, Env, prepare, reset_database  # noqa: E402

MEASURE = """
import cProfile, json, pstats, time
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
ids = open({ids!r}).read().split()
client = Client(HTTP_AUTHORIZATION="Bearer " + {key!r})
counter = 0
def post():
    global counter
    counter += 1
    body = json.dumps({{"click_id": ids[counter % len(ids)], "txn_id": f"cpu-{{counter}}",
                       "payout": "1.25"}})
    response = client.post("/api/v1/conversions", body, content_type="application/json")
    assert response.status_code == 201, response.content
for _ in range(200):
    post()  # warm-up: caches, prepared code paths
with CaptureQueriesContext(connection) as queries:
    post()
statements = len(queries)
# Copied now: the next request resets the connection's query log.
sql = [query["sql"][:160] for query in queries]
profiler = cProfile.Profile() if {profile!r} else None
started_cpu, started_wall = time.process_time(), time.perf_counter()
if profiler:
    profiler.enable()
for _ in range({conversions}):
    post()
if profiler:
    profiler.disable()
cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
if profiler:
    with open({profile!r}, "w") as out:
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        out.write("--- by cumulative time\\n")
        stats.sort_stats("cumulative").print_stats(45)
        out.write("--- by own time\\n")
        stats.sort_stats("tottime").print_stats(30)
print(json.dumps({{"statements": statements, "conversions": {conversions},
                  "cpu_ms_per_conversion": round(cpu * 1000 / {conversions}, 3),
                  "wall_ms_per_conversion": round(wall * 1000 / {conversions}, 3),
                  "sql": sql}}))
"""


def measure(env: Env, conversions: int, profile: str = "") -> dict:
    reset_database(env.database_url)
    redis.Redis.from_url(env.redis_url).flushdb()
    seed = prepare(env)
    ids_file = Path(tempfile.mkstemp(prefix="click-ids-")[1])
    try:
        # The shell may print a banner first; click ids have no spaces.
        ids = [line for line in env.shell(CLICK_IDS).splitlines() if line and " " not in line]
        ids_file.write_text("\n".join(ids))
        code = MEASURE.format(
            ids=str(ids_file),
            key=seed["advertiser_api_key"],
            conversions=conversions,
            profile=profile,
        )
        return env.shell_json(code)
    finally:
        ids_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sql", action="store_true", help="also print the statements of one")
    parser.add_argument(
        "--profile", default="", help="write cProfile's summary of the measured loop to this file"
    )
    args = parser.parse_args()
    env = Env(os.environ["DATABASE_URL"], os.environ["REDIS_URL"])
    for _ in range(args.rounds):
        result = measure(
            env, args.conversions, str(Path(args.profile).resolve()) if args.profile else ""
        )
        if not args.sql:
            result.pop("sql")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
