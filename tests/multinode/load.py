"""Visitors and an advertiser, from the `ext` host: clicks through nginx, and conversions for
two clicks in three, sent a few clicks later (some still in the click buffer, some flushed).

What the client was told is what the test checks: a click counts as acknowledged when nginx
answered 302 (its click id is in the Location), a conversion when the API answered 201 or 200
(its postback event ids are in the body). A request that fails (connection error, 502, 503,
504) is sent again, as an advertiser's server would: conversions carry a `txn_id`, so a retry of
one that was in fact recorded is answered 200 with the same conversion. A 429 (the advertiser
key has all its concurrent slots taken, config/admission.py) is sent again after its
Retry-After, as the API docs ask; those are counted, not failures.
"""

import http.client
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from tests.multinode.cluster import BROWSER_UA, PUBLIC_HOST
from tests.multinode.netns import Host, Network

RETRYABLE = {502, 503, 504}


@dataclass
class Failure:
    at: float  # time.time()
    what: str  # "click" or "conversion"
    detail: str


@dataclass
class Load:
    network: Network
    client: Host
    target: str  # nginx address
    port: int
    link: str
    api_key: str
    clicks: int
    threads: int = 16
    lag: int = 4  # a click is converted this many clicks of its thread later
    kill_at: float = 0.4  # share of the work after which `halfway` is set
    clicks_acked: set[str] = field(default_factory=set)
    event_ids: dict[str, str] = field(default_factory=dict)  # event id -> conversion id
    conversions_acked: set[str] = field(default_factory=set)  # conversion ids
    failures: list[Failure] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    done_requests: int = 0
    limited: int = 0  # 429s answered (and retried after Retry-After)
    halfway: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        converted = self.clicks - (self.clicks + 2) // 3
        self.total_requests = self.clicks + converted

    def run(self) -> float:
        """Send everything; returns the elapsed seconds."""
        started = time.monotonic()
        workers = [
            threading.Thread(target=self._worker, args=(n,), daemon=True)
            for n in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.monotonic() - started

    # -- one thread ---------------------------------------------------------------------------

    def _worker(self, number: int) -> None:
        with self.network.inside(self.client):
            conn = None
            pending: deque[tuple[int, str]] = deque()
            for n in range(number, self.clicks, self.threads):
                conn, click_id = self._click(conn, n)
                if click_id and n % 3:
                    pending.append((n, click_id))
                if len(pending) > self.lag:
                    conn = self._convert(conn, *pending.popleft())
            while pending:
                conn = self._convert(conn, *pending.popleft())
            if conn is not None:
                conn.close()

    def _request(self, conn, what: str, method: str, path: str, body=None, headers=None):
        """Send until an answer other than a gateway error comes back (at most 20 tries)."""
        headers = {"Host": PUBLIC_HOST, "User-Agent": BROWSER_UA, **(headers or {})}
        tries = 0
        while tries < 20:
            tries += 1
            if conn is None:
                conn = http.client.HTTPConnection(self.target, self.port, timeout=10)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                self._failed(what, f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)
                continue
            if response.status == 429:
                with self.lock:
                    self.limited += 1
                tries -= 1  # not a failure: the API asked us to come back
                time.sleep(float(response.getheader("Retry-After", "1")))
                continue
            if response.status in RETRYABLE:
                self._failed(what, f"HTTP {response.status}")
                time.sleep(0.05)
                continue
            self._count()
            return conn, response, data
        raise AssertionError(f"{what}: no answer after 20 tries")

    def _click(self, conn, n: int) -> tuple:
        conn, response, _ = self._request(
            conn, "click", "GET", f"/click?ref={self.link}&spid=mn-{n}"
        )
        if response.status != 302:
            self._unexpected(f"click {n}: HTTP {response.status}")
            return conn, None
        click_id = parse_qs(urlsplit(response.getheader("Location", "")).query)["click_id"][0]
        with self.lock:
            self.clicks_acked.add(click_id)
        return conn, click_id

    def _convert(self, conn, n: int, click_id: str):
        body = json.dumps({"click_id": click_id, "txn_id": f"txn-{n}"})
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        conn, response, data = self._request(
            conn, "conversion", "POST", "/api/v1/conversions", body, headers
        )
        if response.status not in (200, 201):
            self._unexpected(f"conversion {n}: HTTP {response.status} {data[:200]!r}")
            return conn
        answer = json.loads(data)
        with self.lock:
            self.conversions_acked.add(answer["id"])
            for postback in answer["postbacks"]:
                self.event_ids[postback["id"]] = answer["id"]
        return conn

    # -- bookkeeping ----------------------------------------------------------------------------

    def _failed(self, what: str, detail: str) -> None:
        with self.lock:
            self.failures.append(Failure(time.time(), what, detail))

    def _unexpected(self, detail: str) -> None:
        with self.lock:
            self.unexpected.append(detail)

    def _count(self) -> None:
        with self.lock:
            self.done_requests += 1
            if self.done_requests >= self.kill_at * self.total_requests:
                self.halfway.set()
