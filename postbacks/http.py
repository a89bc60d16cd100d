"""The only place that sends HTTP to publishers: SSRF guard, IP pinning, deadlines, bounded reads.

`send_get(url, headers=...)` checks the URL's shape, resolves its host once, refuses the lot if
any address is not public (unless the operator allows private destinations), then connects to
one of those vetted addresses itself. Everything above the socket — the Host header, TLS SNI and
certificate checking — still works with the URL's own host name, because only urllib3's
"open a socket" step is replaced (`_PinnedConnectionMixin._new_conn`). No redirect is followed;
at most `max_bytes` of the body are read. It returns a `DeliveryResult` for any HTTP answer
(whatever the status) and raises `DeliveryError` when no answer was had.

Why not `requests-hardened`: see docs/delivery.md ("Why our own guard").

The total deadline: a socket timeout bounds each `recv`, so a server that drips one byte per
second would never trip it. A watchdog timer therefore shuts the connection down when the
deadline passes, whatever phase it is in (TLS handshake, status line, headers, body). It acts on
a `dup()` of the socket, which stays valid even after TLS wrapping detaches the original object
and can never hit a recycled file descriptor. DNS runs in a helper thread for the same reason:
`getaddrinfo` has no timeout of its own.
"""

import contextlib
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from urllib.parse import urlsplit

import certifi
import urllib3.exceptions
from urllib3.connection import HTTPConnection, HTTPSConnection

# Every kind of DeliveryError send_get raises, and whether it is permanent (retrying the same
# URL cannot help). retry.classify_error and the tests iterate over this table.
ERROR_KINDS: dict[str, bool] = {
    "forbidden_destination": True,  # the SSRF guard refused the URL or its addresses
    "invalid_url": True,  # not a URL we can send (no host, bad port, non-ASCII target, ...)
    "dns_error": False,  # the name did not resolve (or not in time)
    "connect_timeout": False,
    "connection_error": False,  # refused, reset, unreachable
    "tls_error": False,  # handshake or certificate failure
    "timeout": False,  # the total deadline or a read timeout passed
    "protocol_error": False,  # not HTTP, a malformed answer, or a body cut short
}

Resolver = Callable[[str, int], Iterable[str]]

# Networks refused on top of what `ipaddress` reports as non-global: its tables differ between
# Python patch releases (3.12.1 calls 2002::/16 and 3fff::/20 global), and some ranges are
# "global" but reach somewhere we must not go (6to4 and NAT64 relays, multicast).
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "100.64.0.0/10",  # CGNAT shared address space
        "169.254.0.0/16",  # link-local, including the 169.254.169.254 metadata service
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255
        "::/96",  # unspecified, loopback and IPv4-compatible (::a.b.c.d)
        "::ffff:0:0/96",  # IPv4-mapped: a socket to it reaches the IPv4 address inside
        "::ffff:0:0:0/96",  # IPv4-translated
        "64:ff9b::/96",  # NAT64: reaches any IPv4 address through a translator
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, Teredo and ORCHID included
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: embeds an IPv4 address
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 segment identifiers
        "fc00::/7",  # unique local addresses
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, still routed privately)
        "ff00::/8",  # multicast
    )
)
# A host whose last label is a number is an IPv4 address to URL parsers and to inet_aton
# (`2130706433`, `0x7f.1`, `017700000001`, `127.1`); only the canonical dotted quad is accepted.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_CANONICAL_IPV4 = re.compile(
    r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$"
)
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
# What http.client would refuse or mangle in a request target; we refuse it up front, so the
# bytes on the wire are exactly the URL's (and its signature's) path and query.
_BAD_TARGET_CHARS = re.compile(r"[^\x21-\x7e]")


class DeliveryError(Exception):
    """No usable HTTP answer. `permanent` means retrying the same URL can't help.

    `permanent` defaults to what ERROR_KINDS says about `kind`.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        permanent: bool | None = None,
        resolved_ip: str | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.permanent = ERROR_KINDS.get(kind, False) if permanent is None else permanent
        self.resolved_ip = resolved_ip


@dataclass(frozen=True)
class DeliveryResult:
    status_code: int
    duration_ms: int
    body_excerpt: str
    resolved_ip: str
    retry_after: str | None = None


@dataclass(frozen=True)
class Destination:
    """A URL that passed the guard: where to connect and what to ask for."""

    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    target: str  # request target: path and ?query exactly as in the URL
    addresses: tuple[str, ...]  # vetted addresses, in resolver order


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses; IPv6 wrappers of IPv4 are refused.

    >>> [is_public_address(a) for a in ("93.184.216.34", "127.0.0.1", "::ffff:93.184.216.34", "100.64.0.1")]
    [True, False, False, False]
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return False
    return not any(ip in net for net in _BLOCKED_NETWORKS if net.version == ip.version)


def _refuse(message: str, *, resolved_ip: str | None = None) -> DeliveryError:
    return DeliveryError("forbidden_destination", message, resolved_ip=resolved_ip)


def _invalid(message: str) -> DeliveryError:
    return DeliveryError("invalid_url", message)


def _normalise_host(host: str) -> str:
    """The host as ASCII, checked label by label; odd numeric spellings refused."""
    if ":" in host:  # only IPv6 literals contain a colon once urlsplit has taken the port off
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _invalid(f"{host!r} is not a valid IPv6 address.") from None
        return host
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _invalid(f"{host!r} is not a valid host name.") from None
    labels = ascii_host.removesuffix(".").split(".")
    # A trailing dot makes a dotted quad a "name" that resolvers answer with the same address.
    canonical = _CANONICAL_IPV4.match(ascii_host) is not None
    if _NUMERIC_LABEL.match(labels[-1]) and not canonical:
        raise _refuse(f"Host {host!r} is not a plain IPv4 address (like 93.184.216.34); refused.")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise _invalid(f"{host!r} is not a valid host name.")
    return ascii_host


def parse_destination(url: str) -> tuple[str, str, int, str]:
    """Check a URL's shape. Returns (scheme, host, port, request target); no DNS.

    >>> parse_destination("https://Pub.Example/cb?id=1")
    ('https', 'pub.example', 443, '/cb?id=1')
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _invalid(f"The URL is not valid: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse("Only http:// and https:// URLs can receive postbacks.")
    if "@" in parts.netloc:
        raise _refuse("The URL can't contain a user name or password.")
    if not parts.hostname:
        raise _invalid("The URL has no host.")
    host = _normalise_host(parts.hostname)
    if port == 0:
        raise _invalid("Port 0 is not a valid port.")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if _BAD_TARGET_CHARS.search(target):
        raise _invalid(
            "The URL's path or query contains spaces, control or non-ASCII characters; "
            "percent-encode them."
        )
    return scheme, host, port or (443 if scheme == "https" else 80), target


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host:port (TCP), in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


def resolve(host: str, port: int, *, timeout: float, resolver: Resolver | None = None) -> list[str]:
    """Resolve once, within `timeout` seconds. IP literals are returned as they are."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    lookup = resolver or system_resolver
    answer: list[list[str] | BaseException] = []

    def run() -> None:
        try:
            answer.append(list(dict.fromkeys(str(a) for a in lookup(host, port))))
        except BaseException as exc:  # handed back to the caller below
            answer.append(exc)

    # getaddrinfo has no timeout (glibc may retry for 30 s); a daemon thread lets us give up.
    worker = threading.Thread(target=run, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(max(timeout, 0.0))
    if not answer:
        raise DeliveryError("dns_error", f"Resolving {host} took longer than {timeout:.1f}s.")
    result = answer[0]
    if isinstance(result, (OSError, UnicodeError)):
        raise DeliveryError("dns_error", f"Could not resolve {host}: {result}")
    if isinstance(result, BaseException):
        raise result
    if not result:
        raise DeliveryError("dns_error", f"{host} has no address.")
    return result


def vet_destination(
    url: str, *, allow_private: bool, timeout: float = 5.0, resolver: Resolver | None = None
) -> Destination:
    """Check a URL's shape and resolve its host once; refuse it if any address is not public."""
    scheme, host, port, target = parse_destination(url)
    addresses = resolve(host, port, timeout=timeout, resolver=resolver)
    if not allow_private:
        # One private answer taints the name: whoever controls its DNS could otherwise win with
        # the next lookup or the next address in the list (rebinding).
        blocked = [a for a in addresses if not is_public_address(a)]
        if blocked:
            raise _refuse(
                f"{host} resolves to a private or internal address ({blocked[0]}); "
                "postbacks only go to public addresses.",
                resolved_ip=blocked[0].split("%", 1)[0],
            )
    return Destination(scheme, host, port, target, tuple(addresses))


def check_destination_allowed(
    url: str, *, allow_private: bool, resolver: Resolver | None = None, timeout: float = 5.0
) -> None:
    """Raise DeliveryError if postbacks to `url` would be refused; for saving a template.

    `url` may be a callback template: placeholders only live in its path and query, which the
    check does not resolve. A name that does not resolve (yet) passes: every delivery checks
    again, and a typo is not a security problem.

    >>> check_destination_allowed("https://127.0.0.1/cb?id=[spid]", allow_private=False)
    Traceback (most recent call last):
    ...
    postbacks.http.DeliveryError: 127.0.0.1 resolves to a private or internal address (127.0.0.1); postbacks only go to public addresses.
    """
    if allow_private:
        parse_destination(url)
        return
    try:
        vet_destination(url, allow_private=False, timeout=timeout, resolver=resolver)
    except DeliveryError as exc:
        if exc.kind != "dns_error":
            raise


class _Deadline:
    """Shuts the watched sockets down once `seconds` have passed, waking any blocked read."""

    def __init__(self, seconds: float):
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._finished = False
        self.expired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self._at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._finished or self.expired:
                raise TimeoutError("deadline passed")
            # shutdown() through a duplicate acts on the shared kernel socket, so it works after
            # TLS wrapping detached `sock`, and this descriptor can't be reused while we hold it.
            self._watched.append(sock.dup())

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            for sock in self._watched:
                # OSError: the peer or we already closed it.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._finished = True
            for sock in self._watched:
                sock.close()
            self._watched.clear()


class _PinnedConnectionMixin:
    """Opens the socket to a vetted address instead of resolving `host` again."""

    port: int
    timeout: float
    socket_options: list | None

    def __init__(self, *args, destination: Destination, deadline: _Deadline, **kwargs):
        self._destination = destination
        self._deadline = deadline
        self.connected_ip: str | None = None
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        last_error: OSError | None = None
        for address in self._destination.addresses:
            remaining = self._deadline.remaining()
            if remaining <= 0:
                break
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(min(self.timeout, remaining))
                sock.connect((address, self.port))
                self._deadline.watch(sock)
            except OSError as exc:
                sock.close()
                last_error = exc
                self.connected_ip = address
                continue
            self.connected_ip = address
            return sock
        if last_error is None or isinstance(last_error, TimeoutError):
            raise DeliveryError(
                "connect_timeout",
                f"Connecting to {self._destination.host} timed out.",
                resolved_ip=self.connected_ip,
            )
        raise DeliveryError(
            "connection_error",
            f"Could not connect to {self._destination.host}: {last_error}",
            resolved_ip=self.connected_ip,
        )


class _PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
    pass


def _connection_for(
    destination: Destination, deadline: _Deadline, *, connect_timeout: float, ca_certs: str | None
) -> _PinnedHTTPConnection | _PinnedHTTPSConnection:
    if destination.scheme == "https":
        return _PinnedHTTPSConnection(
            destination.host,
            destination.port,
            timeout=connect_timeout,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_certs or certifi.where(),
            destination=destination,
            deadline=deadline,
        )
    return _PinnedHTTPConnection(
        destination.host,
        destination.port,
        timeout=connect_timeout,
        destination=destination,
        deadline=deadline,
    )


def send_get(
    url: str,
    *,
    headers: Mapping[str, str],
    allow_private: bool,
    connect_timeout: float = 5.0,
    total_timeout: float = 15.0,
    max_bytes: int = 64 * 1024,
    excerpt_bytes: int = 1024,
    ca_certs: str | None = None,
    resolver: Resolver | None = None,
) -> DeliveryResult:
    """Send one GET. Any HTTP status is a result; no answer at all raises DeliveryError.

    Everything — DNS, connect, TLS, request, status line, headers and the capped body — ends
    within `total_timeout` seconds. `ca_certs` (a PEM file) replaces the certifi bundle; tests
    use it. `resolver(host, port)` replaces the system resolver.
    """
    started = time.monotonic()
    destination = vet_destination(
        url,
        allow_private=allow_private,
        timeout=min(connect_timeout, total_timeout),
        resolver=resolver,
    )
    deadline = _Deadline(total_timeout - (time.monotonic() - started))
    try:
        connection = _connection_for(
            destination,
            deadline,
            connect_timeout=max(min(connect_timeout, deadline.remaining()), 0.001),
            ca_certs=ca_certs,
        )
    except BaseException:
        deadline.finish()
        raise
    stack = contextlib.ExitStack()
    try:
        connection.connect()
        # From here each recv waits at most what is left; the watchdog covers slow drips.
        connection.timeout = max(deadline.remaining(), 0.001)
        request_headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        connection.request(
            "GET",
            destination.target,
            headers=request_headers,
            preload_content=False,
            decode_content=False,
        )
        response = connection.getresponse()
        # The response owns a file over the socket: close it too, or the descriptor lives on
        # until garbage collection.
        stack.callback(response.close)
        body = bytearray()
        while len(body) < max_bytes:
            chunk = response.read(min(16 * 1024, max_bytes - len(body)), decode_content=False)
            if not chunk:
                break
            body += chunk
        if deadline.expired:
            # A close-delimited body cut by the watchdog looks like a normal end.
            raise TimeoutError("deadline passed")
        excerpt = bytes(body[:excerpt_bytes]).decode("utf-8", "replace")
        return DeliveryResult(
            status_code=response.status,
            duration_ms=int((time.monotonic() - started) * 1000),
            # PostgreSQL text can't hold NUL.
            body_excerpt=excerpt.replace("\x00", "\ufffd"),
            resolved_ip=connection.connected_ip or destination.addresses[0],
            retry_after=response.headers.get("Retry-After"),
        )
    except DeliveryError:
        raise
    except Exception as exc:
        error = delivery_error_from(
            exc,
            deadline_expired=deadline.expired,
            total_timeout=total_timeout,
            resolved_ip=connection.connected_ip,
        )
        if error is None:
            raise
        raise error from None
    finally:
        deadline.finish()
        stack.close()
        connection.close()


def delivery_error_from(
    exc: BaseException,
    *,
    deadline_expired: bool = False,
    total_timeout: float = 0.0,
    resolved_ip: str | None = None,
) -> DeliveryError | None:
    """Map what urllib3, http.client, ssl and the socket raise to one DeliveryError kind.

    Returns None for anything else (a bug of ours), which the caller re-raises.

    >>> delivery_error_from(urllib3.exceptions.ProtocolError("Connection broken")).kind
    'protocol_error'
    """
    if deadline_expired:
        # Whatever broke, it broke because the watchdog shut the connection down.
        return DeliveryError(
            "timeout", f"No complete answer within {total_timeout:g}s.", resolved_ip=resolved_ip
        )
    kind = None
    for types, candidate in _ERROR_MAP:
        if isinstance(exc, types):
            kind = candidate
            break
    if kind is None:
        return None
    text = str(exc) or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return DeliveryError(kind, text, resolved_ip=resolved_ip)


# First match wins: ssl errors and timeouts are OSErrors, urllib3's are its HTTPError.
_ERROR_MAP: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    # NewConnectionError subclasses ConnectTimeoutError for historical reasons.
    (urllib3.exceptions.NewConnectionError, "connection_error"),
    (urllib3.exceptions.ConnectTimeoutError, "connect_timeout"),
    ((TimeoutError, urllib3.exceptions.TimeoutError), "timeout"),
    ((ssl.SSLError, ssl.CertificateError, urllib3.exceptions.SSLError), "tls_error"),
    ((urllib3.exceptions.HTTPError, HTTPException), "protocol_error"),
    (OSError, "connection_error"),
    # http.client refuses malformed header names or values with ValueError.
    (ValueError, "protocol_error"),
)
