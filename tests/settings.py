"""Settings for the suite: production's (DEBUG off, PostgreSQL, Redis, the click buffer and the
caches on) with test secrets."""

import os
from urllib.parse import urlsplit

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("POSTBACKS_ALLOW_PRIVATE_DESTINATIONS", "true")
os.environ.setdefault("DEBUG", "false")
if not os.environ.get("DATABASE_URL"):
    raise RuntimeError("Tests need PostgreSQL: run them with `make test` or set DATABASE_URL.")
if not os.environ.get("REDIS_URL"):
    raise RuntimeError("Tests need Redis: run them with `make test` or set REDIS_URL.")


def _worker_redis(url: str) -> str:
    """Each pytest-xdist worker gets a Redis database of its own (1, 2, …; the broker uses 14
    and the e2e stack 15): the click buffer's stream and every other key would otherwise be
    shared by tests running at once."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    number = int(worker[2:]) + 1
    if number > 13:
        raise RuntimeError("At most 13 pytest-xdist workers: each takes a Redis database.")
    return urlsplit(url)._replace(path=f"/{number}").geturl()


# In the environment, so the processes a test starts use the same database.
os.environ["REDIS_URL"] = _worker_redis(os.environ["REDIS_URL"])

from config.settings import *  # noqa: F403, E402
from config.settings import STORAGES, env  # noqa: E402

# Tests send tasks to their own Redis database so nothing else consumes them.
CELERY_BROKER_URL = env.str("TEST_CELERY_BROKER_URL", default="") or (
    urlsplit(os.environ["REDIS_URL"])._replace(path="/14").geturl()
)
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# The click buffer and the per-process caches are on, as in production: tests/conftest.py
# empties them between tests, and `buffered_clicks_flush` writes what a test clicked.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
SECURE_COOKIES = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
