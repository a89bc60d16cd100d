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

.PHONY: run logs test bench screenshots lint format migrate seed clean help

help:
	@echo "make run   - install, migrate, seed a demo, start web + worker + beat (Ctrl-C stops all)"
	@echo "make logs  - follow the logs of make run's processes"
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
# The processes' logs go to var/log/roundtrip.log (`make logs` follows it), so that the demo's
# URLs and logins, printed once the web server answers, stay the last thing on the screen.
# honcho runs in the background (a non-interactive shell's background job ignores Ctrl-C), so
# the trap hands Ctrl-C on to it; honcho then stops all three.
RUN_LOG := var/log/roundtrip.log
# Exit 0 once $$1 answers 200, 1 if process $$2 (honcho) ends first or 60 s pass.
define WAIT_READY
import os, sys, time, urllib.request
url, pid, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            sys.exit(0 if answer.status == 200 else 1)
    except OSError:
        time.sleep(0.3)
sys.exit(1)
endef
export WAIT_READY
run: $(STAMP)
	@mkdir -p var/log
	$(PY) manage.py migrate --no-input -v 0
	@$(PY) manage.py seed_demo > var/demo.txt
	@echo "Starting web (gunicorn on 127.0.0.1:$(ROUNDTRIP_PORT)), Celery worker and Celery beat; logs: $(RUN_LOG)"
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho -f Procfile.dev start >> $(RUN_LOG) 2>&1 & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid; exit 0' INT TERM; \
	if ! $(PY) -c "$$WAIT_READY" "http://127.0.0.1:$(ROUNDTRIP_PORT)/healthz" $$pid; then \
	  kill -TERM $$pid 2>/dev/null; wait $$pid; \
	  echo "The demo did not start; the end of $(RUN_LOG):" >&2; tail -n 30 $(RUN_LOG) >&2; exit 1; \
	fi; \
	cat var/demo.txt; \
	echo "  Logs: make logs (or $(RUN_LOG)). Ctrl-C stops web, worker and beat."; \
	wait $$pid

# Follow the logs of `make run`'s processes (web, worker, beat), from another terminal.
logs:
	@touch $(RUN_LOG) && tail -n 50 -F $(RUN_LOG)

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
	ROUNDTRIP_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PY) tests/with_services.py -- $(PY) -m pytest tests/browser/test_screenshots.py tests/browser/test_advertiser_portal_browser.py -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf var .pytest_cache .ruff_cache
