"""Start-up checks: settings rules, the broker's eviction policy on a real Redis, and a real
worker that refuses to start."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

import postbacks.tasks  # noqa: F401  (registers the tasks whose time limits are checked)
from config.celery import app
from postbacks import checks
from tests.chaos.infra import CeleryWorker, RedisCopy, free_port


@pytest.fixture
def lru_redis():
    copy = RedisCopy(maxmemory_policy="allkeys-lru").start()
    yield copy
    copy.stop()


@pytest.fixture
def transport_options():
    """Change the broker transport options for one test."""
    previous = app.conf.broker_transport_options
    yield lambda **options: setattr(app.conf, "broker_transport_options", options)
    app.conf.broker_transport_options = previous


def ids(problems: list[checks.Problem]) -> set[str]:
    return {problem.id for problem in problems}


def test_it_finds_nothing_wrong_with_the_default_settings():
    assert checks.settings_problems(app) == []


def test_it_requires_a_visibility_timeout_longer_than_every_task_time_limit(transport_options):
    name, longest = checks.longest_time_limit(app)
    assert (
        longest is not None
        and longest >= app.tasks["postbacks.tasks.dispatch_postbacks"].time_limit
    )
    transport_options(visibility_timeout=int(longest))
    problems = checks.settings_problems(app)
    assert "postbacks.E001" in ids(problems)
    assert name in next(p.message for p in problems if p.id == "postbacks.E001")
    transport_options(visibility_timeout=int(longest) + 1)
    assert "postbacks.E001" not in ids(checks.settings_problems(app))


def test_it_requires_countdowns_under_half_the_visibility_timeout(transport_options, settings):
    transport_options(visibility_timeout=100_000)
    settings.POSTBACKS_MAX_COUNTDOWN_SECONDS = 50_001
    assert ids(checks.settings_problems(app)) == {"postbacks.E004"}


def test_it_requires_task_limit_over_http_timeout(settings):
    settings.POSTBACKS_TOTAL_TIMEOUT = 15
    settings.POSTBACKS_TASK_TIME_LIMIT = 15
    assert "postbacks.E002" in ids(checks.settings_problems(app))


def test_it_requires_a_lease_long_enough_to_be_renewed(settings):
    # Renewed leases need not outlast the task: a short one is the point (a dead worker's
    # rows go again within it), as long as a renewal every quarter of it is realistic.
    settings.POSTBACKS_LEASE_SECONDS = 8
    assert "postbacks.E003" not in ids(checks.settings_problems(app))
    settings.POSTBACKS_LEASE_SECONDS = 1.5
    assert "postbacks.E003" in ids(checks.settings_problems(app))


def test_it_warns_when_soft_shutdown_is_not_longer_than_the_http_timeout(settings):
    settings.POSTBACKS_TOTAL_TIMEOUT = app.conf.worker_soft_shutdown_timeout
    settings.POSTBACKS_TASK_TIME_LIMIT = settings.POSTBACKS_TOTAL_TIMEOUT + 1
    assert ids(checks.settings_problems(app)) == {"postbacks.W002"}


def test_it_reports_setting_errors_as_django_system_checks(settings):
    settings.POSTBACKS_LEASE_SECONDS = 1
    with pytest.raises(SystemCheckError, match=r"postbacks\.E003"):
        call_command("check")


def test_it_warns_unless_redis_evicts_nothing(lru_redis):
    problem = checks.redis_eviction_problem(lru_redis.url)
    assert problem is not None and problem.id == "postbacks.W001"
    assert "allkeys-lru" in problem.message and not problem.is_error
    lru_redis.client().config_set("maxmemory-policy", "noeviction")
    assert checks.redis_eviction_problem(lru_redis.url) is None


def test_it_says_so_when_it_cannot_read_the_policy():
    problem = checks.redis_eviction_problem(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    assert problem is not None and problem.id == "postbacks.W003"


@pytest.mark.django_db
def test_it_refuses_to_start_a_worker_whose_visibility_timeout_is_too_short(lru_redis):
    with tempfile.TemporaryDirectory() as logs:
        worker = CeleryWorker(
            "refused",
            broker_url=lru_redis.url,
            env={"CELERY_VISIBILITY_TIMEOUT": "10"},
            log_dir=Path(logs),
        )
        result = worker.run(timeout=60)
        log = worker.log_tail(200)
    assert result.returncode != 0
    assert "Refusing to start the worker" in log and "postbacks.E001" in log
    assert "postbacks.W001" in log  # the eviction policy is reported too


@pytest.mark.django_db
def test_it_starts_a_worker_but_warns_loudly_about_eviction(lru_redis):
    with tempfile.TemporaryDirectory() as logs:
        worker = CeleryWorker("warned", broker_url=lru_redis.url, env={}, log_dir=Path(logs))
        worker.start(concurrency=1)
        try:
            worker.wait_ready()
            log = worker.log_tail(200)
        finally:
            worker.kill()
    assert "postbacks.W001" in log and "allkeys-lru" in log and "!" * 78 in log


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("POSTBACKS_DISPATCH_MODE", "batch dispatcher"),  # the one-task-per-postback mode
        ("API_REPLAY_MAX", "POSTBACKS_REPLAY_MAX"),  # renamed: one cap for dashboard and API
    ],
)
def test_a_retired_setting_is_refused_at_start_up(name, says):
    """A process configured with a setting that is no longer read must not start as if
    nothing had changed."""
    env = {**os.environ, name: "1"}
    started = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode != 0
    assert f"{name} is no longer read" in started.stderr and says in started.stderr
