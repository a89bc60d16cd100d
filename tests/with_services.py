"""Run a command (the test suite) with real PostgreSQL and Redis.

`DATABASE_URL` / `REDIS_URL`, when set, name the servers to use. Otherwise this starts
throwaway ones from the machine's `postgres` and `redis-server` binaries in a temporary
directory on free ports, and removes them afterwards.

    python tests/with_services.py -- python -m pytest -x
"""

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"Server on port {port} did not start within {timeout:g}s.")


def find_binary(name: str, hint: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise SystemExit(f"`{name}` not found. {hint}")
    return found


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    hint = (
        "Install PostgreSQL (Debian: apt-get install postgresql) or set DATABASE_URL "
        "to an existing server, e.g. postgres://postgres@127.0.0.1:5432/roundtrip."
    )
    initdb, pg_ctl = find_binary("initdb", hint), find_binary("pg_ctl", hint)
    workdir = tempfile.mkdtemp(prefix="roundtrip-pg-")
    run_as: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root; use the postgres account when there is one.
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise SystemExit(
                "Running as root needs a 'postgres' user to start PostgreSQL."
            ) from None
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = os.path.join(workdir, "data")
    subprocess.run(
        [*run_as, initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            data,
            "-o",
            options,
            "-l",
            os.path.join(workdir, "log"),
            "-w",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", data, "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    server = find_binary(
        "redis-server", "Install Redis (Debian: apt-get install redis-server) or set REDIS_URL."
    )
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        raise SystemExit(__doc__)
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(throwaway_postgres())
            print(f"Using a throwaway PostgreSQL: {env['DATABASE_URL']}", flush=True)
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(throwaway_redis())
            print(f"Using a throwaway Redis: {env['REDIS_URL']}", flush=True)
        return subprocess.call(argv, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
