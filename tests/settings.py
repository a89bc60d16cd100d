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

# Under pytest-xdist (`make test` runs two workers) each worker has Redis databases of its own:
# its click buffer, breakers, caches and broker queues must not be another worker's. Worker n
# uses db n for the app, 14 - 2n for the in-process broker and 15 - 2n for the e2e processes.
# Once per worker: the processes a test starts inherit the result (and the marker), and the
# URLs a test gives them explicitly must stay as given.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker and os.environ.get("ROUNDTRIP_TEST_REDIS_SPLIT") != _worker:
    _n = int(_worker.removeprefix("gw"))
    if _n > 4:
        raise RuntimeError("The suite's Redis databases allow at most 5 xdist workers.")
    _redis = urlsplit(os.environ["REDIS_URL"])
    os.environ["REDIS_URL"] = _redis._replace(path=f"/{_n}").geturl()
    os.environ["TEST_CELERY_BROKER_URL"] = _redis._replace(path=f"/{14 - 2 * _n}").geturl()
    os.environ["E2E_REDIS_URL"] = _redis._replace(path=f"/{15 - 2 * _n}").geturl()
    os.environ["ROUNDTRIP_TEST_REDIS_SPLIT"] = _worker

from config.settings import *  # noqa: E402, F403
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
