"""Real processes for fault-injection tests: a private redis-server copy, Celery workers, and a
way to point this process's Celery producer at another broker.

Every process runs in its own session, so a SIGKILL to its process group takes the Celery
worker and its pool children down together, the way a lost machine or container would.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
from django.db import connection

from bench.prod import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = Path(sysconfig.get_path("scripts"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def wait_until[T](check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Call `check` until it returns something truthy and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout:g}s waiting for {what}.")
        time.sleep(interval)


def _kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


class CountingReceiver:
    """A threaded HTTP server on 127.0.0.1 that answers 200 to every GET and counts the
    `Roundtrip-Event-Id` header of each. Connections reset by a killed worker are not errors."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with receiver._lock:
                    receiver.counts[self.headers.get("Roundtrip-Event-Id", "")] += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def handle_error(self, request: object, client_address: object) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def received(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class RedisCopy:
    """A redis-server of our own on a free port, without persistence (a restart loses every
    key, as a crashed non-persistent Redis would). Extra `config` goes on the command line."""

    def __init__(self, **config: str) -> None:
        self.port = free_port()
        self.config = config
        self.workdir = tempfile.mkdtemp(prefix="roundtrip-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> "RedisCopy":
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", self.workdir]
        for name, value in self.config.items():
            argv += [f"--{name.replace('_', '-')}", value]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_until(self._answers, timeout=20, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            _kill_group(self.process)
            self.process = None

    def restart(self) -> None:
        """Crash (SIGKILL) and start again on the same port: every queued message is gone."""
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def database_url_for_subprocesses() -> str:
    """The URL of the database pytest-django created, for processes started by a test."""
    params = connection.settings_dict
    auth = params["USER"] or ""
    if params["PASSWORD"]:
        auth += f":{params['PASSWORD']}"
    host = params["HOST"] or "127.0.0.1"
    port = f":{params['PORT']}" if params["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{params['NAME']}"


class CeleryWorker:
    """`celery -A config worker` against the test database and a given broker."""

    def __init__(self, name: str, *, broker_url: str, env: dict[str, str], log_dir: Path):
        self.name = name
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url_for_subprocesses(),
            "TEST_CELERY_BROKER_URL": broker_url,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, *, concurrency: int = 2) -> "CeleryWorker":
        argv = [str(SCRIPTS_DIR / "celery"), "-A", "config", "worker", "--pool", "prefork"]
        argv += ["--concurrency", str(concurrency), "--hostname", f"{self.name}@%h"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
        argv += ["--queues", ",".join(worker_queues())]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(
            lambda: b" ready." in self.log_path.read_bytes() or self._exited(),
            timeout=timeout,
            what=f"worker {self.name} to be ready",
        )
        if self._exited():
            raise AssertionError(f"Worker {self.name} exited:\n{self.log_tail()}")

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def run(self, timeout: float = 60) -> subprocess.CompletedProcess:
        """Start and wait for the worker to exit by itself (for start-up refusals)."""
        self.start(concurrency=1)
        assert self.process is not None
        self.process.wait(timeout)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, mid-task."""
        if self.process is not None:
            _kill_group(self.process)
            self.process = None


def worker_queues() -> list[str]:
    """Every queue a delivery task may be routed to (first attempts and retries apart)."""
    from django.conf import settings

    names = [
        "celery",
        getattr(settings, "POSTBACKS_QUEUE", ""),
        getattr(settings, "POSTBACKS_RETRY_QUEUE", ""),
    ]
    return list(dict.fromkeys(name for name in names if name))


@contextlib.contextmanager
def use_broker(url: str) -> Iterator[None]:
    """Point this process's Celery producer (tasks sent on commit, the sweeper run from the
    test) at `url`, then back."""
    from config.celery import app

    def reset_pools() -> None:
        # The same two caches Celery drops after a fork; the next send connects anew.
        app._pool = None
        app.amqp._producer_pool = None

    previous = app.conf.broker_url
    app.conf.broker_url = url
    reset_pools()
    try:
        yield
    finally:
        app.conf.broker_url = previous
        reset_pools()
