# Roundtrip: `make run` (local demo, nothing but Python needed) and `make test` (the whole suite).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# Django 6 needs Python >= 3.12. PYTHON=/path/to/python overrides the search below.
define find_python
ok() { "$$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }; \
for c in "$(PYTHON)" python3.13 python3.12 python3 \
         $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do \
  [ -n "$$c" ] && ok "$$c" && { command -v "$$c" || echo "$$c"; } && exit 0; \
done; exit 1
endef

.PHONY: run test bench screenshots lint format migrate seed clean help

help:
	@echo "make run   - install, migrate, seed a demo, start web + worker + beat (Ctrl-C stops all)"
	@echo "make test  - the whole suite against real PostgreSQL and Redis"
	@echo "make lint  - ruff check and format check"

$(STAMP): pyproject.toml
	@py=$$($(find_python)) || { \
	  echo "Roundtrip needs Python >= 3.12 (Django 6). None found: install one, or run" >&2; \
	  echo "  make run PYTHON=/path/to/python3.12" >&2; exit 1; }; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
	  echo "Creating $(VENV) with $$py"; rm -rf $(VENV); "$$py" -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

# Local mode: SQLite and the file-system broker under var/, the built-in demo receiver, and
# private callback destinations allowed (the receiver is on 127.0.0.1).
# ROUNDTRIP_PORT moves the web server; SITE_URL (every printed URL and the demo callback)
# follows it unless set too.
ROUNDTRIP_PORT ?= 8000
run: export ROUNDTRIP_PORT := $(ROUNDTRIP_PORT)
run: export SITE_URL ?= http://127.0.0.1:$(ROUNDTRIP_PORT)
run: export POSTBACKS_ALLOW_PRIVATE_DESTINATIONS ?= true
run: export POSTBACKS_SWEEP_INTERVAL ?= 5
run: export PYTHONUNBUFFERED = 1
run: $(STAMP)
	@mkdir -p var
	$(PY) manage.py migrate --no-input -v 0
	@$(PY) manage.py seed_demo
	@echo "Starting web (gunicorn on 127.0.0.1:$(ROUNDTRIP_PORT)), Celery worker and Celery beat. Ctrl-C stops all."
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho -f Procfile.dev start

# Two pytest-xdist workers: most of the suite's time is e2e tests waiting on their processes.
# Each worker has its own test database and Redis databases (tests/settings.py).
PYTEST_ARGS ?= -n 2 --dist worksteal --durations=25
test: $(STAMP)
	$(PY) tests/with_services.py -- $(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks (PostgreSQL + Redis and wrk on this machine; under 15 minutes, stages timed in
# the report). Results: docs/performance.md. The 1 M and 10 M-click datasets are kept in
# $(BENCH_DATABASE_URL)_1m and _10m and reused by the next run (bench/http_bench.py).
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/roundtrip_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/11
bench: export BENCH_DATABASE_URL := $(BENCH_DATABASE_URL)
bench: export BENCH_REDIS_URL := $(BENCH_REDIS_URL)
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) bench/run.py $(BENCH_ARGS)

# Regenerate docs/screenshots/ (headless Chromium against a live test server).
screenshots: $(STAMP)
	ROUNDTRIP_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PY) tests/with_services.py -- $(PY) -m pytest tests/browser/test_screenshots.py -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf var .pytest_cache .ruff_cache
