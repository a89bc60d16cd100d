"""Start and stop real server processes for end-to-end tests.

Each `Service` runs in its own session (so its process group holds the command and every child
it forks: gunicorn and Celery workers, honcho's children), writes stdout and stderr to one log
file, and is stopped by signalling the whole group: SIGTERM, then SIGKILL for stragglers.
"""

import contextlib
import os
import signal
import subprocess
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
# The virtualenv's bin/: where `gunicorn`, `celery` and `honcho` live next to this interpreter.
SCRIPTS_DIR = Path(sysconfig.get_path("scripts"))
# Clicks come from people's browsers; an HTTP library's own user agent marks a bot click,
# whose conversions are held for review instead of calling the publisher back.
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def wait_until[T](
    check: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Call `check` until it returns something truthy, and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout:g}s waiting for {what}.")
        time.sleep(interval)


@dataclass
class Service:
    """One long-running command, e.g. `Service("web", ["gunicorn", ...], env, logs_dir)`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    cwd: Path = REPO_ROOT
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> "Service":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def check_alive(self) -> None:
        """Fail with the log's tail if the command has exited."""
        assert self.process is not None, f"{self.name} was never started"
        code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"{self.name} exited with {code}:\n{self.log_tail()}\n--- end of {self.name} log"
            )

    def wait_for_log(self, needle: str, timeout: float = 30.0) -> None:
        """Wait until `needle` appears in the log (a readiness line)."""

        def seen() -> bool:
            self.check_alive()
            return needle in self.log()

        try:
            wait_until(seen, timeout=timeout, what=f"{self.name} to log {needle!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}\n--- end of {self.name} log") from None

    def wait_for_http(self, url: str, timeout: float = 30.0) -> None:
        """Wait until `url` answers at all (any status code)."""

        def answers() -> bool:
            self.check_alive()
            try:
                requests.get(url, timeout=5, allow_redirects=False)
            except (requests.ConnectionError, requests.Timeout):
                # Not listening yet, or listening while its workers still boot.
                return False
            return True

        try:
            wait_until(answers, timeout=timeout, what=f"{self.name} to answer {url}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}\n--- end of {self.name} log") from None

    def process_groups(self) -> set[int]:
        """Our group (start_new_session: its id is the leader's pid) and those of any
        descendant that started its own session, as honcho does for each Procfile line."""
        if self.process is None:
            return set()
        return {self.process.pid} | descendant_groups(self.process.pid)

    def pids(self) -> set[int]:
        """The command's process and all its descendants (web and pool workers): a set that
        changes when any of them exits and is replaced."""
        if self.process is None:
            return set()
        return {self.process.pid} | {pid for pid, _ in descendants(self.process.pid)}

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the whole process group: politely first, then by force. Safe to call twice."""
        stop_all([self], timeout=timeout)


@dataclass
class Stack:
    """Running services and where to reach the web one."""

    base_url: str
    services: list[Service]

    def check_alive(self) -> None:
        for service in self.services:
            service.check_alive()


def descendants(root: int) -> set[tuple[int, int]]:
    """(pid, process group id) of every descendant of `root`, read from /proc (Linux)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append((int(stat.parent.name), int(fields[2])))
    found: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        for pid, pgrp in children.get(pending.pop(), []):
            found.add((pid, pgrp))
            pending.append(pid)
    return found


def descendant_groups(root: int) -> set[int]:
    """Process group ids of every descendant of `root`."""
    return {pgrp for _, pgrp in descendants(root)}


def signal_groups(groups: set[int], sig: signal.Signals) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def stop_all(services: list[Service], *, timeout: float = 5.0) -> None:
    """SIGTERM every process group of every service at once, wait up to `timeout` in all for
    the commands to exit, then SIGKILL whatever is left of those groups."""
    started = [service for service in services if service.process is not None]
    groups = set().union(*(service.process_groups() for service in started))
    signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for service in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(max(deadline - time.monotonic(), 0.01))
    # Children can outlive their leader (a Celery pool process, a gunicorn worker), and they
    # must all be gone before the test database is flushed or dropped.
    signal_groups(groups, signal.SIGKILL)
    for service in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(5)
