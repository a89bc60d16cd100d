"""The database cut for 15 s under load, on real processes with the production settings.

granian (the argv of the systemd unit), a Celery worker and beat run with `config.settings`
(click buffer on, per-process link cache) and reach PostgreSQL only through a TCP proxy
(tcp_proxy.py) that the test cuts: their connections are reset and new ones refused, as when
PostgreSQL stops, while the suite's PostgreSQL and this process's connection to it are left
alone. Visitors click a tracking link and a smart-ad unit and its ads the whole time; an
advertiser posts conversions (POST and GET pixel), sending each again after `Retry-After`
until it is accepted, as docs/api.md asks.

During the cut every click on the known live link and on the smart ad's ads is redirected,
and every one of those clicks is in PostgreSQL afterwards; the unit keeps showing its ads;
every refused conversion got 503 with Retry-After and the JSON error; every accepted
conversion is delivered to the publisher exactly once; no process exits or is replaced.
"""

import html
import os
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis
import requests
from django.db import connection

from bench.prod import free_port
from postbacks.models import Postback
from publishers.models import CallbackTemplate, Publisher
from tests.e2e.conftest import e2e_redis_url, running_stack, stack_env, stack_services
from tests.e2e.processes import BROWSER_USER_AGENT, wait_until
from tests.e2e.tcp_proxy import CuttableProxy
from tests.receiver import Receiver
from tracking.models import Click, Conversion, SmartAd, TrackingLink

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BEFORE_SECONDS = 5.0  # traffic before the cut: every web process has seen the link and unit
CUT_SECONDS = 15.0
AFTER_SECONDS = 5.0


@dataclass
class Answer:
    kind: str  # click | unit | smart_click | conversion
    started: float  # monotonic
    status: int
    click_id: str = ""
    retry_after: str | None = None
    error_code: str = ""
    ads: int = 0


@dataclass
class Traffic:
    base_url: str
    link: TrackingLink
    smart_ad: SmartAd
    api_key: str
    token: str
    answers: list[Answer] = field(default_factory=list)
    to_convert: queue.Queue = field(default_factory=queue.Queue)
    accepted: set[str] = field(default_factory=set)
    stop_clicking: threading.Event = field(default_factory=threading.Event)
    stop_converting: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def get(self, url: str, **kwargs) -> requests.Response:
        # A new connection per request, as from many visitors: every web process gets some.
        return requests.get(
            url,
            allow_redirects=False,
            headers={"User-Agent": BROWSER_USER_AGENT},
            timeout=10,
            **kwargs,
        )

    def click(self, url: str, kind: str) -> str:
        started = time.monotonic()
        response = self.get(url)
        click_id = ""
        if response.status_code == 302:
            click_id = parse_qs(urlsplit(response.headers["Location"]).query)["click_id"][0]
        self.record(Answer(kind, started, response.status_code, click_id=click_id))
        return click_id

    def clicker(self, number: int) -> None:
        n = 0
        while not self.stop_clicking.is_set():
            n += 1
            query = urlencode({"ref": self.link.code, "spid": f"v{number}-{n}"})
            click_id = self.click(f"{self.base_url}/click?{query}", "click")
            if click_id and n % 4 == 0:
                self.to_convert.put(click_id)
            time.sleep(0.02)

    def smart_visitor(self) -> None:
        n = 0
        while not self.stop_clicking.is_set():
            n += 1
            query = urlencode(
                {"ref": self.link.code, "smart_ad_id": self.smart_ad.pk, "spid": f"s-{n}"}
            )
            started = time.monotonic()
            response = self.get(f"{self.base_url}/smart?{query}")
            hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', response.text)]
            self.record(Answer("unit", started, response.status_code, ads=len(hrefs)))
            for href in hrefs:
                click_id = self.click(f"{self.base_url}{href}", "smart_click")
                if click_id and n % 2 == 0:
                    self.to_convert.put(click_id)
            time.sleep(0.05)

    def advertiser(self) -> None:
        """Sends each conversion until it is accepted, waiting Retry-After between tries."""
        n = 0
        while True:
            try:
                click_id = self.to_convert.get(timeout=0.2)
            except queue.Empty:
                if self.stop_converting.is_set():
                    return
                continue
            n += 1
            body = {"click_id": click_id, "txn_id": f"order-{click_id}", "payout": "2.50"}
            for _ in range(120):
                started = time.monotonic()
                if n % 2:
                    response = requests.post(
                        f"{self.base_url}/api/v1/conversions",
                        json=body,
                        headers={"Authorization": f"Bearer {self.api_key}"},
                        timeout=10,
                    )
                else:
                    response = requests.get(
                        f"{self.base_url}/postback",
                        params={"token": self.token, **body},
                        timeout=10,
                    )
                try:
                    code = response.json().get("error", {}).get("code", "")
                except ValueError:
                    code = "(not JSON)"
                retry_after = response.headers.get("Retry-After")
                self.record(
                    Answer(
                        "conversion",
                        started,
                        response.status_code,
                        click_id=click_id,
                        retry_after=retry_after,
                        error_code=code,
                    )
                )
                if response.status_code in (200, 201):
                    with self._lock:
                        self.accepted.add(click_id)
                    break
                if response.status_code != 503 or not retry_after:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                    break
                # The advertiser honours Retry-After (1 s in this test's settings).
                time.sleep(float(retry_after))


def proxied_database_url(proxy: CuttableProxy, name: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return parts._replace(netloc=netloc, path=f"/{name}").geturl()


def test_clicks_and_conversions_ride_out_a_15_second_database_cut(
    transactional_db,
    tmp_path_factory,
    publisher: Publisher,
    link: TrackingLink,
    travel_smart_ad: SmartAd,
    api_key: str,
    postback_token: str,
    receiver: Receiver,
):
    smart_ad = travel_smart_ad  # two creatives, both shown in every view
    CallbackTemplate.objects.create(
        publisher=publisher, url_template=f"{receiver.base_url}/cb?e=[event_id]&c=[click_id]"
    )
    database = connection.settings_dict
    proxy = CuttableProxy(database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)).start()
    redis_url = e2e_redis_url()
    redis.Redis.from_url(redis_url).flushdb()
    port = free_port()
    env = stack_env(
        database_url=proxied_database_url(proxy, database["NAME"]),
        redis_url=redis_url,
        # The production settings module: click buffer on, link cache 5 s, key cache 10 s.
        DJANGO_SETTINGS_MODULE="config.settings",
        # Shorter than production so that the cut outlasts every cache's freshness and the
        # last-known copies are what serves (the default 30 s would outlast a 15 s cut).
        SMART_ADS_CACHE_SECONDS="5",
        DATABASE_OUTAGE_RETRY_AFTER="1",
        DATABASE_CONNECT_TIMEOUT="2",
        # A flush that failed in the cut is taken over after 2 s instead of 30 s.
        CLICKS_BUFFER_CLAIM_IDLE_MS="2000",
    )
    services = stack_services(env, tmp_path_factory.mktemp("outage-logs"), port, web="granian")
    try:
        with running_stack(services, port) as stack:
            traffic = Traffic(stack.base_url, link, smart_ad, api_key, postback_token)
            pids = {service.name: service.pids() for service in services}
            threads = [
                threading.Thread(target=traffic.clicker, args=(1,)),
                threading.Thread(target=traffic.clicker, args=(2,)),
                threading.Thread(target=traffic.smart_visitor),
                threading.Thread(target=traffic.advertiser),
            ]
            for thread in threads:
                thread.start()
            try:
                time.sleep(BEFORE_SECONDS)
                cut_at = time.monotonic()
                proxy.cut()
                time.sleep(CUT_SECONDS / 2)
                ready_in_cut = requests.get(f"{stack.base_url}/readyz", timeout=10)
                time.sleep(CUT_SECONDS / 2)
                proxy.restore()
                restored_at = time.monotonic()
                time.sleep(AFTER_SECONDS)
            finally:
                traffic.stop_clicking.set()
                time.sleep(1)
                traffic.stop_converting.set()
                for thread in threads:
                    thread.join(60)
            stack.check_alive()
            assert {service.name: service.pids() for service in services} == pids

            def during_cut(answer: Answer) -> bool:
                return cut_at <= answer.started < restored_at

            answers = traffic.answers
            tally = Counter((a.kind, "cut" if during_cut(a) else "up", a.status) for a in answers)
            print(f"\nanswers by (kind, database, status): {sorted(tally.items())}")
            assert not traffic.failures, traffic.failures[:5]

            # /readyz told the load balancer the database was down, and then up again.
            assert ready_in_cut.status_code == 503
            assert ready_in_cut.json()["checks"]["database"] != "ok"
            assert requests.get(f"{stack.base_url}/readyz", timeout=10).status_code == 200

            # Every click on the live link and on the unit's ads was redirected, cut or not.
            clicks = [a for a in answers if a.kind in ("click", "smart_click")]
            assert {a.status for a in clicks} == {302}, Counter(a.status for a in clicks)
            cut_clicks = [a for a in clicks if during_cut(a)]
            assert sum(a.kind == "click" for a in cut_clicks) >= 50, tally
            assert sum(a.kind == "smart_click" for a in cut_clicks) >= 10, tally
            # The unit kept showing its ads.
            units = [a for a in answers if a.kind == "unit"]
            assert {(a.status, a.ads) for a in units} == {(200, 2)}, Counter(
                (a.status, a.ads) for a in units
            )

            # Every refused conversion was a 503 with Retry-After and the JSON error.
            conversions = [a for a in answers if a.kind == "conversion"]
            refused = [a for a in conversions if a.status not in (200, 201)]
            assert refused, "the cut refused no conversion: was the database really cut?"
            assert {(a.status, a.error_code, a.retry_after) for a in refused} == {
                (503, "unavailable", "1")
            }
            assert traffic.to_convert.empty()

            # Afterwards: every redirected click is in PostgreSQL, with the unit's ones marked.
            redirected = {a.click_id for a in clicks}
            stored = Click.objects.filter(click_id__in=redirected)
            wait_until(
                lambda: stack.check_alive() or stored.count() == len(redirected),
                timeout=60,
                what=f"all {len(redirected)} redirected clicks in PostgreSQL",
            )
            smart_ids = {a.click_id for a in clicks if a.kind == "smart_click"}
            assert (
                set(stored.filter(smart_ad_id=str(smart_ad.pk)).values_list("click_id", flat=True))
                == smart_ids
            )

            # Every accepted conversion is recorded once and delivered once.
            assert (
                set(Conversion.objects.values_list("click__click_id", flat=True))
                == traffic.accepted
            )
            postbacks = Postback.objects.filter(publisher=publisher)
            wait_until(
                lambda: (
                    stack.check_alive()
                    or postbacks.filter(status=Postback.Status.SUCCEEDED).count()
                    == len(traffic.accepted)
                ),
                timeout=60,
                what="every postback delivered",
            )
            time.sleep(2)  # a duplicate would arrive now
            delivered = Counter(r.headers.get("Roundtrip-Event-Id") for r in receiver.requests)
            expected = set(postbacks.values_list("event_id", flat=True))
            assert set(delivered) == expected
            assert [e for e, n in delivered.items() if n > 1] == []
            print(
                f"accepted conversions: {len(traffic.accepted)}, refused answers: "
                f"{len(refused)}, clicks stored: {len(redirected)}"
            )
            stack.check_alive()
            assert {service.name: service.pids() for service in services} == pids
    finally:
        proxy.stop()
