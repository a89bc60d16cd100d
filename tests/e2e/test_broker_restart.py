"""The broker (Redis) crashes under a steady flow of conversions, with no supervisor around.

web, worker and beat run as real processes (conftest.py) on the test's own redis-server
(tests/chaos/infra.py: no persistence, so a crash loses every queued message, as an
out-of-memory kill or a failover would). Conversions keep coming over HTTP from a few client
threads while that Redis is SIGKILLed and started again. Nothing restarts the worker or beat:
the very processes started before the first crash must still run at the end, and every
postback must reach the publisher exactly once, soon after Redis is back.
"""

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from bench.prod import free_port
from postbacks.models import Postback
from publishers.models import CallbackTemplate
from tests.chaos.infra import RedisCopy
from tests.e2e.conftest import (
    METRICS_TOKEN,
    database_url_for,
    running_stack,
    stack_env,
    stack_services,
)
from tests.e2e.processes import BROWSER_USER_AGENT, Stack, signal_groups, wait_until
from tests.receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

CLIENTS = 2  # threads sending click + conversion pairs
PAUSE = 0.1  # seconds between one client's conversions: ~20 conversions/s in all


@dataclass
class Flow:
    """Clicks and conversions over HTTP from `CLIENTS` threads until `stop()`. A request that
    fails (a 5xx, a refused connection) is sent again, as an advertiser's retry would be: the
    intake must take every conversion, and `refused` counts what it did not take at once."""

    base_url: str
    code: str
    api_key: str
    accepted: list[str] = field(default_factory=list)  # click ids with a recorded conversion
    refused: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> "Flow":
        for n in range(CLIENTS):
            thread = threading.Thread(target=self._run, name=f"flow-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _until_ok(self, send, ok: tuple[int, ...]) -> requests.Response:
        while True:
            try:
                response = send()
                if response.status_code in ok:
                    return response
                self.refused[str(response.status_code)] += 1
            except requests.RequestException as exc:
                self.refused[type(exc).__name__] += 1
            time.sleep(0.2)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                click = self._until_ok(
                    lambda: session.get(
                        f"{self.base_url}/click?ref={self.code}&spid=s",
                        headers={"User-Agent": BROWSER_USER_AGENT},
                        allow_redirects=False,
                        timeout=10,
                    ),
                    (302,),
                )
                landing = parse_qs(urlsplit(click.headers["Location"]).query)
                click_id = landing["click_id"][0]
                self._until_ok(
                    lambda click_id=click_id: session.post(
                        f"{self.base_url}/api/v1/conversions",
                        json={"click_id": click_id, "txn_id": f"t-{click_id}", "payout": "1"},
                        headers={"Authorization": f"Bearer {self.api_key}"},
                        timeout=10,
                    ),
                    # 200: a retry of a conversion that was recorded (same txn_id).
                    (200, 201),
                )
                self.accepted.append(click_id)
                time.sleep(PAUSE)


@pytest.fixture
def own_redis() -> Iterator[RedisCopy]:
    broker = RedisCopy().start()
    yield broker
    broker.stop()


@pytest.fixture
def stack(transactional_db, own_redis, tmp_path_factory) -> Iterator[Stack]:
    """web, worker and beat with the test's own Redis as broker and Redis state."""
    port = free_port()
    env = stack_env(
        database_url=database_url_for(connection.settings_dict["NAME"]), redis_url=own_redis.url
    )
    services = stack_services(env, tmp_path_factory.mktemp("broker"), port)
    with running_stack(services, port) as s:
        yield s


@pytest.fixture
def flow(stack, link, api_key, receiver, publisher) -> Iterator[Flow]:
    CallbackTemplate.objects.create(
        publisher=publisher, url_template=f"{receiver.base_url}/cb?e=[event_id]"
    )
    running = Flow(base_url=stack.base_url, code=link.code, api_key=api_key).start()
    yield running
    running.stop()


def readyz(stack: Stack) -> dict:
    response = requests.get(f"{stack.base_url}/readyz", timeout=10)
    assert response.status_code in (200, 503), response.text[:300]
    return response.json()


def assert_every_postback_arrived_once(receiver: Receiver, stack: Stack, flow: Flow) -> float:
    """Stop the flow, wait for a postback of every accepted conversion, check each arrived
    exactly once, and that worker and beat, never restarted, work and say so on /readyz.
    Returns when the last postback arrived."""
    flow.stop()
    postbacks = Postback.objects.all()

    def all_arrived() -> bool:
        stack.check_alive()  # no supervisor here: an exited worker or beat stays down
        return (
            len(receiver.requests) >= len(flow.accepted)
            and not postbacks.exclude(status=Postback.Status.SUCCEEDED).exists()
        )

    wait_until(all_arrived, timeout=60, interval=0.2, what="every postback delivered")
    event_ids = Counter(r.headers.get("Roundtrip-Event-Id") for r in receiver.requests)
    assert postbacks.count() == len(flow.accepted)
    assert set(event_ids) == set(postbacks.values_list("event_id", flat=True))
    assert [n for n in event_ids.values() if n > 1] == [], "a postback arrived twice"
    # Redis lost the heartbeats with everything else; a consuming worker and a ticking beat
    # write them again.
    wait_until(lambda: readyz(stack)["status"] == "ok", timeout=10, what="/readyz to be ok again")
    stack.check_alive()
    return max(r.at for r in receiver.requests)


def test_it_delivers_everything_through_five_redis_crashes_without_a_restart(
    stack, own_redis, flow, receiver
):
    wait_until(lambda: len(receiver.requests) >= 20, timeout=30, what="deliveries flowing")
    for _ in range(5):
        own_redis.kill()  # SIGKILL: every queued task message is gone with it
        time.sleep(1)
        own_redis.start()
        last_restart = time.time()
        time.sleep(3)

    last_arrival = assert_every_postback_arrived_once(receiver, stack, flow)
    print(
        f"\n{len(flow.accepted)} conversions, 5 Redis crashes; last postback "
        f"{last_arrival - last_restart:.1f}s after the last restart; "
        f"intake retries: {dict(flow.refused)}"
    )
    assert last_arrival - last_restart <= 15


def test_it_delivers_everything_after_redis_was_down_for_30_seconds(
    stack, own_redis, flow, receiver
):
    wait_until(lambda: len(receiver.requests) >= 20, timeout=30, what="deliveries flowing")
    own_redis.kill()
    before = len(flow.accepted)
    time.sleep(30)
    # The flow stops as Redis comes back: the conversions taken during the outage could not
    # send their delivery task, so only beat's sweeper, through the reconnected worker, gets
    # them out.
    flow.stop()
    during = len(flow.accepted) - before
    own_redis.start()
    back = time.time()
    wait_until(
        lambda: any(r.at >= back for r in receiver.requests),
        timeout=30,
        interval=0.1,
        what="a delivery after Redis came back",
    )
    resumed = min(r.at for r in receiver.requests if r.at >= back) - back

    last_arrival = assert_every_postback_arrived_once(receiver, stack, flow)
    print(
        f"\n{len(flow.accepted)} conversions, {during} of them during the outage; "
        f"deliveries resumed {resumed:.1f}s after Redis came back, the last "
        f"{last_arrival - back:.1f}s after; intake retries: {dict(flow.refused)}"
    )
    assert during > 0, "no conversion came in during the outage"
    assert resumed <= 5


def test_it_says_so_on_readyz_and_metrics_when_worker_and_beat_are_gone(roundtrip_stack):
    stack = roundtrip_stack
    wait_until(lambda: readyz(stack)["status"] == "ok", timeout=15, what="/readyz ok")
    _web, worker, beat = stack.services
    for service in (worker, beat):
        signal_groups(service.process_groups(), signal.SIGKILL)  # no warm shutdown: a crash

    def degraded() -> dict:
        body = readyz(stack)
        return body if body["checks"]["workers"] != "ok" and body["checks"]["beat"] != "ok" else {}

    body = wait_until(degraded, timeout=15, what="/readyz to report worker and beat")
    # The web node still serves: a stopped worker is loud, not a reason to leave the rotation.
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == body["checks"]["broker"] == "ok"
    response = requests.get(
        f"{stack.base_url}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    )
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples["roundtrip_workers_consuming"] == 0
    assert samples["roundtrip_beat_heartbeat_age_seconds"] > 5
