"""A production-shaped Roundtrip installation on network namespaces, built from `deploy/`.

Hosts (one namespace each, see netns.py): `svc` (PostgreSQL and Redis of the test's own, on the
bridge address), `lb` (nginx), `ext` (the outside world: load generator and the publisher's
callback receiver, run in threads of the test process), `ops` (migrations, seed data, beat),
`web1`/`web2` (granian) and `wk1`/`wk2` (Celery workers).

Every process is started from the files an operator installs: the argv is the `ExecStart=` of
the systemd unit, the environment is `deploy/roundtrip.env.example`, nginx runs
`deploy/nginx/roundtrip.conf`; `render_*` apply the few substitutions a real install makes
(paths, addresses, secrets) plus the test's shorter timeouts, and nothing else.
"""

import contextlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bench.prod import POOLS, nginx_config
from tests.e2e.processes import Service, stop_all, wait_until
from tests.multinode.netns import Host, Network
from tests.with_services import find_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PUBLIC_HOST = "track.example.com"  # ALLOWED_HOSTS in the documented environment
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
# Shorter than production so recovery happens within the test: a row claimed by a killed
# worker is claimable again after 8 s, a click read by a killed flusher after 2 s.
TEST_TIMINGS = {
    "POSTBACKS_SWEEP_INTERVAL": "1",
    "POSTBACKS_CONNECT_TIMEOUT": "1",
    "POSTBACKS_TOTAL_TIMEOUT": "3",
    "POSTBACKS_TASK_TIME_LIMIT": "6",
    "POSTBACKS_LEASE_SECONDS": "8",
    "POSTBACKS_RETRY_SCHEDULE": ",".join(["1"] * 20),
    "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT": "5",
    "CLICKS_BUFFER_CLAIM_IDLE_MS": "2000",
}


# --- Rendering deploy/ ------------------------------------------------------------------------


def documented_env() -> dict[str, str]:
    """`deploy/roundtrip.env.example` as a dict (what systemd's EnvironmentFile= reads)."""
    values = {}
    for line in (DEPLOY / "roundtrip.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def unit_argv(unit: str, **specifiers: str) -> list[str]:
    """The `ExecStart=` of `deploy/systemd/<unit>.service` for this checkout; systemd
    specifiers (`%H`) are replaced from `specifiers` (`H="wk1"`), `${VARIABLES}` from the
    documented environment (as systemd does from EnvironmentFile=)."""
    text = (DEPLOY / "systemd" / f"{unit}.service").read_text()
    line = next(
        line.partition("=")[2] for line in text.splitlines() if line.startswith("ExecStart=")
    )
    for name, value in specifiers.items():
        line = line.replace(f"%{name}", value)
    env = documented_env()
    line = re.sub(r"\$\{(\w+)\}", lambda match: env[match.group(1)], line)
    return [part.replace("/opt/roundtrip", str(REPO)) for part in shlex.split(line)]


def pool_port(pool: str) -> int:
    """The unit's --port: every web node runs each pool there (a host has its own ports)."""
    unit = (DEPLOY / "systemd" / f"roundtrip-{pool}.service").read_text()
    return int(re.search(r"--port (\d+)", unit).group(1))


# --- The publisher's server ------------------------------------------------------------------


class CallbackReceiver:
    """Counts callbacks by event id (`?e=`), listening on an address of the `ext` host."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.arrivals: list[float] = []  # time.time() of each callback
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self, network: Network, host: Host) -> "CallbackReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                event_id = parse_qs(urlsplit(self.path).query).get("e", [""])[0]
                with receiver.lock:
                    receiver.counts[event_id] += 1
                    receiver.arrivals.append(time.time())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        with network.inside(host):
            self.server = ThreadingHTTPServer((host.address, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host.address}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def received(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# --- The installation ------------------------------------------------------------------------


@dataclass
class Cluster:
    network: Network
    workdir: Path
    services: dict[str, Service] = field(default_factory=dict)
    pg_dir: Path | None = None
    seed: dict = field(default_factory=dict)
    receiver: CallbackReceiver | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(50))
    redis_password: str = field(default_factory=lambda: secrets.token_hex(16))

    # Layout: role -> last octet of the address.
    LAYOUT = {"svc": 2, "lb": 3, "ext": 4, "ops": 5, "web1": 11, "web2": 12, "wk1": 21, "wk2": 22}

    @property
    def svc(self) -> Host:
        return self.network.hosts["svc"]

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def build_network(self) -> None:
        (self.workdir / "var" / "static").mkdir(parents=True, exist_ok=True)
        (self.workdir / "metrics").mkdir()
        self.network.create()
        for role, octet in self.LAYOUT.items():
            self.network.add_host(role, octet)

    # PostgreSQL and Redis -----------------------------------------------------------------

    def start_postgres(self) -> None:
        hint = "Install PostgreSQL (Debian: apt-get install postgresql)."
        initdb, pg_ctl = find_binary("initdb", hint), find_binary("pg_ctl", hint)
        # Owned by the postgres account (PostgreSQL refuses to run as root); root, running
        # the test, reaches the unix socket in it regardless.
        self.pg_dir = Path(tempfile.mkdtemp(prefix="roundtrip-mn-pg-"))
        account = pwd.getpwnam("postgres")
        os.chown(self.pg_dir, account.pw_uid, account.pw_gid)
        data = self.pg_dir / "data"
        as_postgres = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_postgres, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.network.subnet} trust\n")
        options = (
            f"-p 5432 -k {self.pg_dir} -c listen_addresses={self.svc.address} "
            "-c fsync=off -c synchronous_commit=off -c max_connections=200"
        )
        subprocess.run(
            [
                *self.svc.exec_prefix(),
                *as_postgres,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(self.pg_dir / "log"),
                "-w",
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.psql("CREATE DATABASE roundtrip", dbname="postgres")

    def pg_connect(self, dbname: str = "roundtrip"):
        """A psycopg connection through the unix socket (the test process is not on the
        test network; the socket is a file, not an address)."""
        import psycopg

        return psycopg.connect(
            host=str(self.pg_dir), port=5432, user="postgres", dbname=dbname, autocommit=True
        )

    def psql(self, sql: str, params: list | None = None, dbname: str = "roundtrip") -> list[tuple]:
        with self.pg_connect(dbname) as conn, conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def stop_postgres(self) -> None:
        if self.pg_dir is None:
            return
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                find_binary("pg_ctl", ""),
                "-D",
                str(self.pg_dir / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.pg_dir, ignore_errors=True)

    def start_redis(self) -> None:
        # The production settings of docs/deploy.md: AOF every second, never evict.
        argv = [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--bind",
            self.svc.address,
            "--port",
            "6379",
            "--unixsocket",
            str(self.workdir / "redis.sock"),
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            # Reachable from other hosts, so protected mode wants a password (docs/deploy.md).
            "--requirepass",
            self.redis_password,
        ]
        service = self._service("redis", self.svc, argv, {})
        wait_until(
            lambda: service.check_alive() or (self.workdir / "redis.sock").exists(),
            timeout=20,
            what="redis-server",
        )

    def redis(self):
        import redis

        return redis.Redis(
            unix_socket_path=str(self.workdir / "redis.sock"),
            password=self.redis_password,
            socket_timeout=5,
        )

    # Roundtrip -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The documented production environment with this installation's addresses."""
        env = documented_env()
        env.update(
            {
                "DATABASE_URL": f"postgres://postgres@{self.svc.address}:5432/roundtrip",
                "REDIS_URL": f"redis://:{self.redis_password}@{self.svc.address}:6379/0",
                "SECRET_KEY": self.secret_key,
                # No TLS in the test: nginx listens on plain HTTP.
                "SECURE_SSL_REDIRECT": "false",
                "TRUSTED_PROXIES": str(self.network.subnet),
                # The publisher's server is on the (private) test network.
                "POSTBACKS_ALLOW_PRIVATE_DESTINATIONS": "true",
                # What the units' RuntimeDirectory= creates on a real host.
                "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "metrics"),
                **TEST_TIMINGS,
            }
        )
        env.update(
            {
                "PATH": f"{REPO / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
                "HOME": str(self.workdir),
                "LANG": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
                "ROUNDTRIP_VAR_DIR": str(self.workdir / "var"),
            }
        )
        return env

    def manage(self, *args: str, host: str = "ops", timeout: float = 120) -> str:
        """`manage.py …` on a host, to completion; returns stdout."""
        result = subprocess.run(
            [*self.network.hosts[host].exec_prefix(), sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def install(self) -> None:
        """Migrate, then create an advertiser, a publisher with a callback template pointing
        at our receiver, and a tracking link."""
        self.manage("migrate", "--no-input", "-v", "0")
        self.receiver = CallbackReceiver().start(self.network, self.network.hosts["ext"])
        output = self.manage("shell", "-c", SEED.replace("RECEIVER_URL", self.receiver.url))
        self.seed = json.loads(output.strip().splitlines()[-1])

    def _service(self, name: str, host: Host, argv: list[str], env: dict) -> Service:
        service = Service(name, [*host.exec_prefix(), *argv], env or self.env(), self.logs)
        self.services[name] = service
        return service.start()

    def start_web(self, name: str) -> list[Service]:
        """Every web pool on host `name`, as services `<name>-<pool>`."""
        return [
            self._service(
                f"{name}-{pool}", self.network.hosts[name], unit_argv(f"roundtrip-{pool}"), {}
            )
            for pool in POOLS
        ]

    def start_worker(self, name: str) -> Service:
        argv = unit_argv("roundtrip-worker", H=name)
        return self._service(name, self.network.hosts[name], argv, {})

    def start_beat(self, name: str = "beat", host: str = "ops") -> Service:
        schedule = str(self.workdir / f"{name}-schedule")
        argv = [
            schedule if part.startswith("/var/lib/roundtrip/") else part
            for part in unit_argv("roundtrip-beat")
        ]
        return self._service(name, self.network.hosts[host], argv, {})

    def start_nginx(self, name: str, *, upstreams: list[str], port: int) -> Service:
        addresses = [self.network.hosts[u].address for u in upstreams]
        config = nginx_config(
            {pool: [f"{a}:{pool_port(pool)}" for a in addresses] for pool in POOLS},
            str(port),
            self.workdir,
            name=name,
        )
        argv = [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(config)]
        return self._service(name, self.network.hosts["lb"], [*argv, "-g", "daemon off;"], {})

    def wait_http(self, host: str, port: int, path: str = "/healthz", timeout: float = 60) -> None:
        """Wait until `host:port` answers `path` with 200, asked from the `ext` host."""
        import http.client

        target = self.network.hosts[host].address

        def answers() -> bool:
            for service in self.services.values():
                service.check_alive()
            # The socket is created by request(): it must happen inside the namespace.
            with self.network.inside(self.network.hosts["ext"]):
                conn = http.client.HTTPConnection(target, port, timeout=2)
                try:
                    conn.request("GET", path, headers={"Host": PUBLIC_HOST})
                    return conn.getresponse().status == 200
                except OSError:
                    return False
                finally:
                    conn.close()

        wait_until(answers, timeout=timeout, interval=0.2, what=f"{host}:{port}{path}")

    def kill(self, name: str) -> None:
        """SIGKILL a node's whole process group at once, as a lost machine would stop."""
        import signal

        from tests.e2e.processes import signal_groups

        # A web node is its pools' services, killed together.
        names = [f"{name}-{pool}" for pool in POOLS] if name not in self.services else [name]
        services = [self.services[n] for n in names]
        signal_groups({g for service in services for g in service.process_groups()}, signal.SIGKILL)
        for service in services:
            service.process.wait(10)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.receiver is not None:
                self.receiver.stop()
        stop_all(list(self.services.values()), timeout=5)
        self.stop_postgres()
        self.network.destroy()

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {name} ---\n{service.log_tail(lines)}" for name, service in self.services.items()
        )


# Run by `manage.py shell -c` on the ops host; prints one JSON line.
SEED = """
import json
from datetime import timedelta
from decimal import Decimal
from publishers.models import CallbackTemplate, Publisher
from tracking.models import Advertiser, AdvertiserAPIKey, Campaign, TrackingLink
from tracking.services import advertiser_key_create

publisher = Publisher.objects.create(name="Publisher")
advertiser = Advertiser.objects.create(name="Advertiser")
campaign = Campaign.objects.create(
    advertiser=advertiser, name="Campaign", default_payout=Decimal("1.50"), currency="EUR",
    landing_url="https://advertiser.example/landing?click_id=[click_id]",
    attribution_window=timedelta(days=7),
)
link = TrackingLink.objects.create(publisher=publisher, campaign=campaign, code="mnlink")
CallbackTemplate.objects.create(
    publisher=publisher, url_template="RECEIVER_URL/cb?c=[conversion_id]&e=[event_id]"
)
key = advertiser_key_create(advertiser=advertiser, kind=AdvertiserAPIKey.Kind.API)[1]
print(json.dumps({"link": link.code, "api_key": key}))
"""


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s and the 99th percentile latency (ms) from `wrk --latency` output."""
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {"rps": rate, "p99_ms": latency, "non_3xx": float(errors.group(1)) if errors else 0.0}


def click_throughput(
    cluster: Cluster, *, port: int, seconds: int, connections: int = 32
) -> dict[str, float]:
    """Clicks through nginx for `seconds`, from the `ext` host: wrk when it is installed,
    else keep-alive connections from threads of this process (a slower client)."""
    if shutil.which("wrk"):
        return wrk(cluster, port=port, seconds=seconds, connections=connections)
    return python_bench(cluster, port=port, seconds=seconds, connections=min(connections, 16))


def python_bench(cluster: Cluster, *, port: int, seconds: int, connections: int) -> dict:
    import http.client

    lb = cluster.network.hosts["lb"].address
    path = f"/click?ref={cluster.seed['link']}&spid=bench"
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run() -> None:
        nonlocal errors
        mine, failed = [], 0
        with cluster.network.inside(cluster.network.hosts["ext"]):
            conn = http.client.HTTPConnection(lb, port, timeout=10)
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    conn.request(
                        "GET", path, headers={"Host": PUBLIC_HOST, "User-Agent": BROWSER_UA}
                    )
                    response = conn.getresponse()
                    response.read()
                    failed += response.status != 302
                except (OSError, http.client.HTTPException):
                    conn.close()
                    failed += 1
                mine.append(time.monotonic() - started)
            conn.close()
        with lock:
            latencies.extend(mine)
            errors += failed

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    return {"rps": len(latencies) / seconds, "p99_ms": p99, "non_3xx": float(errors), "tool": 0}


def wrk(cluster: Cluster, *, port: int, seconds: int, connections: int = 32) -> dict[str, float]:
    """Clicks through nginx for `seconds` with wrk, from the `ext` host."""
    lb = cluster.network.hosts["lb"].address
    url = f"http://{lb}:{port}/click?ref={cluster.seed['link']}&spid=bench"
    argv = [
        *cluster.network.hosts["ext"].exec_prefix(),
        shutil.which("wrk") or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Host: {PUBLIC_HOST}",
        "-H",
        f"User-Agent: {BROWSER_UA}",
        url,
    ]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    assert result.returncode == 0, result.stderr
    figures = parse_wrk(result.stdout)
    figures["seconds"] = time.monotonic() - started
    figures["tool"] = 1
    return figures
