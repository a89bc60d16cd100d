"""Start-up checks of the delivery invariants (RELIABILITY.md, item 15).

Two entry points share one list of rules, both bound to the Celery app in config/celery.py:

- `check_delivery_settings` is a Django system check (`manage.py check`, `migrate`, runserver):
  the rules about settings, with no network I/O (`system_check_messages`).
- `worker_startup_check` runs on Celery's `worker_init` signal: the same rules plus a look at
  the Redis broker itself. A worker whose configuration could lose or repeat deliveries refuses
  to start (SystemExit); a risky Redis eviction policy is logged loudly.
"""

import importlib
import importlib.util
import logging
from dataclasses import dataclass

import redis
from celery import Celery
from django.conf import settings
from django.core import checks

logger = logging.getLogger(__name__)

# What Celery's Redis transport uses when broker_transport_options has none.
DEFAULT_VISIBILITY_TIMEOUT = 3600
# Leases are renewed every quarter of theirs (postbacks/dispatch/leases.py).
MIN_LEASE_SECONDS = 2


@dataclass(frozen=True)
class Problem:
    id: str  # "postbacks.E001"; E… refuse to start a worker, W… are logged loudly
    message: str

    @property
    def is_error(self) -> bool:
        return ".E" in self.id


def uses_redis(app: Celery) -> bool:
    return str(app.conf.broker_url or "").startswith(("redis://", "rediss://", "redis+socket://"))


def longest_time_limit(app: Celery) -> tuple[str, float | None]:
    """The task with the longest hard time limit (None: a task without any limit)."""
    longest = ("", 0.0)
    for name, task in sorted(app.tasks.items()):
        limit = task.time_limit or app.conf.task_time_limit
        if limit is None:
            return name, None
        if limit > longest[1]:
            longest = (name, float(limit))
    return longest


def settings_problems(app: Celery) -> list[Problem]:
    """Rules about the configuration alone (no I/O)."""
    problems = []
    total_timeout = settings.POSTBACKS_TOTAL_TIMEOUT
    task_limit = settings.POSTBACKS_TASK_TIME_LIMIT
    if task_limit <= total_timeout:
        problems.append(
            Problem(
                "postbacks.E002",
                f"POSTBACKS_TASK_TIME_LIMIT ({task_limit}s) must exceed POSTBACKS_TOTAL_TIMEOUT "
                f"({total_timeout}s), or a slow delivery is killed before its timeout fires.",
            )
        )
    lease = settings.POSTBACKS_LEASE_SECONDS
    if lease < MIN_LEASE_SECONDS:
        problems.append(
            Problem(
                "postbacks.E003",
                f"POSTBACKS_LEASE_SECONDS ({lease:g}s) must be at least {MIN_LEASE_SECONDS}s: "
                "a worker renews its leases every quarter of it, one database round trip each "
                "time; shorter, a late renewal lets a row be claimed again while its first "
                "worker may still be sending it (a duplicate delivery).",
            )
        )
    soft_shutdown = app.conf.worker_soft_shutdown_timeout or 0
    if soft_shutdown <= total_timeout:
        problems.append(
            Problem(
                "postbacks.W002",
                f"CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT ({soft_shutdown}s) is not longer than "
                f"POSTBACKS_TOTAL_TIMEOUT ({total_timeout}s): a cold shutdown can cut a "
                "delivery short, which is then sent again (a duplicate).",
            )
        )
    if not uses_redis(app):
        return problems
    visibility = (app.conf.broker_transport_options or {}).get(
        "visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT
    )
    name, limit = longest_time_limit(app)
    if limit is None or visibility <= limit:
        shown = "no time limit" if limit is None else f"a time limit of {limit:g}s"
        problems.append(
            Problem(
                "postbacks.E001",
                f"The broker's visibility timeout ({visibility}s) must be longer than the "
                f"longest task time limit: task {name!r} has {shown}. Redis would hand a "
                "running task to a second worker.",
            )
        )
    countdown = settings.POSTBACKS_MAX_COUNTDOWN_SECONDS
    if countdown * 2 > visibility:
        problems.append(
            Problem(
                "postbacks.E004",
                f"POSTBACKS_MAX_COUNTDOWN_SECONDS ({countdown}s) must be at most half the "
                f"visibility timeout ({visibility}s): longer countdowns are redelivered again "
                "and again by Redis.",
            )
        )
    return problems


def redis_eviction_problem(broker_url: str, *, timeout: float = 2.0) -> Problem | None:
    """A warning unless the Redis at `broker_url` reports `maxmemory-policy noeviction`: under
    memory pressure any other policy silently deletes queued tasks."""
    client = redis.Redis.from_url(
        broker_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.RedisError as exc:
        # Managed Redis services often disable CONFIG; say we could not tell.
        return Problem(
            "postbacks.W003",
            f"Could not read the broker's maxmemory-policy ({exc}); make sure it is noeviction.",
        )
    finally:
        client.close()
    if policy == "noeviction":
        return None
    return Problem(
        "postbacks.W001",
        f"The Redis broker's maxmemory-policy is {policy!r}, not 'noeviction': when Redis "
        "fills up it will silently delete queued delivery tasks. Set "
        "`maxmemory-policy noeviction`.",
    )


def worker_problems(app: Celery) -> list[Problem]:
    """Everything a worker checks before it starts, the broker included."""
    problems = settings_problems(app)
    if uses_redis(app):
        eviction = redis_eviction_problem(app.conf.broker_url)
        if eviction is not None:
            problems.append(eviction)
    return problems


def worker_startup_check(app: Celery) -> None:
    """Log every problem loudly; refuse to start (SystemExit) when any is an error."""
    problems = worker_problems(app)
    for problem in problems:
        log = logger.critical if problem.is_error else logger.warning
        log("%s\n%s: %s\n%s", "!" * 78, problem.id, problem.message, "!" * 78)
    errors = [problem for problem in problems if problem.is_error]
    if errors:
        # A plain exception would be swallowed by Celery's signal dispatch; SystemExit is not.
        raise SystemExit(
            "Refusing to start the worker: " + "; ".join(f"{p.id}: {p.message}" for p in errors)
        )


def import_task_modules() -> None:
    """Import every installed app's `tasks` module, so the task registry is complete outside a
    worker too. (Not `app.loader.import_default_modules()`: Celery's Django fixup runs the
    system checks from inside it at worker start, which would recurse.)"""
    from django.apps import apps

    for config in apps.get_app_configs():
        if importlib.util.find_spec(f"{config.name}.tasks") is not None:
            importlib.import_module(f"{config.name}.tasks")


def system_check_messages(app: Celery) -> list[checks.CheckMessage]:
    """`settings_problems` as Django system check messages (no network I/O)."""
    import_task_modules()
    return [
        (checks.Error if problem.is_error else checks.Warning)(problem.message, id=problem.id)
        for problem in settings_problems(app)
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_metrics_token(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    """`/metrics` lists every publisher's callback hosts: production must protect it."""
    if settings.METRICS_BEARER_TOKEN:
        return []
    return [
        checks.Error(
            "METRICS_BEARER_TOKEN is not set: /metrics refuses every scrape (403) with DEBUG "
            "off. Set a long random token and give it to Prometheus.",
            id="postbacks.E101",
        )
    ]
