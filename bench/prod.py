"""The production command lines, read from the systemd units docs/deploy.md installs.

The benchmarks start the web servers and the Celery worker exactly as `deploy/systemd/*.service`
does (same server, workers, threads, pool and concurrency), so the figures in
docs/performance.md are those of the recommended deployment and can't drift from it: change a
unit and the next `make bench` measures the change. Only what can't apply on a benchmark
machine is substituted: the install path (this virtualenv), the address and port, the log
level, the worker's node name.
"""

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UNITS = ROOT / "deploy" / "systemd"
ENV_EXAMPLE = ROOT / "deploy" / "roundtrip.env.example"
# The web pools, each its own unit (docs/deploy.md, "Web pools"); nginx routes by path.
POOLS = ("redirect", "api", "portal")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def documented_env() -> dict[str, str]:
    """deploy/roundtrip.env.example as a dict (what the units' EnvironmentFile= holds)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def unit_argv(unit: str) -> list[str]:
    """The unit's `ExecStart=` as argv, its program taken from this virtualenv and its
    `${VARIABLES}` (the pool sizes) from this environment, else from the documented one."""
    env = {**documented_env(), **os.environ}
    for line in (UNITS / unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line[len("ExecStart=") :])
            argv = shlex.split(command)
            return [str(BIN / Path(argv[0]).name), *argv[1:]]
    raise ValueError(f"{unit} has no ExecStart=")


def _set_option(argv: list[str], option: str, value: str) -> list[str]:
    """Replace `option`'s value (`--opt value` or `--opt=value`), or append it."""
    out = list(argv)
    for i, token in enumerate(out):
        if token == option:
            out[i + 1] = value
            return out
        if token.startswith(option + "="):
            out[i] = f"{option}={value}"
            return out
    return [*out, option, value]


def web_argv(port: int, app: str | None = None, pool: str = "redirect") -> list[str]:
    """roundtrip-<pool>.service on 127.0.0.1:`port`; `app` swaps the WSGI application (the
    plain-WSGI baseline runs on the very same server settings)."""
    *argv, unit_app = unit_argv(f"roundtrip-{pool}.service")  # options, then the application
    argv = _set_option(argv, "--host", "127.0.0.1")
    argv = _set_option(argv, "--port", str(port))
    argv = _set_option(argv, "--log-level", "warning")
    return [*argv, app or unit_app]


def web_summary(pool: str = "redirect") -> str:
    """A web pool unit's server and its process settings, for the report."""
    argv = unit_argv(f"roundtrip-{pool}.service")
    keep = []
    for i, token in enumerate(argv):
        if token in ("--workers", "--blocking-threads", "--threads", "--interface"):
            keep += [token, argv[i + 1]]
    return " ".join([Path(argv[0]).name, *keep])


def worker_argv(hostname: str) -> list[str]:
    """roundtrip-worker.service (every queue, its pool and concurrency), quieter logs."""
    argv = unit_argv("roundtrip-worker.service")
    argv = _set_option(argv, "--loglevel", "WARNING")
    return _set_option(argv, "--hostname", hostname)


def worker_summary() -> str:
    argv = unit_argv("roundtrip-worker.service")
    argv = _set_option(argv, "--loglevel", "INFO")
    return " ".join([Path(argv[0]).name, *argv[1:]])


def nginx_config(
    upstreams: Mapping[str, Sequence[str]],
    listen: str | None,
    workdir: Path,
    *,
    name: str = "nginx",
    bounds: Mapping[str, int] | None = None,
) -> Path:
    """deploy/nginx/roundtrip.conf, runnable outside a real install (benchmarks, tests, the
    multi-node cluster): each pool in `upstreams` lists those servers ("host:port", with the
    options of the shipped file's first server line), nginx listens on `listen` ("port" or
    "address:port"; None: as shipped), its log and pid files are `workdir`/`name`-*, and `bounds`
    replaces a pool's load-shedding bound. Nothing else changes."""
    text = (ROOT / "deploy" / "nginx" / "roundtrip.conf").read_text()
    for pool, servers in upstreams.items():
        start = text.index(f"upstream roundtrip_{pool} {{")
        end = text.index("}", start)
        block = text[start:end]
        shipped = re.findall(r"^\s*server \S+:\d+ .*;$", block, flags=re.M)
        if not shipped:
            raise ValueError(f"no server lines in upstream roundtrip_{pool}")
        address = shipped[0].split()[1]
        lines = "\n".join(shipped[0].replace(address, server) for server in servers)
        text = text[:start] + block.replace("\n".join(shipped), lines) + text[end:]
    for pool, bound in (bounds or {}).items():
        line = re.search(rf"limit_conn {pool}_inflight \d+;", text).group(0)
        text = text.replace(line, f"limit_conn {pool}_inflight {bound};")
    if listen is not None:
        text = text.replace("listen 80 default_server", f"listen {listen} default_server")
    text = text.replace("/var/log/nginx/roundtrip-", f"{workdir}/{name}-")
    text = text.replace("/run/nginx-roundtrip.pid", f"{workdir}/{name}.pid")
    path = workdir / f"{name}.conf"
    path.write_text(text)
    return path


def local_upstreams(ports: Mapping[str, int]) -> dict[str, list[str]]:
    """One web process per pool on this machine: `nginx_config`'s upstreams."""
    return {pool: [f"127.0.0.1:{port}"] for pool, port in ports.items()}


class Processes:
    """Production processes for one benchmark on this machine: the documented environment
    (deploy/roundtrip.env.example) with this run's database, Redis and public host name, plain
    HTTP on 127.0.0.1, and every process in a session of its own with its log in a scratch
    directory (kept when BENCH_KEEP_LOGS is set)."""

    def __init__(self, name: str, database_url: str, redis_url: str, host: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"roundtrip-bench-{name}-"))
        self.env = {
            **os.environ,
            **documented_env(),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "SECRET_KEY": "bench-secret-key-not-for-production-0123456789abcdef",
            "ALLOWED_HOSTS": host,
            "SITE_URL": f"http://{host}",
            "CSRF_TRUSTED_ORIGINS": f"http://{host}",
            "DEBUG": "false",
            # Plain HTTP on 127.0.0.1: no TLS redirect, cookies without the Secure flag.
            "BEHIND_TLS_PROXY": "false",
            "SECURE_SSL_REDIRECT": "false",
            "SECURE_HSTS_SECONDS": "0",
            "SECURE_COOKIES": "false",
            "TRUSTED_PROXIES": "127.0.0.1/32",
            # The receivers are on 127.0.0.1; nothing else differs from the defaults.
            "POSTBACKS_ALLOW_PRIVATE_DESTINATIONS": "true",
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "metrics"),
            "ROUNDTRIP_VAR_DIR": str(self.workdir / "var"),
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        (self.workdir / "metrics").mkdir()
        self.processes: list[subprocess.Popen] = []

    def manage(self, *args: str, **extra: str) -> str:
        """Run a management command to its end; its output, or exit with its errors."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **extra},
            capture_output=True,
            text=True,
        )
        if result.returncode:
            sys.stderr.write(result.stdout + result.stderr)
            raise SystemExit(f"manage.py {args[0]} failed")
        return result.stdout

    def start(self, argv: list[str], name: str) -> None:
        log = (self.workdir / f"{name}.log").open("w")
        self.processes.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def down(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
