"""Roundtrip settings, read from the environment (and an optional `.env`) with django-environ.

With nothing set, the app runs in *local mode*: SQLite and kombu's file-system broker under
`var/`, DEBUG on. Setting `DATABASE_URL` (PostgreSQL) leaves local mode: DEBUG then defaults to
off, and a missing `SECRET_KEY` or `ALLOWED_HOSTS` stops start-up. `.env.example` documents
every variable.
"""

import ipaddress
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("ROUNDTRIP_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

LOCAL_MODE = "DATABASE_URL" not in env
DEBUG = env.bool("DEBUG", default=LOCAL_MODE)

_LOCAL_SECRET = "local-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=_LOCAL_SECRET if DEBUG else "")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"] if DEBUG else [])
if not DEBUG:
    missing = [
        name
        for name, value in (("SECRET_KEY", SECRET_KEY), ("ALLOWED_HOSTS", ALLOWED_HOSTS))
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"DEBUG is off, so {' and '.join(missing)} must be set in the environment "
            "(see .env.example)."
        )
    if SECRET_KEY == _LOCAL_SECRET:
        raise ImproperlyConfigured("SECRET_KEY is the local-mode placeholder; set a real one.")

CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The public base URL used in links we print and show (tracking links, embed codes).
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "publishers",
    "tracking",
    "postbacks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'roundtrip.sqlite3'}"),
}
# Persistent connections: a new PostgreSQL connection per request costs ~8x throughput here.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server, the worker and beat read while one of them writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static ---------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security defaults (production) ---------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# --- Celery ---------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
    }
else:
    # Longer than any countdown we ever schedule (retries longer than a minute live in the
    # database as next_attempt_at), so Redis never redelivers a task that is merely waiting.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# At-least-once: ack after the task ran, requeue when the child process dies, no hoarding.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE = {
    "postbacks-sweep": {
        "task": "postbacks.tasks.sweep_due_postbacks",
        "schedule": env.float("POSTBACKS_SWEEP_INTERVAL", default=30.0),
    },
}

# --- Postbacks ------------------------------------------------------------------------------
# Callbacks to private/loopback/link-local addresses are refused unless this is on
# (local demo and tests only).
POSTBACKS_ALLOW_PRIVATE_DESTINATIONS = env.bool(
    "POSTBACKS_ALLOW_PRIVATE_DESTINATIONS", default=False
)
POSTBACKS_CONNECT_TIMEOUT = env.float("POSTBACKS_CONNECT_TIMEOUT", default=5.0)
POSTBACKS_TOTAL_TIMEOUT = env.float("POSTBACKS_TOTAL_TIMEOUT", default=15.0)
POSTBACKS_MAX_RESPONSE_BYTES = env.int("POSTBACKS_MAX_RESPONSE_BYTES", default=64 * 1024)
POSTBACKS_EXCERPT_BYTES = env.int("POSTBACKS_EXCERPT_BYTES", default=1024)
# Seconds after each failed attempt (the first attempt is immediate); ±20 % jitter is applied.
POSTBACKS_RETRY_SCHEDULE = env.list(
    "POSTBACKS_RETRY_SCHEDULE",
    cast=int,
    default=[5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
)
# A claimed postback whose worker vanished becomes claimable again after this many seconds.
POSTBACKS_LEASE_SECONDS = env.int("POSTBACKS_LEASE_SECONDS", default=60)
# The sweeper leaves freshly due rows to the task sent on commit for this long.
POSTBACKS_SWEEP_GRACE_SECONDS = env.int("POSTBACKS_SWEEP_GRACE_SECONDS", default=10)
POSTBACKS_SWEEP_BATCH = env.int("POSTBACKS_SWEEP_BATCH", default=1000)
# Retries this short are also scheduled as a Celery countdown (well under the broker's
# visibility timeout); longer ones wait for the sweeper.
POSTBACKS_MAX_COUNTDOWN_SECONDS = env.int("POSTBACKS_MAX_COUNTDOWN_SECONDS", default=60)
POSTBACKS_USER_AGENT = env.str("POSTBACKS_USER_AGENT", default="Roundtrip-Postback/1.0")

# The built-in demo receiver (/demo/receiver/) stands in for a publisher's server locally.
DEMO_RECEIVER_ENABLED = env.bool("DEMO_RECEIVER_ENABLED", default=LOCAL_MODE)

# --- Clicks ---------------------------------------------------------------------------------
CLICKS_SPID_MAX_LENGTH = 255
# X-Forwarded-For is believed only from these networks (your load balancers), e.g. 10.0.0.0/8.
TRUSTED_PROXY_NETWORKS = [
    ipaddress.ip_network(net, strict=False) for net in env.list("TRUSTED_PROXIES", default=[])
]

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

SESSION_ENGINE = "django.contrib.sessions.backends.db"
ATTRIBUTION_WINDOW_DEFAULT = timedelta(days=30)
