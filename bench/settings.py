"""Production settings (DEBUG off, PostgreSQL, Redis) plus the baseline URL."""

import os

os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("DEBUG", "false")

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
# The intake and dispatch figures measure what one server can take with every connection
# posting for one advertiser; the per-key concurrency limit (config/admission.py) would turn
# most of them into 429s. bench/isolation.py measures that limit, on config.settings.
INTAKE_CONCURRENCY_PER_KEY = 0
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
