"""Settings for the suite: production-like (DEBUG off, PostgreSQL, Redis) with test secrets."""

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

from config.settings import *  # noqa: F403
from config.settings import STORAGES, env

# Tests send tasks to their own Redis database so nothing else consumes them.
CELERY_BROKER_URL = env.str("TEST_CELERY_BROKER_URL", default="") or (
    urlsplit(os.environ["REDIS_URL"])._replace(path="/14").geturl()
)
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Clicks are written synchronously in tests unless a test turns buffering on (clickbuffer tests).
CLICKS_BUFFERED = False
# Tests pause links and expect the next click to see it at once.
CLICKS_LINK_CACHE_SECONDS = 0
CONVERSIONS_KEY_CACHE_SECONDS = 0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
SECURE_COOKIES = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
