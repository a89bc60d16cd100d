"""postbacks.http against real servers on 127.0.0.1: deadlines, caps, TLS, error mapping.

Raw socket servers stand in for misbehaving publishers (dripping, stalling, lying about
lengths); `tests.receiver.Receiver` for well-behaved ones. Timeouts are small so the suite
stays fast; each bound asserted is the configured deadline plus scheduling slack, far below
what the misbehaving server would otherwise cost.
"""

import doctest
import socket
import ssl
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import aiohttp
import pytest
import trustme

from postbacks import http as postbacks_http
from postbacks.http import DeliveryError, delivery_error_from, send_get
from tests.receiver import Receiver

# Generous slack over a deadline for thread scheduling on a busy 2-core CI box.
SLACK = 1.0


class RawServer:
    """Accepts connections on 127.0.0.1 and runs `handler(conn)` for each in a thread."""

    def __init__(self, handler: Callable[[socket.socket], None]):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.stopped = threading.Event()
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass  # the client gave up on us: that is what most tests want
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()


@contextmanager
def raw_server(handler: Callable[[socket.socket], None]) -> Iterator[RawServer]:
    server = RawServer(handler)
    try:
        yield server
    finally:
        server.stop()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def drip(conn: socket.socket, payload: bytes, stop: threading.Event, interval: float = 1.0):
    """Send `payload` one byte per `interval` seconds (until the client hangs up)."""
    for byte in payload:
        if stop.is_set():
            return
        conn.sendall(bytes([byte]))
        time.sleep(interval)


def get(url: str, **kwargs) -> postbacks_http.DeliveryResult:
    kwargs.setdefault("allow_private", True)
    return send_get(url, headers=kwargs.pop("headers", {}), **kwargs)


def timed_error(url: str, **kwargs) -> tuple[DeliveryError, float]:
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        get(url, **kwargs)
    return caught.value, time.monotonic() - started


# --- Total deadline -------------------------------------------------------------------------

# A long answer: dripped at 1 byte/s it would take minutes to arrive.
LONG_HEAD = (
    b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"a" * 150 + b"\r\nContent-Length: 2\r\n\r\nok"
)


def test_it_abandons_a_status_line_and_headers_dripped_one_byte_a_second():
    def handler(conn):
        read_request(conn)
        drip(conn, LONG_HEAD, server.stopped)

    with raw_server(handler) as server:
        error, elapsed = timed_error(server.url + "/cb", connect_timeout=1.0, total_timeout=1.5)
    # Each byte arrives within the per-read timeout: only the watchdog can end this.
    assert error.kind == "timeout"
    assert not error.permanent
    assert error.resolved_ip == "127.0.0.1"
    assert elapsed < 1.5 + SLACK


def test_it_abandons_a_body_dripped_one_byte_a_second():
    def handler(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n")
        drip(conn, b"b" * 500, server.stopped)

    with raw_server(handler) as server:
        error, elapsed = timed_error(server.url, connect_timeout=1.0, total_timeout=1.5)
    assert error.kind == "timeout"
    assert elapsed < 1.5 + SLACK


def test_it_does_not_mistake_a_cut_close_delimited_body_for_a_complete_one():
    # No Content-Length: the end of the body is the end of the connection, so the watchdog's
    # shutdown would look like a normal end if send_get didn't check the deadline.
    def handler(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        drip(conn, b"c" * 500, server.stopped)

    with raw_server(handler) as server:
        error, elapsed = timed_error(server.url, connect_timeout=1.0, total_timeout=1.5)
    assert error.kind == "timeout"
    assert elapsed < 1.5 + SLACK


def test_it_abandons_a_tls_handshake_dripped_one_byte_a_second():
    # A TLS record header announcing 16 KiB of handshake, then a byte every half second.
    # CPython bounds a whole handshake by the socket timeout, which send_get sets to what is
    # left of the total (not the longer connect timeout); the watchdog is the backstop.
    def handler(conn):
        conn.sendall(b"\x16\x03\x03\x40\x00")
        drip(conn, b"\x02" * 500, server.stopped, interval=0.5)

    with raw_server(handler) as server:
        url = server.url.replace("http://", "https://")
        error, elapsed = timed_error(url, connect_timeout=5.0, total_timeout=1.5)
    assert error.kind == "timeout"
    assert elapsed < 1.5 + SLACK


def test_it_times_out_a_server_that_never_answers():
    def handler(conn):
        read_request(conn)
        server.stopped.wait(10)

    with raw_server(handler) as server:
        error, elapsed = timed_error(server.url, connect_timeout=0.5, total_timeout=0.8)
    assert error.kind == "timeout"
    assert elapsed < 0.8 + SLACK


def test_it_times_out_a_connection_that_is_never_accepted():
    # A listening socket whose accept queue is full: Linux drops further SYNs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        error, elapsed = timed_error(
            f"http://127.0.0.1:{port}/", connect_timeout=0.4, total_timeout=3.0
        )
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert error.kind == "connect_timeout"
    assert elapsed < 0.4 + SLACK


def test_it_gives_up_on_a_resolver_that_hangs():
    def slow_resolver(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["127.0.0.1"]

    error, elapsed = timed_error(
        "http://slow.example/", connect_timeout=0.3, total_timeout=1.0, resolver=slow_resolver
    )
    assert error.kind == "dns_error"
    assert elapsed < 0.3 + SLACK


# --- Bounded reads --------------------------------------------------------------------------

TEN_MB = b"x" * (10 * 1024 * 1024)


def serve_big_body(conn: socket.socket, chunked: bool = False) -> None:
    read_request(conn)
    view = memoryview(TEN_MB)  # slices of a preallocated buffer: the server allocates ~nothing
    if chunked:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(TEN_MB), 65536):
            conn.sendall(b"10000\r\n")
            conn.sendall(view[start : start + 65536])
            conn.sendall(b"\r\n")
        conn.sendall(b"0\r\n\r\n")
    else:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(TEN_MB))
        for start in range(0, len(TEN_MB), 65536):
            conn.sendall(view[start : start + 65536])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_it_reads_no_more_than_the_cap_of_a_10_mb_body(chunked):
    cap = 64 * 1024
    with raw_server(lambda conn: serve_big_body(conn, chunked)) as server:
        get(server.url)  # imports and lazy initialisation out of the measurement
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            result = get(server.url, max_bytes=cap, excerpt_bytes=1024)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    print(f"10 MB body, {cap} B cap ({'chunked' if chunked else 'content-length'}): peak {peak} B")
    assert result.status_code == 200
    assert result.body_excerpt == "x" * 1024
    # The cap plus a session's and its read buffers; reading the whole body would cost 10 MB.
    assert peak < cap + 512 * 1024


def test_it_caps_the_excerpt_and_keeps_it_storable():
    receiver = Receiver(body=b"\x00\xff" + "é".encode() * 1000).start()
    try:
        result = get(receiver.base_url, excerpt_bytes=1024)
    finally:
        receiver.stop()
    # The first 1,024 bytes: NUL and the invalid 0xff replaced, then 511 two-byte "é".
    assert result.body_excerpt == "\ufffd\ufffd" + "é" * 511


# --- Requests as sent -----------------------------------------------------------------------


def test_it_sends_the_request_target_verbatim_with_our_headers_and_its_own_host():
    receiver = Receiver(status=202, extra_headers={"Retry-After": "120"}).start()
    try:
        result = get(
            receiver.base_url + "/cb/a%2fb?id=x%20y&p=[1]&q=%7E",
            headers={"Roundtrip-Event-Id": "evt_1", "Host": "evil.example"},
        )
    finally:
        receiver.stop()
    request = receiver.requests[0]
    assert request.path == "/cb/a%2fb?id=x%20y&p=[1]&q=%7E"  # not re-encoded: signatures match
    assert request.headers["Roundtrip-Event-Id"] == "evt_1"
    assert request.headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert (result.status_code, result.retry_after, result.resolved_ip) == (202, "120", "127.0.0.1")
    assert result.duration_ms >= 0


def test_it_never_follows_a_redirect():
    target = Receiver().start()
    redirector = Receiver(status=302, extra_headers={"Location": target.base_url + "/x"}).start()
    try:
        result = get(redirector.base_url + "/cb")
    finally:
        redirector.stop()
        target.stop()
    assert result.status_code == 302
    assert target.requests == []


# --- Errors mid-stream, mapped to kinds -----------------------------------------------------


def test_it_maps_a_body_shorter_than_its_content_length_to_a_protocol_error():
    def handler(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b")

    with raw_server(handler) as server:
        error, _ = timed_error(server.url)
    assert error.kind == "protocol_error"
    assert not error.permanent


def test_it_maps_a_connection_reset_mid_body():
    def handler(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"z" * 100)
        time.sleep(0.1)
        # SO_LINGER 0: close() sends RST instead of FIN.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with raw_server(handler) as server:
        error, _ = timed_error(server.url)
    assert error.kind in {"protocol_error", "connection_error"}


def test_it_maps_an_answer_that_is_not_http():
    def handler(conn):
        read_request(conn)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    with raw_server(handler) as server:
        error, _ = timed_error(server.url)
    assert error.kind == "protocol_error"


def test_it_maps_a_refused_connection():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    error, _ = timed_error(f"http://127.0.0.1:{port}/")
    assert (error.kind, error.resolved_ip) == ("connection_error", "127.0.0.1")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiohttp.ConnectionTimeoutError("connect timed out"), "connect_timeout"),
        (aiohttp.SocketTimeoutError("read timed out"), "timeout"),
        (aiohttp.ServerDisconnectedError(), "protocol_error"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), "protocol_error"),
        (aiohttp.InvalidURL("http://[x/"), "invalid_url"),
        (ssl.SSLCertVerificationError("certificate verify failed"), "tls_error"),
        (ssl.SSLEOFError("EOF in violation of protocol"), "tls_error"),
        (TimeoutError("timed out"), "timeout"),
        (ConnectionResetError(104, "reset"), "connection_error"),
        (BrokenPipeError(32, "broken pipe"), "connection_error"),
        (ValueError("Invalid header value"), "protocol_error"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_it_maps_every_low_level_error_to_a_known_kind(exc, kind):
    error = delivery_error_from(exc, resolved_ip="203.0.113.7")
    assert error is not None
    assert (error.kind, error.resolved_ip) == (kind, "203.0.113.7")
    assert error.permanent is postbacks_http.ERROR_KINDS[kind]


def test_it_leaves_bugs_alone():
    assert delivery_error_from(TypeError("a bug of ours")) is None


# --- TLS with a pinned address --------------------------------------------------------------


class TLSServer:
    """HTTPS on 127.0.0.1 with a certificate for `cert_host`; records SNI and requests."""

    def __init__(self, ca: trustme.CA, cert_host: str):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(cert_host).configure_cert(self.context)
        self.server_names: list[str | None] = []
        self.requests: list[bytes] = []
        self.context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)

        def handler(conn: socket.socket) -> None:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.requests.append(read_request(tls))
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        self.raw = RawServer(handler)
        self.port = self.raw.sock.getsockname()[1]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def resolve_to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_it_keeps_sni_host_and_certificate_on_the_name_while_connecting_to_the_vetted_ip(
    ca, ca_file
):
    server = TLSServer(ca, "publisher.test")
    try:
        result = get(
            f"https://publisher.test:{server.port}/cb?id=1",
            ca_certs=ca_file,
            resolver=resolve_to_loopback,
        )
    finally:
        server.raw.stop()
    assert (result.status_code, result.resolved_ip) == (200, "127.0.0.1")
    assert server.server_names == ["publisher.test"]
    assert server.requests[0].startswith(b"GET /cb?id=1 HTTP/1.1\r\n")
    assert f"\r\nHost: publisher.test:{server.port}\r\n".encode() in server.requests[0]


def test_it_refuses_a_certificate_for_another_name(ca, ca_file):
    server = TLSServer(ca, "someone-else.test")
    try:
        error, _ = timed_error(
            f"https://publisher.test:{server.port}/cb",
            ca_certs=ca_file,
            resolver=resolve_to_loopback,
        )
    finally:
        server.raw.stop()
    assert (error.kind, error.permanent) == ("tls_error", False)
    assert server.requests == []


def test_it_refuses_a_certificate_from_an_unknown_authority(ca):
    server = TLSServer(ca, "publisher.test")
    try:
        # No ca_certs: the public (certifi) bundle, which doesn't know our test CA.
        error, _ = timed_error(
            f"https://publisher.test:{server.port}/cb", resolver=resolve_to_loopback
        )
    finally:
        server.raw.stop()
    assert error.kind == "tls_error"
    assert server.requests == []


def test_its_doctests_hold():
    assert doctest.testmod(postbacks_http).failed == 0
