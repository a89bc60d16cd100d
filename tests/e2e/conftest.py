"""End-to-end fixtures: the real web server, Celery worker and Celery beat as subprocesses.

`roundtrip_stack` runs them on the PostgreSQL database pytest-django created and on a Redis
database of their own. It brings `transactional_db`: the test's data is committed, so
the subprocesses see it.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from bench.prod import free_port
from tests.e2e.processes import SCRIPTS_DIR, Service, Stack, stop_all

# Retries every ~1 s, thirty of them: plenty of attempts while a receiver is down, and still
# a definite end (a postback that never gets through fails the test instead of hanging).
FAST_RETRY_SCHEDULE = ",".join(["1"] * 30)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the log tails of a failed test's processes to its report."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            for service in getattr(value, "services", []):
                if isinstance(service, Service):
                    report.sections.append((f"{service.name} log (tail)", service.log_tail(80)))
    return report


def e2e_redis_url() -> str:
    """The e2e processes' own Redis database, for their broker queues and their Redis state
    (click buffer, circuit breakers, cache): E2E_REDIS_URL, or REDIS_URL's db 15 (the
    in-process tests' broker uses 14). It is emptied before each start."""
    explicit = os.environ.get("E2E_REDIS_URL")
    if explicit:
        return explicit
    return urlsplit(os.environ["REDIS_URL"])._replace(path="/15").geturl()


def database_url_for(name: str) -> str:
    """DATABASE_URL pointed at pytest-django's test database instead of the configured one."""
    return urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}").geturl()


METRICS_TOKEN = "e2e-metrics-token"


def stack_env(*, database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            # tests/settings.py takes the broker from TEST_CELERY_BROKER_URL; config reads
            # CELERY_BROKER_URL. Set both so either settings module lands on the same queues.
            "TEST_CELERY_BROKER_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "POSTBACKS_ALLOW_PRIVATE_DESTINATIONS": "true",
            "POSTBACKS_RETRY_SCHEDULE": FAST_RETRY_SCHEDULE,
            "POSTBACKS_SWEEP_INTERVAL": "1",
            # Retries are left to the database and the beat sweeper (no Celery countdowns), so
            # a delivered retry proves the whole beat → sweeper → worker path.
            "POSTBACKS_MAX_COUNTDOWN_SECONDS": "0",
            # A receiver that refuses everything opens its host's circuit breaker; its
            # cool-down is shortened like the retry schedule.
            "POSTBACKS_BREAKER_COOLDOWN_SECONDS": "1",
            "POSTBACKS_BREAKER_MAX_COOLDOWN_SECONDS": "2",
            # The receiver is local and answers at once; short timeouts also shorten how long
            # a lost breaker probe or slot holds a host (derived from them).
            "POSTBACKS_CONNECT_TIMEOUT": "2",
            "POSTBACKS_TOTAL_TIMEOUT": "5",
            # Liveness heartbeats (config/liveness.py) every second: a stopped worker or beat
            # shows on /readyz within seconds.
            "WORKER_HEARTBEAT_SECONDS": "1",
            "BEAT_HEARTBEAT_SECONDS": "1",
            # Production refuses /metrics without a token (DEBUG is off here too).
            "METRICS_BEARER_TOKEN": METRICS_TOKEN,
            "HEALTH_BEAT_MAX_AGE_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{SCRIPTS_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    env.update(extra)
    return env


def stack_services(
    env: dict[str, str], logs: Path, port: int, *, web: str = "gunicorn"
) -> list[Service]:
    """Web, worker and beat. `web="granian"` runs the production web server with the argv of
    deploy/systemd/roundtrip-redirect.service (on 127.0.0.1 and the given port; one process
    serves every path here, as every pool runs the same code)."""
    node = f"e2e-{os.getpid()}@%h"
    if web == "granian":
        web_argv = [
            "granian",
            "--interface=wsgi",
            "--host=127.0.0.1",
            f"--port={port}",
            "--workers=2",
            "--blocking-threads=2",
            "--no-ws",
            "--respawn-failed-workers",
            "config.wsgi:application",
        ]
    else:
        web_argv = [
            "gunicorn",
            "config.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            "--workers=2",
            "--threads=4",
            "--log-level=info",
        ]
    return [
        Service("web", web_argv, env, logs),
        Service(
            "worker",
            [
                "celery",
                "-A",
                "config",
                "worker",
                "--loglevel=INFO",
                "--concurrency=4",
                f"--hostname={node}",
                # No cluster chatter: this worker is alone on its broker database.
                "--without-gossip",
                "--without-mingle",
            ],
            env,
            logs,
        ),
        Service(
            "beat",
            [
                "celery",
                "-A",
                "config",
                "beat",
                "--loglevel=INFO",
                f"--schedule={logs / 'celerybeat-schedule'}",
            ],
            env,
            logs,
        ),
    ]


@contextlib.contextmanager
def running_stack(services: list[Service], port: int) -> Iterator[Stack]:
    """Start the services, wait until each is ready, and stop them all afterwards."""
    stack = Stack(base_url=f"http://127.0.0.1:{port}", services=services)
    try:
        for service in services:
            service.start()
        services[0].wait_for_http(f"{stack.base_url}/click")
        services[1].wait_for_log(" ready.")
        services[2].wait_for_log("beat: Starting")
        yield stack
    finally:
        stop_all(services)


@pytest.fixture
def stack_settings() -> dict[str, str]:
    """Extra environment for the stack's processes; a test module overrides this fixture."""
    return {}


@pytest.fixture
def roundtrip_stack(
    transactional_db, tmp_path_factory: pytest.TempPathFactory, stack_settings: dict[str, str]
) -> Iterator[Stack]:
    """Fresh processes for each test, stopped before pytest-django empties the database:
    TRUNCATE under a running worker and beat can deadlock with their transactions."""
    from django.db import connection

    redis_url = e2e_redis_url()
    # Tasks, buffered clicks or an open circuit breaker left by an earlier run must not leak in.
    redis.Redis.from_url(redis_url).flushdb()

    port = free_port()
    logs = tmp_path_factory.mktemp("e2e-logs")
    env = stack_env(
        database_url=database_url_for(connection.settings_dict["NAME"]),
        redis_url=redis_url,
        **stack_settings,
    )
    with running_stack(stack_services(env, logs, port), port) as stack:
        yield stack
