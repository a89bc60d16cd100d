"""A real HTTP receiver on 127.0.0.1 for tests: records every request, answers as told."""

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str  # raw request target: path and query exactly as sent
    headers: dict[str, str]
    at: float
    method: str = "GET"
    body: bytes = b""  # a POST's body, the exact bytes received


@dataclass
class Receiver:
    """Start with `Receiver().start()`; set `status` (or `responder`) to change answers."""

    status: int = 200
    body: bytes = b"ok"
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    responder: object = None  # callable(handler) -> None, overrides status/body
    bind_port: int = 0  # 0: any free port; a fixed one brings a stopped receiver back
    _server: ThreadingHTTPServer | None = None
    _held: socket.socket | None = None  # the port of a stopped receiver, bound, not listening

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.answer(Received(self.path, dict(self.headers), time.time()))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                self.answer(Received(self.path, dict(self.headers), time.time(), "POST", body))

            def answer(self, received: Received) -> None:
                receiver.requests.append(received)
                if receiver.responder is not None:
                    receiver.responder(self)
                    return
                self.send_response(receiver.status)
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, *args) -> None:
                pass

        self.release()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.bind_port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self, *, hold: bool = True) -> None:
        """Stop answering. Its port stays bound, never listening (a connection is refused), so
        that no other server, of this test or of another xdist worker, takes the port and
        answers in its place; `start` on the same port or `release` frees it."""
        if self._server is None:
            return
        port = self.port
        self._server.shutdown()
        self._server.server_close()
        if hold and self._held is None:
            held = socket.socket()
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                held.bind(("127.0.0.1", port))
            except OSError:  # taken already: nothing to hold
                held.close()
            else:
                self._held = held

    def release(self) -> None:
        if self._held is not None:
            with contextlib.suppress(OSError):
                self._held.close()
            self._held = None
