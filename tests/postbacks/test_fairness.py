"""Fairness between publisher endpoints (postbacks/fairness.py): a per-host cap and a circuit
breaker shared by every worker through Redis (a local gate without Redis), and the acceptance
test of the issue: one hanging endpoint among 20 healthy ones under load, real Celery worker."""

import math
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from kombu import Connection

from postbacks import dispatch, fairness, http
from postbacks.dispatch import Lane
from postbacks.dispatch.rows import Claimed, DispatchConfig, Outcome
from postbacks.models import Postback
from publishers.models import CallbackTemplate
from tests.chaos.infra import CeleryWorker, wait_until
from tests.postbacks.test_dispatch import make_postbacks, own_redis_keys
from tests.receiver import Receiver
from tracking.models import Click
from tracking.services import conversion_record

CONFIG = fairness.GateConfig(slot_ttl=30, failures=3, cooldown=10, max_cooldown=25)
HOST = "pub.example:443"


@pytest.fixture
def prefix(settings, request):
    with own_redis_keys(settings, request.node.name) as value:
        yield value


def redis_gate(prefix: str) -> fairness.RedisGate:
    """A gate as one worker process has it (each call: another worker)."""
    return fairness.RedisGate(
        redis.Redis.from_url(django_settings.REDIS_URL), prefix=prefix, config=CONFIG
    )


@pytest.fixture(params=["redis", "local"])
def gates(request, prefix):
    """Two gates that share state: two workers on Redis, or one process's local gate twice."""
    if request.param == "redis":
        return redis_gate(prefix), redis_gate(prefix)
    local = fairness.LocalGate(config=CONFIG)
    return local, local


# --- The cap ---------------------------------------------------------------------------------


def test_it_caps_a_host_across_workers(gates):
    first, second = gates
    now = 1000.0
    taken = first.admit({HOST: 10, "other.example:80": 2}, cap=4, now=now)
    assert taken[HOST].granted == 4 and taken["other.example:80"].granted == 2
    busy = second.admit({HOST: 3}, cap=4, now=now)[HOST]
    assert (busy.granted, busy.retry_at) == (0, None), "at its cap, not broken"
    first.settle({HOST: fairness.HostTally(ok=4, tokens=list(taken[HOST].tokens[:3]))}, now=now)
    assert second.admit({HOST: 5}, cap=4, now=now)[HOST].granted == 3


def test_it_takes_back_the_slots_of_a_worker_that_died(gates):
    first, second = gates
    assert first.admit({HOST: 4}, cap=4, now=1000.0)[HOST].granted == 4
    # That worker never settles; its slots expire after slot_ttl.
    assert second.admit({HOST: 4}, cap=4, now=1000.0 + CONFIG.slot_ttl - 1)[HOST].granted == 0
    assert second.admit({HOST: 4}, cap=4, now=1000.0 + CONFIG.slot_ttl + 1)[HOST].granted == 4


# --- The breaker -----------------------------------------------------------------------------


def test_it_opens_after_failures_in_a_row_and_lets_one_probe_through(gates):
    first, second = gates
    now = 1000.0
    first.settle({HOST: fairness.HostTally(failed=2)}, now=now)
    assert first.admit({HOST: 1}, cap=4, now=now)[HOST].granted == 1  # two: still closed
    first.settle({HOST: fairness.HostTally(failed=1)}, now=now)
    refused = second.admit({HOST: 5}, cap=4, now=now + 1)[HOST]
    assert (refused.granted, refused.retry_at) == (0, now + CONFIG.cooldown)
    assert first.states() == {HOST: "open"}

    # After the cool-down exactly one probe goes out, whichever worker asks first.
    probe = first.admit({HOST: 5}, cap=4, now=now + 11)[HOST]
    assert (probe.granted, probe.probe) == (1, True)
    assert second.admit({HOST: 5}, cap=4, now=now + 11)[HOST].granted == 0
    assert first.states() == {HOST: "half"}

    # The probe fails: open again, for twice as long.
    first.settle({HOST: fairness.HostTally(failed=1, tokens=list(probe.tokens))}, now=now + 12)
    again = second.admit({HOST: 1}, cap=4, now=now + 13)[HOST]
    assert again.retry_at == now + 12 + 2 * CONFIG.cooldown
    # ... never longer than the maximum.
    probe = first.admit({HOST: 1}, cap=4, now=now + 40)[HOST]
    first.settle({HOST: fairness.HostTally(failed=1, tokens=list(probe.tokens))}, now=now + 40)
    assert second.admit({HOST: 1}, cap=4, now=now + 41)[HOST].retry_at == now + 40 + 25

    # A probe that succeeds closes it: the full cap again.
    probe = first.admit({HOST: 1}, cap=4, now=now + 70)[HOST]
    first.settle({HOST: fairness.HostTally(ok=1, tokens=list(probe.tokens))}, now=now + 70)
    assert second.admit({HOST: 9}, cap=4, now=now + 70)[HOST].granted == 4
    assert first.states() == {}


def test_a_probe_that_never_reports_back_is_given_up(gates):
    first, second = gates
    first.settle({HOST: fairness.HostTally(failed=3)}, now=1000.0)
    assert first.admit({HOST: 1}, cap=4, now=1011.0)[HOST].probe  # its worker dies now
    assert second.admit({HOST: 1}, cap=4, now=1011.0 + CONFIG.slot_ttl + 1)[HOST].probe


@pytest.mark.parametrize(
    ("result", "error", "verdict"),
    [
        (200, None, "ok"),
        (404, None, "ok"),  # the host answers: it is up, the URL is not
        (425, None, "failed"),
        (103, None, "failed"),
        (410, None, "ok"),
        (302, None, "ok"),
        (500, None, "failed"),
        (503, None, "failed"),
        (429, None, "failed"),
        (408, None, "failed"),
        (None, "timeout", "hung"),  # a failure that opens the breaker at once
        (None, "connect_timeout", "hung"),
        (None, "connection_error", "failed"),
        (None, "tls_error", "failed"),
        (None, "dns_error", "failed"),
        (None, "forbidden_destination", None),  # refused before any request
        (None, "invalid_url", None),
    ],
)
def test_it_feeds_the_breaker_with_what_says_something_about_the_host(result, error, verdict):
    row = Claimed(1, 1, "https://pub.example/cb", "evt", 1, None)
    outcome = Outcome(
        row,
        result=http.DeliveryResult(result, 1, "", "203.0.113.1") if result else None,
        error=http.DeliveryError(error, "x") if error else None,
    )
    assert outcome.breaker_verdict() == verdict


def test_a_row_put_back_says_nothing_about_the_host():
    row = Claimed(1, 1, "https://pub.example/cb", "evt", 1, None)
    assert Outcome(row, defer_until=django_settings and None).breaker_verdict() is None


def test_retries_get_only_their_share_of_a_hosts_cap(settings):
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT = 8
    settings.POSTBACKS_HOST_RETRY_SHARE = 0.5
    config = DispatchConfig.from_settings()
    assert (config.cap_for(Lane.FIRST), config.cap_for(Lane.RETRY)) == (8, 4)
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT = 1
    assert DispatchConfig.from_settings().cap_for(Lane.RETRY) == 1


def test_a_host_may_be_given_a_cap_of_its_own(settings):
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT = 4
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT_BY_HOST = {"cb.big.example:443": 64}
    config = DispatchConfig.from_settings()
    assert config.cap_for(Lane.FIRST, "cb.big.example:443") == 64
    assert config.cap_for(Lane.RETRY, "cb.big.example:443") == 32
    assert config.cap_for(Lane.FIRST, "small.example:443") == 4


def test_it_keeps_limiting_with_local_state_while_redis_is_down(prefix):
    dead = redis.Redis(port=_closed_port(), socket_connect_timeout=0.2)
    gate = fairness.ResilientGate(
        fairness.RedisGate(dead, prefix=prefix, config=CONFIG), fairness.LocalGate(config=CONFIG)
    )
    taken = gate.admit({HOST: 9}, cap=4)[HOST]
    assert taken.granted == 4 and gate.admit({HOST: 1}, cap=4)[HOST].granted == 0
    gate.settle({HOST: fairness.HostTally(ok=4, tokens=list(taken.tokens))})
    assert gate.admit({HOST: 1}, cap=4)[HOST].granted == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_an_open_breaker_holds_a_hosts_postbacks_unclaimed_until_its_probe(
    template, link, receiver, settings, prefix
):
    settings.POSTBACKS_BREAKER_FAILURES = 2
    settings.POSTBACKS_BREAKER_COOLDOWN_SECONDS = 30
    receiver.status = 503
    make_postbacks(template, link, 2)
    dispatch.postbacks_dispatch(Lane.FIRST, wait=math.inf, kicks=False)
    assert fairness.get_gate().states() == {f"127.0.0.1:{receiver.port}": "open"}

    waiting = make_postbacks(template, link, 5)
    report = dispatch.postbacks_dispatch(Lane.FIRST, wait=math.inf, kicks=False)
    assert (report.claimed, report.sent, report.deferred) == (0, 0, 0), "not even claimed"
    assert len(receiver.requests) == 2, "nothing sent while open"
    # They stay pending, due as they were (oldest first when the host recovers), no attempt.
    assert set(
        Postback.objects.filter(pk__in=[p.pk for p in waiting]).values_list(
            "status", "attempts", "leased_until", "next_attempt_at"
        )
    ) == {("pending", 0, None, p.next_attempt_at) for p in waiting}


# --- Acceptance: one hanging endpoint among twenty healthy ones -------------------------------


class HangingEndpoint:
    """Accepts connections and reads requests, never answers; counts requests held at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.open = self.most_open = self.received = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            data = b""
            while not self.stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:  # one request in; hold it until the client gives up
                    with self.lock:
                        self.received += 1
                        self.open += 1
                        self.most_open = max(self.most_open, self.open)
                    while not self.stop.is_set():
                        try:
                            if not conn.recv(65536):
                                break
                        except TimeoutError:
                            continue
                        except OSError:
                            break
                    with self.lock:
                        self.open -= 1
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


RATE = 60  # conversions per second, offered
SECONDS = 6  # per phase
CAP = 4


@pytest.mark.django_db(transaction=True)
def test_a_hanging_endpoint_does_not_slow_the_healthy_ones(link, settings, prefix, tmp_path):
    settings.POSTBACKS_REDIS_PREFIX = prefix
    healthy = [Receiver().start() for _ in range(20)]
    hanging = HangingEndpoint()
    endpoints = [r.base_url for r in healthy] + [f"http://127.0.0.1:{hanging.port}"]
    for n, base in enumerate(endpoints):
        CallbackTemplate.objects.create(
            publisher=link.publisher, url_template=f"{base}/cb?e=[event_id]", events=[f"e{n:02d}"]
        )
    clicks = iter(
        Click.objects.bulk_create(
            Click(link=link, publisher=link.publisher, campaign=link.campaign, spid=f"s{n}")
            for n in range(3 * RATE * SECONDS)
        )
    )
    broker_url = settings.CELERY_BROKER_URL
    with Connection(broker_url) as broker:
        for queue in ("celery", "postbacks", "postbacks_retry"):
            broker.default_channel.queue_purge(queue)
    worker = CeleryWorker(
        "fairness",
        broker_url=broker_url,
        env={
            "POSTBACKS_REDIS_PREFIX": prefix,
            "POSTBACKS_HOST_MAX_IN_FLIGHT": str(CAP),
            "POSTBACKS_TOTAL_TIMEOUT": "8",
            "POSTBACKS_CONNECT_TIMEOUT": "2",
            "POSTBACKS_TASK_TIME_LIMIT": "30",
        },
        log_dir=Path(tempfile.mkdtemp(prefix="roundtrip-fairness-")),
    )

    def phase(endpoint_count: int) -> list[float]:
        """Offer RATE conversions/s for SECONDS, round robin over the first endpoints; return
        the healthy ones' delivery latencies (commit → received), in ms."""
        accepted: dict[str, float] = {}
        started = time.monotonic()
        for n in range(RATE * SECONDS):
            time.sleep(max(0.0, started + n / RATE - time.monotonic()))
            outcome = conversion_record(
                advertiser=link.campaign.advertiser,
                click_id=next(clicks).click_id,
                event=f"e{n % endpoint_count:02d}",
            )
            if n % endpoint_count < 20:
                accepted[outcome.postbacks[0].event_id] = time.time()

        def arrivals() -> dict[str, float]:
            return {
                r.headers["Roundtrip-Event-Id"]: r.at
                for receiver in healthy
                for r in list(receiver.requests)
                if r.headers.get("Roundtrip-Event-Id") in accepted
            }

        wait_until(lambda: len(arrivals()) == len(accepted), timeout=60, what="healthy callbacks")
        got = arrivals()
        return [(got[event] - at) * 1000 for event, at in accepted.items()]

    try:
        worker.start()
        worker.wait_ready()
        # Warm-up (connections, pool processes), not measured.
        phase(20)
        without = phase(20)
        with_hanging = phase(21)
    finally:
        worker.kill()
        hanging.close()
        for receiver in healthy:
            receiver.stop()

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[-1]

    print(
        f"\nhealthy p95 delivery latency: {p95(without):.0f} ms without the hanging endpoint, "
        f"{p95(with_hanging):.0f} ms with it (p50 {statistics.median(without):.0f} / "
        f"{statistics.median(with_hanging):.0f} ms); the hanging endpoint got "
        f"{hanging.received} requests, at most {hanging.most_open} at once (cap {CAP})"
    )
    assert hanging.received > 0, "the hanging endpoint was tried"
    assert hanging.most_open <= CAP
    # Within 2x of the run without it; a 25 ms floor keeps scheduler noise on a shared 2-core
    # machine (a few ms) from failing a comparison of two tiny numbers.
    assert p95(with_hanging) <= 2 * max(p95(without), 25.0)


def test_rows_waiting_for_a_probe_come_back_within_a_second(gates):
    """Bug 5: while a probe was out, a host's other rows were put back until the probe's
    give-up time (a slot's TTL, ~30 s), so a probe answered in milliseconds still stalled the
    host's recovery that long."""
    first, second = gates
    now = 1000.0
    first.settle({HOST: fairness.HostTally(failed=CONFIG.failures)}, now=now)
    probe = first.admit({HOST: 1}, cap=4, now=now + CONFIG.cooldown + 1)[HOST]
    assert probe.probe
    waiting = second.admit({HOST: 5}, cap=4, now=now + CONFIG.cooldown + 1.1)[HOST]
    assert waiting.granted == 0
    assert waiting.retry_at is not None
    assert waiting.retry_at <= now + CONFIG.cooldown + 1.1 + 1.0
    # The probe answers: the next ask gets the full cap.
    first.settle({HOST: fairness.HostTally(ok=1, tokens=list(probe.tokens))}, now=now + 11.2)
    assert second.admit({HOST: 5}, cap=4, now=now + CONFIG.cooldown + 1.3)[HOST].granted == 4


def test_a_time_out_opens_the_breaker_at_once(gates):
    """One request held until our deadline says the host hangs: probes only from then on."""
    first, second = gates
    now = 1000.0
    first.settle({HOST: fairness.HostTally(failed=1, hung=1)}, now=now)
    assert first.states() == {HOST: "open"}
    assert second.admit({HOST: 4}, cap=4, now=now + 1)[HOST].granted == 0
    assert second.rooms(now=now + 1)[HOST].held_until == now + CONFIG.cooldown
    probe = second.admit({HOST: 4}, cap=4, now=now + CONFIG.cooldown + 1)[HOST]
    assert (probe.granted, probe.probe) == (1, True)


def test_a_host_whose_request_hangs_gets_one_request_at_a_time(gates):
    first, second = gates
    now = 1000.0
    assert first.admit({HOST: 2}, cap=4, now=now)[HOST].granted == 2
    # Still answering quickly enough: the rest of its cap.
    assert second.admit({HOST: 4}, cap=4, now=now + CONFIG.slow - 0.5)[HOST].granted == 2
    room = second.rooms(now=now + CONFIG.slow + 0.5)[HOST]
    assert (room.in_flight, room.slow, room.free(4)) == (4, True, 0)
    assert room.oldest_started == pytest.approx(now)
