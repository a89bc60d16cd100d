"""deploy/nginx/roundtrip.conf on a real nginx: each pool sheds load past its own bound with a
fast 503 + Retry-After, and a full API pool never refuses a click.

The web nodes are stand-ins here (HTTP servers on 127.0.0.1: the API one holds every request
for two seconds, as a pool whose queue is full would), because the behaviour under test is
nginx's: the bound is counted and answered by nginx, before any node sees the request.
"""

import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from bench.prod import free_port, local_upstreams, nginx_config

ROOT = Path(__file__).resolve().parents[2]
API_BOUND = 3
HOLD_SECONDS = 2.0

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="needs nginx"
)


class Node(BaseHTTPRequestHandler):
    hold = 0.0

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        time.sleep(self.hold)
        status = 302 if self.path.startswith("/click") else 201
        self.send_response(status)
        self.send_header("Content-Length", "0")
        if status == 302:
            self.send_header("Location", "https://example.com/")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


def start_node(hold: float) -> ThreadingHTTPServer:
    handler = type("HeldNode", (Node,), {"hold": hold})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def nginx(tmp_path):
    nodes = {"redirect": start_node(0), "api": start_node(HOLD_SECONDS), "portal": start_node(0)}
    listen = free_port()
    ports = {pool: node.server_address[1] for pool, node in nodes.items()}
    config = nginx_config(
        local_upstreams(ports), f"127.0.0.1:{listen}", tmp_path, bounds={"api": API_BOUND}
    )
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen(
        [binary, "-c", str(config), "-g", "daemon off;"], stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{listen}"
    deadline = time.monotonic() + 10
    while True:
        try:
            requests.get(f"{base}/healthz", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(process.stderr.read().decode()) from None
            time.sleep(0.1)
    yield base
    process.terminate()
    process.wait(10)
    for node in nodes.values():
        node.shutdown()


def test_a_full_pool_sheds_at_once_and_the_redirect_is_not_refused(nginx):
    def post(_: int) -> tuple[int, float, str | None, str]:
        started = time.monotonic()
        response = requests.post(f"{nginx}/api/v1/conversions", json={}, timeout=10)
        elapsed = time.monotonic() - started
        return response.status_code, elapsed, response.headers.get("Retry-After"), response.text

    with ThreadPoolExecutor(API_BOUND + 4) as pool:
        held = [pool.submit(post, i) for i in range(API_BOUND)]
        time.sleep(0.5)  # the bound's requests are in flight at the node
        extra = [pool.submit(post, i) for i in range(4)]
        # The API pool is full; clicks go to their own pool and are answered at once.
        for _ in range(20):
            click = requests.get(f"{nginx}/click?ref=x", allow_redirects=False, timeout=5)
            assert click.status_code == 302
            assert click.elapsed.total_seconds() < 0.5
        shed = [future.result() for future in extra]
        admitted = [future.result() for future in held]

    assert [status for status, *_ in admitted] == [201] * API_BOUND
    for status, elapsed, retry_after, body in shed:
        assert status == 503, body
        assert retry_after == "1"
        assert elapsed < HOLD_SECONDS / 2  # answered at once, not after waiting in a queue
        assert '"code":"overloaded"' in body
