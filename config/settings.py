"""Roundtrip settings, read from the environment (and an optional `.env`) with django-environ.

With nothing set, the app runs in *local mode*: SQLite and kombu's file-system broker under
`var/`, DEBUG on. Setting `DATABASE_URL` (PostgreSQL) leaves local mode: DEBUG then defaults to
off, and a missing `SECRET_KEY` or `ALLOWED_HOSTS` stops start-up. `.env.example` documents
every variable.
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
# Read after .env, so a ROUNDTRIP_VAR_DIR set there counts too.
VAR_DIR = Path(env.str("ROUNDTRIP_VAR_DIR", default=str(BASE_DIR / "var")))

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
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "publishers",
    "tracking",
    "postbacks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # One caller's concurrent requests capped before sessions, database or view run (429).
    "config.admission.AdmissionMiddleware",
    # NUL characters anywhere in a request: 400 before any view or query (config/hostile.py).
    "config.hostile.HostileInputMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # A view's database outage becomes 503 + Retry-After, not a 500 (config/outage.py).
    "config.outage.DatabaseOutageMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a throttled login into its lockout page.
    "axes.middleware.AxesMiddleware",
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
# A reused connection is checked (one `SELECT 1` round trip) before a request's first query, so a
# database restart costs no failed request. Turning it off gains ~15 % on conversion intake;
# each web process then fails one request after a database restart.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=True)
# While PostgreSQL is unreachable, requests that need it answer 503 with this Retry-After
# (seconds); the click redirect goes on from cached links (CLICKS_OUTAGE_STALE_SECONDS).
DATABASE_OUTAGE_RETRY_AFTER = env.int("DATABASE_OUTAGE_RETRY_AFTER", default=10)
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # A host that drops packets (rather than refusing) must not hold a request for the
    # operating system's minutes-long TCP timeout. A DATABASE_URL ?connect_timeout= wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )
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
# django-axes refuses sign-ins after AXES_FAILURE_LIMIT failures from one IP address or for one
# account (either one), for AXES_COOLOFF_TIME; the client IP follows TRUSTED_PROXIES.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "config.client_ip.client_ip"
AXES_USERNAME_CALLABLE = "config.hostile.sign_in_username"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Views (by URL name) that answer NUL characters in their input themselves instead of
# config.hostile's middleware: the click path names the reason in its rejection counters.
HOSTILE_INPUT_OWN_VALIDATION = ["click", "smart-ad"]
# Password reset and invitation mail: printed on the console in local mode, otherwise sent
# through EMAIL_URL (e.g. smtp+tls://user:password@smtp.example.com:587).
_email = env.email_url(
    "EMAIL_URL", default="consolemail://" if LOCAL_MODE else "smtp://localhost:25"
)
MAILERS = {
    "default": {
        "BACKEND": _email["EMAIL_BACKEND"],
        "OPTIONS": {
            "host": _email.get("EMAIL_HOST") or "localhost",
            "port": _email.get("EMAIL_PORT") or 25,
            "username": _email.get("EMAIL_HOST_USER") or "",
            "password": _email.get("EMAIL_HOST_PASSWORD") or "",
            "use_tls": bool(_email.get("EMAIL_USE_TLS")),
            "use_ssl": bool(_email.get("EMAIL_USE_SSL")),
        }
        if "smtp" in _email["EMAIL_BACKEND"]
        else {},
    }
}
# A team invitation's link works this many days (docs/security.md, "Team invitations").
TEAM_INVITATION_DAYS = env.int("TEAM_INVITATION_DAYS", default=7)
# Publisher sign-up (docs/signup.md): the public form at /signup/, whose applicants wait for
# staff approval. Off: the form and its links answer 404 and the sign-in page hides the link.
PUBLISHER_SIGNUP_OPEN = env.bool("PUBLISHER_SIGNUP_OPEN", default=True)
# Hours a sign-up's verification link works.
PUBLISHER_SIGNUP_LINK_HOURS = env.int("PUBLISHER_SIGNUP_LINK_HOURS", default=24)
# Sign-up requests per client IP address, and per e-mail address, per period ("5/hour"):
# counted in the cache (Redis), like API_RATE_LIMIT.
PUBLISHER_SIGNUP_RATE_LIMIT = env.str("PUBLISHER_SIGNUP_RATE_LIMIT", default="5/hour")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Roundtrip <noreply@localhost>")
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
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    # Both refuse or escape what PostgreSQL and UTF-8 can't take (config/hostile.py).
    "DEFAULT_RENDERER_CLASSES": ["config.hostile.SafeJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.hostile.StrictJSONParser"],
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# Requests per API key (publisher API), counted in the default cache, which is Redis when
# REDIS_URL is set so every web process shares one count.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="600/min")
# Concurrent requests one caller may have in flight (config/admission.py); beyond: 429 with
# Retry-After, before any database work. Keep each below its pool's threads (workers x
# blocking threads, docs/deploy.md) so one caller always leaves room for the others. 0: no limit.
INTAKE_CONCURRENCY_PER_KEY = env.int("INTAKE_CONCURRENCY_PER_KEY", default=4)
INTAKE_CONCURRENCY_PER_ADDRESS = env.int("INTAKE_CONCURRENCY_PER_ADDRESS", default=2)
API_CONCURRENCY_PER_KEY = env.int("API_CONCURRENCY_PER_KEY", default=4)
API_CONCURRENCY_PER_ADDRESS = env.int("API_CONCURRENCY_PER_ADDRESS", default=2)
PORTAL_CONCURRENCY_PER_SESSION = env.int("PORTAL_CONCURRENCY_PER_SESSION", default=4)
PORTAL_CONCURRENCY_PER_ADDRESS = env.int("PORTAL_CONCURRENCY_PER_ADDRESS", default=4)
# A slot held longer than this no longer counts (a process that died holding it); longer than
# any request may run (nginx's proxy_read_timeout is 30 s).
ADMISSION_SLOT_SECONDS = env.float("ADMISSION_SLOT_SECONDS", default=35.0)
ADMISSION_RETRY_AFTER = env.int("ADMISSION_RETRY_AFTER", default=1)
# The conversion feed hides changes younger than this many seconds, so a transaction that
# committed late (its updated_at is earlier than rows already read) is never skipped by a
# poller that has moved past it. See docs/api.md, "Polling for changes".
API_CONVERSIONS_SETTLE_SECONDS = env.float("API_CONVERSIONS_SETTLE_SECONDS", default=5.0)
# At most this many postbacks are queued by one range replay, from the dashboard or the API
# (the answer says how many more matched), so one request can't enqueue millions.
POSTBACKS_REPLAY_MAX = env.int("POSTBACKS_REPLAY_MAX", default=10_000)
SPECTACULAR_SETTINGS = {
    "TITLE": "Roundtrip API",
    "DESCRIPTION": "Conversion intake for advertisers and the publisher API. See docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and Redoc assets come from drf-spectacular-sidecar (static files), no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "PREPROCESSING_HOOKS": ["publishers.api.conversions.add_shared_path_endpoints"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tracking.api.add_advertiser_security_schemes",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ConversionStatusEnum": "tracking.models.Conversion.Status",
        "PostbackStatusEnum": "postbacks.models.Postback.Status",
        "AttemptOutcomeEnum": "postbacks.models.PostbackAttempt.Outcome",
        "CallbackMethodEnum": "publishers.models.CallbackTemplate.Method",
    },
}

# --- Celery ---------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# The cache holds API rate-limit counters: Redis when there is one, so all web processes share
# them; otherwise (local mode) per-process memory.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcast (pidbox) exchanges; kombu's default is ./control in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    if CELERY_BROKER_URL.startswith("redis://"):
        # kombu's Redis transport with a guard that keeps the worker alive when Redis dies
        # under it (config/broker.py). rediss:// keeps kombu's own, which checks its TLS setup.
        CELERY_BROKER_TRANSPORT = "config.broker:Transport"
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
# A worker whose broker is gone retries for ever (Celery's default gives up after 100 attempts
# and exits), every BROKER_RECONNECT_SECONDS at most (config.celery.Consumer), so it consumes
# again within seconds of Redis coming back, however long Redis was down.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CONSUMER = "config.celery:Consumer"
BROKER_RECONNECT_SECONDS = env.float("BROKER_RECONNECT_SECONDS", default=2.0)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Every task has a hard time limit (tasks may set a lower one) so the start-up check can
# compare the longest one with the broker's visibility timeout (postbacks/checks.py).
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=600)
# A worker started without -Q consumes every queue listed here; production runs one worker
# per postback queue (see docs/performance.md), so first attempts never queue behind retries.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = [
    Queue("celery"),
    Queue(env.str("POSTBACKS_QUEUE", default="postbacks")),
    Queue(env.str("POSTBACKS_RETRY_QUEUE", default="postbacks_retry")),
]
CELERY_TASK_ROUTES = {
    "postbacks.tasks.dispatch_postbacks": {
        "queue": env.str("POSTBACKS_QUEUE", default="postbacks")
    },
}
BEAT_HEARTBEAT_SECONDS = env.float("BEAT_HEARTBEAT_SECONDS", default=10.0)
# Beat's sweeper kicks the lanes with due rows this often (a lost kick, a retry too far off for
# a countdown) and schedules a kick for the end of each lease that runs out before its next run
# without being renewed (a dead worker's rows: sent again as their lease ends).
POSTBACKS_SWEEP_INTERVAL = env.float("POSTBACKS_SWEEP_INTERVAL", default=5.0)
CELERY_BEAT_SCHEDULE = {
    "clicks-flush": {
        "task": "tracking.tasks.flush_click_buffer",
        "schedule": env.float("CLICKS_BUFFER_FLUSH_INTERVAL", default=1.0),
        "options": {"expires": 5},
    },
    "postbacks-sweep": {
        "task": "postbacks.tasks.sweep_due_postbacks",
        "schedule": POSTBACKS_SWEEP_INTERVAL,
    },
    "stats-refresh": {
        "task": "tracking.tasks.refresh_stats",
        "schedule": env.float("STATS_REFRESH_INTERVAL", default=60.0),
    },
    "impressions-flush": {
        "task": "tracking.tasks.flush_impressions",
        "schedule": env.float("IMPRESSIONS_FLUSH_INTERVAL", default=10.0),
        "options": {"expires": 30},
    },
    "retention-prune": {
        "task": "postbacks.tasks.prune_old_records",
        "schedule": env.float("RETENTION_PRUNE_INTERVAL", default=3600.0),
    },
    # Liveness: the age of the last run of this task is /readyz's and /metrics' beat check;
    # one that waited longer than a period in the queue is dropped, not run late.
    "beat-heartbeat": {
        "task": "config.celery.beat_heartbeat",
        "schedule": BEAT_HEARTBEAT_SECONDS,
        "options": {"expires": BEAT_HEARTBEAT_SECONDS},
    },
    # PostgreSQL: creates the coming days' click partitions, retires expired days.
    "clicks-partitions": {
        "task": "tracking.tasks.maintain_click_partitions",
        "schedule": env.float("CLICKS_PARTITIONS_INTERVAL", default=3600.0),
        "options": {"expires": 600},
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
# A claimed postback's lease. The worker process that holds it renews it every quarter of this
# (postbacks/dispatch/leases.py) until the row's outcome is recorded, so a row whose worker
# died (SIGKILL, a lost machine, the task's hard time limit) is claimable again within this
# many seconds, and a live worker's row never is. At least 2 (postbacks.E003).
POSTBACKS_LEASE_SECONDS = env.float("POSTBACKS_LEASE_SECONDS", default=8.0)
# Hard limit of one delivery task: above the HTTP total timeout. Hitting it kills the pool
# child with its requests; their leases, no longer renewed, run out and the rows go again.
POSTBACKS_TASK_TIME_LIMIT = env.int(
    "POSTBACKS_TASK_TIME_LIMIT", default=int(POSTBACKS_TOTAL_TIMEOUT) + 15
)
# A warm shutdown on SIGTERM lets running deliveries finish; a cold one (second signal)
# still waits this long, more than one HTTP attempt can take.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env.float(
    "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", default=POSTBACKS_TOTAL_TIMEOUT + 5
)
# Retention (days; 0 keeps forever). Pending and failed postbacks, and their attempts, are
# never pruned; clicks are kept at least for their campaign's attribution window, and clicks
# that converted are kept with their conversion.
POSTBACKS_ATTEMPT_RETENTION_DAYS = env.int("POSTBACKS_ATTEMPT_RETENTION_DAYS", default=30)
POSTBACKS_SUCCEEDED_RETENTION_DAYS = env.int("POSTBACKS_SUCCEEDED_RETENTION_DAYS", default=90)
# Off by default: dashboard rollups are rebuilt from raw clicks (see docs/operations.md).
CLICKS_RETENTION_DAYS = env.int("CLICKS_RETENTION_DAYS", default=0)
# The activity trail (publishers' AuditEvent rows: who changed what, staff edits included).
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=400)
# The advertisers' log of what the intake answered each request (IntakeOutcome: the advertiser
# portal's Conversions sent). The conversions themselves are never pruned.
INTAKE_OUTCOME_RETENTION_DAYS = env.int("INTAKE_OUTCOME_RETENTION_DAYS", default=400)
# Rows deleted per statement and statements per run: a run stays short and its locks small.
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=5000)
RETENTION_MAX_BATCHES = env.int("RETENTION_MAX_BATCHES", default=100)
# Retries this short are also scheduled as a Celery countdown (well under the broker's
# visibility timeout); longer ones wait for the sweeper.
POSTBACKS_MAX_COUNTDOWN_SECONDS = env.int("POSTBACKS_MAX_COUNTDOWN_SECONDS", default=60)
POSTBACKS_USER_AGENT = env.str("POSTBACKS_USER_AGENT", default="Roundtrip-Postback/1.0")

# Dispatch (postbacks/dispatch/): a task claims up to BATCH_SIZE due postbacks in one
# statement and sends them concurrently (asyncio + aiohttp, through the SSRF guard). It is the
# only engine: the one-task-per-postback mode is gone, and a leftover setting is refused.
# Settings that are no longer read: a process that still finds one refuses to start rather
# than silently run without what the operator asked for.
_RETIRED_SETTINGS = {
    "POSTBACKS_DISPATCH_MODE": "postbacks always go through the batch dispatcher (the "
    "one-task-per-postback mode was removed). Remove the setting from the environment or .env.",
    "API_REPLAY_MAX": "the dashboard and the API share one cap on a range replay: rename it to "
    "POSTBACKS_REPLAY_MAX.",
}
for _name, _why in _RETIRED_SETTINGS.items():
    if _name in os.environ:
        raise ImproperlyConfigured(f"{_name} is no longer read: {_why}")
POSTBACKS_DISPATCH_BATCH_SIZE = env.int("POSTBACKS_DISPATCH_BATCH_SIZE", default=200)
# A dispatch task keeps claiming batches (the next while the last is in flight) this long.
POSTBACKS_DISPATCH_TASK_SECONDS = env.float("POSTBACKS_DISPATCH_TASK_SECONDS", default=2.0)
# Requests in flight per worker process. Also the most a SIGKILLed process can leave sent but
# unrecorded (each of those is delivered again: at least once).
POSTBACKS_DISPATCH_CONCURRENCY = env.int("POSTBACKS_DISPATCH_CONCURRENCY", default=100)
# A batch task waits this long for its requests; slower ones finish in the background and are
# recorded by the process's recorder thread, so a hanging endpoint never holds the task.
POSTBACKS_DISPATCH_WAIT_SECONDS = env.float("POSTBACKS_DISPATCH_WAIT_SECONDS", default=0.5)
# A vetted DNS answer is reused this long by one worker process (every address was checked).
POSTBACKS_DISPATCH_DNS_TTL_SECONDS = env.float("POSTBACKS_DISPATCH_DNS_TTL_SECONDS", default=10.0)
# Celery queues: first attempts never wait behind retries (run a worker on each, or one on both).
POSTBACKS_QUEUE = env.str("POSTBACKS_QUEUE", default="postbacks")
POSTBACKS_RETRY_QUEUE = env.str("POSTBACKS_RETRY_QUEUE", default="postbacks_retry")
# Fairness (postbacks/fairness.py): requests in flight per destination host across all workers;
# retries may use at most this share of it, the rest is kept for first attempts.
# Also the most one crashed worker can leave sent-but-unrecorded for a host (each of those is
# delivered twice): keep it low, and raise it for the publishers that need the throughput
# (name:port=cap pairs, e.g. POSTBACKS_HOST_MAX_IN_FLIGHT_BY_HOST=cb.bigpub.example:443=64).
POSTBACKS_HOST_MAX_IN_FLIGHT = env.int("POSTBACKS_HOST_MAX_IN_FLIGHT", default=4)
POSTBACKS_HOST_MAX_IN_FLIGHT_BY_HOST = {
    host.strip().lower(): int(cap)
    for host, _, cap in (
        item.rpartition("=")
        for item in env.list("POSTBACKS_HOST_MAX_IN_FLIGHT_BY_HOST", default=[])
    )
}
POSTBACKS_HOST_RETRY_SHARE = env.float("POSTBACKS_HOST_RETRY_SHARE", default=0.5)
# A postback whose host is at its cap is put back for about this long.
POSTBACKS_HOST_BUSY_DEFER_SECONDS = env.float("POSTBACKS_HOST_BUSY_DEFER_SECONDS", default=1.0)
# A host whose oldest request in flight has run this long counts as hanging: it gets one
# request at a time (no new one while that is out), and its rows are not claimed meanwhile.
POSTBACKS_HOST_SLOW_SECONDS = env.float("POSTBACKS_HOST_SLOW_SECONDS", default=2.0)
# Requests of hanging hosts (running longer than POSTBACKS_HOST_SLOW_SECONDS) don't count
# toward POSTBACKS_DISPATCH_CONCURRENCY, so they can't starve the others; at most this many
# of them per worker process (sockets held open).
POSTBACKS_DISPATCH_SLOW_MAX = env.int("POSTBACKS_DISPATCH_SLOW_MAX", default=1000)
# A claim takes at most this many rows per free slot of a host (its batch runs them through
# its slots one after the other); a host with no free slot has none of its rows claimed.
POSTBACKS_HOST_CLAIM_PER_SLOT = env.int("POSTBACKS_HOST_CLAIM_PER_SLOT", default=8)
# Circuit breaker per host: opens after this many failures in a row (connection errors, 5xx,
# 408, 429; a time-out opens it at once), lets one probe (one request) through after the
# cool-down, which doubles each time it opens again, up to the maximum. The maximum is how
# long a healed host may wait to be noticed, and a dead one costs one request per maximum;
# when a probe succeeds the host's held-back rows are due at once (docs/delivery.md).
POSTBACKS_BREAKER_FAILURES = env.int("POSTBACKS_BREAKER_FAILURES", default=5)
POSTBACKS_BREAKER_COOLDOWN_SECONDS = env.float("POSTBACKS_BREAKER_COOLDOWN_SECONDS", default=1.0)
POSTBACKS_BREAKER_MAX_COOLDOWN_SECONDS = env.float(
    "POSTBACKS_BREAKER_MAX_COOLDOWN_SECONDS", default=3.0
)
POSTBACKS_REDIS_PREFIX = env.str("POSTBACKS_REDIS_PREFIX", default="roundtrip:pb:")
# Endpoint health (postbacks/health.py): owners are e-mailed after this many failed attempts in
# a row, and the template is paused (its postbacks held) after failing for this long.
POSTBACKS_HEALTH_WARN_AFTER_FAILURES = env.int("POSTBACKS_HEALTH_WARN_AFTER_FAILURES", default=10)
POSTBACKS_HEALTH_PAUSE_AFTER_SECONDS = env.int(
    "POSTBACKS_HEALTH_PAUSE_AFTER_SECONDS", default=3 * 24 * 3600
)

# --- Dashboard reports ----------------------------------------------------------------------
# Each refresh rebuilds the rollup hours of the last N minutes (clicks recorded late, e.g.
# from a buffer, included); keep it well above STATS_REFRESH_INTERVAL.
STATS_REFRESH_LOOKBACK_MINUTES = env.int("STATS_REFRESH_LOOKBACK_MINUTES", default=10)

# --- Observability --------------------------------------------------------------------------
# When set, /metrics answers only `Authorization: Bearer <token>`.
METRICS_BEARER_TOKEN = env.str("METRICS_BEARER_TOKEN", default="")
# /readyz gives the database and the broker this long each.
READYZ_TIMEOUT_SECONDS = env.float("READYZ_TIMEOUT_SECONDS", default=2.0)
# Worker and beat liveness (config/liveness.py): a consuming worker stamps Redis this often and
# counts as consuming for three periods; beat's heartbeat task runs every BEAT_HEARTBEAT_SECONDS
# (the beat schedule) and /readyz reports beat when its last run is older than this.
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=5.0)
HEALTH_BEAT_MAX_AGE_SECONDS = env.float("HEALTH_BEAT_MAX_AGE_SECONDS", default=60.0)
HEALTH_REDIS_PREFIX = env.str("HEALTH_REDIS_PREFIX", default="roundtrip:health:")

# The built-in demo receiver (/demo/receiver/) stands in for a publisher's server locally.
DEMO_RECEIVER_ENABLED = env.bool("DEMO_RECEIVER_ENABLED", default=LOCAL_MODE)

# --- Clicks ---------------------------------------------------------------------------------
# How long a web process reuses a tracking link it looked up (0: look up on every click).
CLICKS_LINK_CACHE_SECONDS = env.float("CLICKS_LINK_CACHE_SECONDS", default=5.0)
# During a database outage, /click and /smart keep using the links, smart ads and creatives a
# web process last read as live, for up to this many seconds after that read; other refs get
# 503. It bounds how long a link paused just before an outage can go on redirecting.
CLICKS_OUTAGE_STALE_SECONDS = env.float("CLICKS_OUTAGE_STALE_SECONDS", default=900.0)
# Verified advertiser API keys are cached per web process this long (seconds; 0 turns it off):
# intake then authenticates without a query, and a revoked key stops working within it.
CONVERSIONS_KEY_CACHE_SECONDS = env.float("CONVERSIONS_KEY_CACHE_SECONDS", default=10.0)
# A publisher's callback templates are cached per web process for the intake, keyed by a
# version a database trigger bumps on every change (so a change applies at once); this only
# bounds how long an old version's entry is kept (seconds; 0 reads them on every conversion).
CALLBACK_TEMPLATES_CACHE_SECONDS = env.float("CALLBACK_TEMPLATES_CACHE_SECONDS", default=300.0)
# Buffered click writes (tracking/clickbuffer.py): the redirect appends to a Redis stream and a
# flusher copies batches into the database. On by default whenever Redis is configured.
CLICKS_BUFFERED = env.bool("CLICKS_BUFFERED", default=bool(REDIS_URL))
CLICKS_BUFFER_BATCH = env.int("CLICKS_BUFFER_BATCH", default=2000)
# /readyz answers 503 when the oldest buffered click is older than this (seconds): the flusher
# is stopped or behind. /metrics and the admin status page show the age all the time.
CLICKS_BUFFER_STALL_SECONDS = env.float("CLICKS_BUFFER_STALL_SECONDS", default=120.0)
# How long a buffered click stays readable by id (for conversions before the flush).
CLICKS_BUFFER_KEY_TTL = env.int("CLICKS_BUFFER_KEY_TTL", default=300)
# Entries a flusher read but never acknowledged (it died) are taken over after this idle time.
CLICKS_BUFFER_CLAIM_IDLE_MS = env.int("CLICKS_BUFFER_CLAIM_IDLE_MS", default=30_000)
# X-Forwarded-For is believed only from these networks (your load balancers), e.g. 10.0.0.0/8.
TRUSTED_PROXY_NETWORKS = [
    ipaddress.ip_network(net, strict=False) for net in env.list("TRUSTED_PROXIES", default=[])
]

# --- Click intelligence and smart ads (tracking/intelligence.py, tracking/smart.py) ---------
# A MaxMind GeoIP2/GeoLite2 Country or City database (.mmdb). Empty: the offline `iptocc`
# package (registry allocation data shipped in the wheel) answers instead.
GEOIP_DB_PATH = env.str("GEOIP_DB_PATH", default="")
# A country header set by your CDN, e.g. CF-IPCountry. Only set it when every request reaches
# the app through that CDN: a visitor can send the header too.
GEOIP_COUNTRY_HEADER = env.str("GEOIP_COUNTRY_HEADER", default="")
# A click is unique when the same IP + user agent + link has not clicked for this long.
CLICKS_UNIQUE_WINDOW_SECONDS = env.int("CLICKS_UNIQUE_WINDOW_SECONDS", default=24 * 3600)
# Smart ads, their creatives and campaigns are cached per process this long (admin edits
# show up after at most this delay).
SMART_ADS_CACHE_SECONDS = env.float("SMART_ADS_CACHE_SECONDS", default=30.0)
# Prefix of the Redis keys for impression counters and unique-click windows.
TRACKING_REDIS_PREFIX = env.str("TRACKING_REDIS_PREFIX", default="roundtrip:")

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

SESSION_ENGINE = "django.contrib.sessions.backends.db"
