"""Acceptance 1: the local demo with no servers at all, as `make run` starts it.

No DATABASE_URL, CELERY_BROKER_URL or REDIS_URL: SQLite and kombu's file-system broker under a
temporary ROUNDTRIP_VAR_DIR. migrate, `seed_demo --json`, then Procfile.dev through honcho
(web, worker, beat). The printed tracking link is clicked with the brief's tricky spid, the
conversion is posted as the printed curl does, and the built-in demo receiver must show exactly
that spid within 5 seconds.
"""

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from bench.prod import free_port
from tests.e2e.processes import (
    BROWSER_USER_AGENT,
    REPO_ROOT,
    SCRIPTS_DIR,
    Service,
    wait_until,
)

pytestmark = pytest.mark.e2e

SPID = 'a b&c/d?e#f%g"ü'
# Whatever configures a server-backed install, or the suite's own settings, must not leak in.
UNSET = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "TEST_CELERY_BROKER_URL",
    "E2E_REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "SITE_URL",
    "DEMO_RECEIVER_ENABLED",
)


@dataclass
class LocalDemo:
    site_url: str
    seed: dict
    var_dir: Path
    services: list[Service] = field(default_factory=list)

    def inbox(self) -> list[dict]:
        response = requests.get(f"{self.site_url}/demo/receiver/?format=json", timeout=5)
        assert response.status_code == 200, response.text[:300]
        return response.json()["callbacks"]


def local_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in UNSET and not name.startswith(("POSTBACKS_", "CELERY_"))
    }
    env.update(
        {
            "ROUNDTRIP_VAR_DIR": str(var_dir),
            "ROUNDTRIP_PORT": str(port),
            "SITE_URL": f"http://127.0.0.1:{port}",
            # As `make run` sets them: the demo receiver is on 127.0.0.1.
            "POSTBACKS_ALLOW_PRIVATE_DESTINATIONS": "true",
            "POSTBACKS_SWEEP_INTERVAL": "5",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{SCRIPTS_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def local_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDemo]:
    var_dir = tmp_path_factory.mktemp("local-var")
    port = free_port()
    env = local_env(var_dir, port)
    manage(env, "migrate", "--no-input", "-v", "0")
    seed = json.loads(manage(env, "seed_demo", "--json"))
    honcho = Service(
        "honcho",
        [str(SCRIPTS_DIR / "honcho"), "-f", "Procfile.dev", "start"],
        env,
        tmp_path_factory.mktemp("local-logs"),
    )
    demo = LocalDemo(site_url=f"http://127.0.0.1:{port}", seed=seed, var_dir=var_dir)
    demo.services.append(honcho)
    try:
        honcho.start()
        honcho.wait_for_http(f"{demo.site_url}/demo/receiver/?format=json", timeout=60)
        honcho.wait_for_log(" ready.", timeout=60)  # the Celery worker
        honcho.wait_for_log("beat: Starting", timeout=60)
        yield demo
    finally:
        honcho.stop()


def test_it_runs_on_sqlite_and_the_file_broker_under_the_var_dir(local_demo):
    assert (local_demo.var_dir / "roundtrip.sqlite3").is_file()
    assert (local_demo.var_dir / "broker" / "queue").is_dir()
    # Beat's shelve file (dbm may add a suffix): Procfile.dev honours ROUNDTRIP_VAR_DIR too.
    assert any(local_demo.var_dir.glob("celerybeat-schedule*"))
    assert local_demo.seed["site_url"] == local_demo.site_url


def test_it_shows_the_tricky_spid_at_the_demo_receiver_within_5_seconds(local_demo):
    seed = local_demo.seed
    # The printed tracking link, with its example spid replaced by the tricky one.
    link = urlsplit(seed["tracking_link"])
    query = {name: values[0] for name, values in parse_qs(link.query).items()}
    query["spid"] = SPID
    url = link._replace(
        query="&".join(f"{name}={quote(value, safe='')}" for name, value in query.items())
    ).geturl()
    assert url == seed["example_tracking_link"]

    clicked = requests.get(
        url, allow_redirects=False, headers={"User-Agent": BROWSER_USER_AGENT}, timeout=10
    )
    assert clicked.status_code == 302, clicked.text[:300]
    # As the printed curl does: everything after "click_id=" in the redirect.
    click_id = clicked.headers["Location"].split("click_id=", 1)[1]

    converted = requests.post(
        seed["conversion_api_url"],
        json={"click_id": click_id, "txn_id": f"order-{click_id}", "payout": "1.50"},
        headers={"Authorization": f"Bearer {seed['advertiser_api_key']}"},
        timeout=10,
    )
    posted_at = time.monotonic()
    assert converted.status_code == 201, converted.text[:500]
    # The seed's two callbacks: a GET postback and a signed JSON webhook.
    event_ids = {postback["id"] for postback in converted.json()["postbacks"]}
    assert len(event_ids) == 2

    def received() -> dict | None:
        found = {cb["event_id"]: cb for cb in local_demo.inbox() if cb["event_id"] in event_ids}
        return found if len(found) == 2 else None

    callbacks = wait_until(received, timeout=5, interval=0.1, what="the demo receiver")
    assert time.monotonic() - posted_at <= 5
    assert sorted(cb["method"] for cb in callbacks.values()) == ["GET", "POST"]
    for callback in callbacks.values():
        # The query of the GET, the JSON body's data of the webhook: the same exact spid.
        assert dict(callback["params"])["spid"] == SPID
        assert callback["signature_valid"] is True


def test_it_completes_the_round_trip_with_the_printed_curl(local_demo):
    before = {cb["event_id"] for cb in local_demo.inbox()}
    done = subprocess.run(
        ["bash", "-c", local_demo.seed["conversion_curl"]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout.strip().splitlines()[-1])
    assert body["created"] is True, body
    event_ids = {postback["id"] for postback in body["postbacks"]}
    assert len(event_ids) == 2 and not event_ids & before

    def received() -> list | None:
        found = [cb for cb in local_demo.inbox() if cb["event_id"] in event_ids]
        return found if len(found) == 2 else None

    for callback in wait_until(received, timeout=5, interval=0.1, what="the demo receiver"):
        assert dict(callback["params"])["spid"] == local_demo.seed["example_spid"] == SPID


def test_it_seeds_an_offer_that_needs_approval_and_a_strict_campaign(local_demo):
    seed = local_demo.seed
    offers = requests.get(
        f"{local_demo.site_url}/api/v1/offers",
        headers={"Authorization": f"Bearer {seed['publisher_api_key']}"},
        timeout=10,
    ).json()["results"]
    states = {offer["name"]: (offer["access"], offer["access_state"]) for offer in offers}
    assert states[seed["approval_offer"]["name"]] == ("approval", "not_requested")

    strict = seed["strict_campaign"]
    human = requests.get(
        strict["tracking_link"],
        allow_redirects=False,
        headers={"User-Agent": BROWSER_USER_AGENT},
        timeout=10,
    )
    assert human.status_code == 302  # 127.0.0.1 is not on its block list
    # A bot's click (curl's user agent): its conversion is flagged, not held, and called back.
    clicked = requests.get(
        strict["tracking_link"].replace("123456789", "bot-spid"),
        allow_redirects=False,
        headers={"User-Agent": "curl/8.5.0"},
        timeout=10,
    )
    click_id = clicked.headers["Location"].split("click_id=", 1)[1]
    converted = requests.post(
        seed["conversion_api_url"],
        json={"click_id": click_id, "txn_id": f"order-{click_id}"},
        headers={"Authorization": f"Bearer {seed['advertiser_api_key']}"},
        timeout=10,
    ).json()
    assert (converted["status"], converted["reason"]) == ("approved", "bot_flagged")
    event_ids = {postback["id"] for postback in converted["postbacks"]}

    def received() -> dict | None:
        # The GET callback (the seed's JSON webhook gets the same conversion).
        return next(
            (
                cb
                for cb in local_demo.inbox()
                if cb["event_id"] in event_ids and cb["method"] == "GET"
            ),
            None,
        )

    params = dict(wait_until(received, timeout=5, interval=0.1, what="the callback")["params"])
    assert (params["spid"], params["status"], params["reason"]) == (
        "bot-spid",
        "approved",
        "bot_flagged",
    )


def test_the_demo_advertiser_signs_in_and_sends_a_test_conversion(local_demo):
    """The banner's advertiser login, on the running demo: the one login page leads to the
    portal, the conversions sent are listed, and a test conversion goes through the intake
    without calling the demo publisher back."""
    site = local_demo.site_url
    login = local_demo.seed["logins"]["advertiser"]
    session = requests.Session()
    session.headers["User-Agent"] = BROWSER_USER_AGENT
    session.get(f"{site}/accounts/login/", timeout=10)
    signed_in = session.post(
        f"{site}/accounts/login/",
        data={**login, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": f"{site}/accounts/login/"},
        timeout=10,
    )
    assert signed_in.url == local_demo.seed["advertiser_portal_url"], signed_in.url
    assert "Demo Campaign" in signed_in.text

    home = signed_in.text
    campaign = re.search(r'<option value="([0-9a-z]+)"', home).group(1)
    before = {cb["event_id"] for cb in local_demo.inbox()}
    sent = session.post(
        f"{site}/advertiser/test-conversion/",
        data={
            "campaign": campaign,
            "event": "conversion",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": local_demo.seed["advertiser_portal_url"]},
        timeout=10,
    )
    assert sent.status_code == 200 and "/advertiser/conversions/" in sent.url
    assert "Test conversion on Demo Campaign: Accepted, status approved" in sent.text
    assert "pill-test" in sent.text
    time.sleep(2)  # long enough for a callback to land, had one been queued
    assert {cb["event_id"] for cb in local_demo.inbox()} == before
