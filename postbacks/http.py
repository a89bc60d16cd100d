"""The one module that speaks HTTP to publishers: the SSRF guard, the error table, the result
type and the capped read, over aiohttp. The batch sender (postbacks/dispatch/sender.py) sends
every postback through `fetch` on its pooled session (a GET, or a JSON webhook's POST); the
dashboard's and the API's "send a test postback" go through `send_now`, the same `fetch` on a
session of their own.

`vet_destination(url)` checks the URL's shape, resolves its host once and refuses the lot if
any address is not public (unless the operator allows private destinations). A session made by
`new_session` connects only to vetted addresses (`VettedResolver`: never a fresh DNS lookup),
while the Host header, TLS SNI and certificate checks keep the URL's own host name. No redirect
is followed; at most `max_bytes` of the body are read; everything (connect, TLS, request, status
line, headers and the capped body) ends within the total deadline. Any HTTP answer is a
`DeliveryResult`; no answer at all raises `DeliveryError` with a kind from ERROR_KINDS.

Why not `requests-hardened`: see docs/delivery.md ("Why our own guard").
"""

import asyncio
import dataclasses
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import certifi
from yarl import URL

# The session type, for the modules that hold one (they import no HTTP client themselves).
ClientSession = aiohttp.ClientSession

# Every kind of DeliveryError send_now raises, and whether it is permanent (retrying the same
# URL cannot help). retry.classify_error and the tests iterate over this table.
ERROR_KINDS: dict[str, bool] = {
    "forbidden_destination": True,  # the SSRF guard refused the URL or its addresses
    "invalid_url": True,  # not a URL we can send (no host, bad port, non-ASCII target, ...)
    # A JSON webhook whose callback was deleted, and with it the secret that signs it: never
    # sent unsigned. (Raised by the dispatcher before any request.)
    "no_secret": True,
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
    if "[" in parts.netloc and ":" not in parts.hostname:
        # "[v1.fe]" (an IPvFuture literal) parses; unbracketed it would name another host.
        raise _invalid("Only an IPv6 address may stand in brackets as the URL's host.")
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


def destination_host(url: str) -> str:
    """The unit of fairness for a URL: "name:port" as the dispatcher groups requests and the
    gate counts slots and breakers; "" for a URL we would refuse to send to anyway.

    >>> destination_host("https://Pub.Example/cb?id=1"), destination_host("ftp://x/")
    ('pub.example:443', '')
    """
    try:
        _, name, port, _ = parse_destination(url)
    except DeliveryError:
        return ""
    return f"{name}:{port}"


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


class VettedResolver(aiohttp.abc.AbstractResolver):
    """aiohttp asks this for addresses when it opens a connection: it only ever answers with
    addresses `vet_destination` approved for that host (never a fresh DNS lookup), so a name
    that re-resolves elsewhere after the check (DNS rebinding) can't redirect us.
    `pins` maps (host, port) to the vetted addresses; the owner of the session fills it."""

    def __init__(self, pins: dict[tuple[str, int], tuple[str, ...]]):
        self.pins = pins

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        addresses = self.pins.get((host, port))
        if not addresses:
            raise OSError(f"{host}:{port} was not vetted")
        results: list[aiohttp.abc.ResolveResult] = []
        for address in addresses:
            bare = address.split("%", 1)[0]
            results.append(
                {
                    "hostname": host,
                    "host": bare,
                    "port": port,
                    "family": socket.AF_INET6 if ":" in bare else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return results

    async def close(self) -> None:
        return None


def new_session(
    pins: dict[tuple[str, int], tuple[str, ...]], *, limit: int, ca_certs: str | None = None
) -> aiohttp.ClientSession:
    """A session whose connections only go to `pins` (see VettedResolver). `ca_certs` (a PEM
    file) replaces the certifi bundle; tests use it. Create it inside the loop that uses it."""
    context = ssl.create_default_context(cafile=ca_certs or certifi.where())
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,  # the gate (postbacks/fairness.py) caps hosts, across all workers
        resolver=VettedResolver(pins),
        use_dns_cache=False,  # every new connection asks VettedResolver
        ssl=context,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        trust_env=False,  # no proxies or .netrc from the environment
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


def request_url(scheme: str, host: str, port: int, target: str) -> URL:
    """The URL to ask for, byte for byte as parsed (and signed): `encoded=True` keeps aiohttp
    from re-quoting the path and query."""
    literal = f"[{host}]" if ":" in host else host
    netloc = literal if port == (443 if scheme == "https" else 80) else f"{literal}:{port}"
    return URL(f"{scheme}://{netloc}{target}", encoded=True)


async def fetch(
    session: aiohttp.ClientSession,
    url: URL,
    *,
    headers: Mapping[str, str],
    connect_timeout: float,
    total_timeout: float,
    max_bytes: int,
    excerpt_bytes: int,
    fallback_ip: str = "",
    method: str = "GET",
    body: bytes | None = None,
) -> DeliveryResult:
    """One GET (or a POST of `body`) on a vetted session: any HTTP status is a result; no
    answer raises DeliveryError. The answer's body is read up to `max_bytes`; the whole
    exchange ends within `total_timeout`. `fallback_ip` is reported when the connection can't
    tell its peer."""
    started = time.monotonic()
    peer_ip = None
    try:
        async with asyncio.timeout(total_timeout):
            async with session.request(
                method,
                url,
                data=body,
                # We want the body as the server has it: no compression offer.
                headers={
                    **{k: v for k, v in headers.items() if k.lower() != "host"},
                    "Accept-Encoding": "identity",
                },
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
            ) as response:
                peer_ip = _peer_ip(response)
                body = bytearray()
                while len(body) < max_bytes:
                    chunk = await response.content.read(min(64 * 1024, max_bytes - len(body)))
                    if not chunk:
                        break
                    body += chunk
                if len(body) >= max_bytes:
                    response.close()  # the rest stays unread: don't reuse the connection
                excerpt = bytes(body[:excerpt_bytes]).decode("utf-8", "replace")
                return DeliveryResult(
                    status_code=response.status,
                    duration_ms=int((time.monotonic() - started) * 1000),
                    body_excerpt=excerpt.replace("\x00", "\ufffd"),  # PostgreSQL text
                    resolved_ip=peer_ip or fallback_ip,
                    retry_after=response.headers.get("Retry-After"),
                )
    except Exception as exc:
        error = delivery_error_from(exc, resolved_ip=peer_ip or fallback_ip or None)
        if error is None:
            raise
        if error.kind == "timeout" and isinstance(exc, TimeoutError):
            error = DeliveryError(
                "timeout",
                f"No complete answer within {total_timeout:g}s.",
                resolved_ip=error.resolved_ip,
            )
        raise error from None


def _peer_ip(response: aiohttp.ClientResponse) -> str | None:
    """The address the answer came from. A short body may already be read, and its connection
    released, when the response is handed over: the protocol still knows its transport then."""
    protocol = response.connection.protocol if response.connection else response._protocol
    transport = protocol.transport if protocol is not None else None
    peer = transport.get_extra_info("peername") if transport is not None else None
    return peer[0] if peer else None


def delivery_error_from(
    exc: BaseException, *, resolved_ip: str | None = None
) -> DeliveryError | None:
    """aiohttp's, ssl's and the socket's exceptions as one DeliveryError kind (ERROR_KINDS);
    None for anything else (a bug of ours), which the caller re-raises.

    >>> delivery_error_from(aiohttp.ServerDisconnectedError()).kind
    'protocol_error'
    """
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


# First match wins: a connect timeout is also a timeout, a DNS error also a connector error,
# and ssl errors and timeouts are OSErrors.
_ERROR_MAP: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (aiohttp.ConnectionTimeoutError, "connect_timeout"),
    ((TimeoutError, aiohttp.ServerTimeoutError), "timeout"),
    ((aiohttp.ClientSSLError, ssl.SSLError, ssl.CertificateError), "tls_error"),
    (aiohttp.ClientConnectorDNSError, "dns_error"),
    ((aiohttp.ClientConnectorError, aiohttp.ClientOSError, OSError), "connection_error"),
    (aiohttp.InvalidURL, "invalid_url"),
    ((aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError), "protocol_error"),
    # Malformed header names or values are refused with ValueError.
    (ValueError, "protocol_error"),
)


def send_get(url: str, **options) -> DeliveryResult:
    """`send_now` of a GET."""
    return send_now(url, method="GET", **options)


def send_now(
    url: str,
    *,
    headers: Mapping[str, str],
    method: str = "GET",
    body: bytes | None = None,
    allow_private: bool,
    connect_timeout: float = 5.0,
    total_timeout: float = 15.0,
    max_bytes: int = 64 * 1024,
    excerpt_bytes: int = 1024,
    ca_certs: str | None = None,
    resolver: Resolver | None = None,
) -> DeliveryResult:
    """Send one request now (a GET, or a POST of `body`), from synchronous code (the "send a
    test postback" button): the guard, then `fetch` on a session of its own. Any HTTP status
    is a result; no answer at all raises DeliveryError. Everything, DNS included, ends within
    `total_timeout` seconds. `resolver(host, port)` replaces the system resolver."""
    started = time.monotonic()
    destination = vet_destination(
        url,
        allow_private=allow_private,
        timeout=min(connect_timeout, total_timeout),
        resolver=resolver,
    )
    pins = {(destination.host, destination.port): destination.addresses}
    target = request_url(destination.scheme, destination.host, destination.port, destination.target)

    async def once() -> DeliveryResult:
        async with new_session(pins, limit=1, ca_certs=ca_certs) as session:
            result = await fetch(
                session,
                target,
                headers=headers,
                connect_timeout=connect_timeout,
                total_timeout=max(total_timeout - (time.monotonic() - started), 0.001),
                max_bytes=max_bytes,
                excerpt_bytes=excerpt_bytes,
                fallback_ip=destination.addresses[0],
                method=method,
                body=body,
            )
        return dataclasses.replace(result, duration_ms=int((time.monotonic() - started) * 1000))

    return asyncio.run(once())
