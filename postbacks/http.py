"""The only place that sends HTTP to publishers: SSRF guard, IP pinning, timeouts, bounded reads.

`send_get(url, headers=...)` resolves the host once, refuses non-public addresses (unless the
operator allows private destinations), connects to the vetted address while keeping the Host
header and TLS SNI/certificate check on the original name, never follows redirects, and reads at
most `max_bytes` of the body. It returns a `DeliveryResult` for any HTTP answer (whatever the
status) and raises `DeliveryError` when no answer was had.
"""

import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

_CANONICAL_IPV4 = re.compile(
    r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$"
)
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


class DeliveryError(Exception):
    """No usable HTTP answer. `permanent` means retrying the same URL can't help."""

    def __init__(
        self, kind: str, message: str, *, permanent: bool = False, resolved_ip: str | None = None
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.permanent = permanent
        self.resolved_ip = resolved_ip


@dataclass(frozen=True)
class DeliveryResult:
    status_code: int
    duration_ms: int
    body_excerpt: str
    resolved_ip: str
    retry_after: str | None = None


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses, looking inside IPv6 wrappers.

    >>> [is_public_address(a) for a in ("93.184.216.34", "127.0.0.1", "::ffff:10.0.0.1", "100.64.0.1")]
    [True, False, False, False]
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(str(ip.ipv4_mapped))
        if ip in _NAT64 or ip in _NAT64_LOCAL:
            return False  # a translator could reach anything IPv4 behind it
        if ip in _SIX_TO_FOUR:
            return False
        if ip.teredo is not None:
            return False
        if int(ip) >> 32 == 0:
            return False  # IPv4-compatible (::a.b.c.d), deprecated and ambiguous
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def check_host_literal(host: str) -> None:
    """Refuse numeric host spellings other than canonical dotted quads (`2130706433`, `0x7f.1`)."""
    if _NUMERIC_HOST.match(host) and not _CANONICAL_IPV4.match(host):
        raise DeliveryError(
            "forbidden_destination", f"Host {host!r} is not a valid address.", permanent=True
        )


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DeliveryError("dns_error", f"Could not resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise DeliveryError("dns_error", f"{host} has no address.")
    return addresses


def vet_destination(url: str, *, allow_private: bool) -> tuple[str, str, int]:
    """Check a URL's shape and resolve its host once. Returns (host, vetted address, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DeliveryError("forbidden_destination", "Only http and https URLs.", permanent=True)
    if parts.username is not None or parts.password is not None:
        raise DeliveryError(
            "forbidden_destination", "URLs can't carry credentials.", permanent=True
        )
    host = parts.hostname
    if not host:
        raise DeliveryError("forbidden_destination", "The URL has no host.", permanent=True)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DeliveryError("forbidden_destination", "Invalid port.", permanent=True) from None
    check_host_literal(host)
    addresses = resolve(host, port)
    if not allow_private:
        # Any private answer taints the name: an attacker controlling DNS could otherwise
        # win with the next lookup (rebinding).
        blocked = [a for a in addresses if not is_public_address(a)]
        if blocked:
            raise DeliveryError(
                "forbidden_destination",
                f"{host} resolves to a non-public address ({blocked[0]}); refused.",
                permanent=True,
                resolved_ip=blocked[0],
            )
    return host, addresses[0], port


class _PinnedAdapter(HTTPAdapter):
    """Connects wherever the URL says (the vetted IP) but checks TLS against `server_hostname`."""

    def __init__(self, server_hostname: str):
        self._server_hostname = server_hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):  # type: ignore[override]
        pool_kwargs["server_hostname"] = self._server_hostname
        pool_kwargs["assert_hostname"] = self._server_hostname
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)


def _pinned_url(url: str, address: str, port: int) -> tuple[str, str]:
    """The URL with its host replaced by `address`, and the Host header to send."""
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    default_port = 443 if parts.scheme == "https" else 80
    netloc = literal if port == default_port else f"{literal}:{port}"
    host_header = parts.hostname or ""
    if ":" in host_header:
        host_header = f"[{host_header}]"
    if parts.port:
        host_header = f"{host_header}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host_header


def send_get(
    url: str,
    *,
    headers: dict[str, str],
    allow_private: bool,
    connect_timeout: float = 5.0,
    total_timeout: float = 15.0,
    max_bytes: int = 64 * 1024,
    excerpt_bytes: int = 1024,
) -> DeliveryResult:
    """Send one GET. Any HTTP status is a result; no answer at all raises DeliveryError."""
    started = time.monotonic()
    host, address, port = vet_destination(url, allow_private=allow_private)
    target, host_header = _pinned_url(url, address, port)
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc from the environment
    session.mount("https://", _PinnedAdapter(host))
    session.mount("http://", HTTPAdapter(max_retries=0))
    remaining = max(0.1, total_timeout - (time.monotonic() - started))
    try:
        with session.get(
            target,
            headers={**headers, "Host": host_header},
            allow_redirects=False,
            stream=True,
            timeout=(min(connect_timeout, remaining), remaining),
            verify=True,
        ) as response:
            body = bytearray()
            for chunk in response.raw.stream(8192, decode_content=False):
                body += chunk
                if len(body) >= max_bytes:
                    break
                if time.monotonic() - started > total_timeout:
                    raise DeliveryError(
                        "timeout",
                        f"The response took longer than {total_timeout:g}s.",
                        resolved_ip=address,
                    )
            return DeliveryResult(
                status_code=response.status_code,
                duration_ms=int((time.monotonic() - started) * 1000),
                body_excerpt=bytes(body[:excerpt_bytes]).decode("utf-8", "replace"),
                resolved_ip=address,
                retry_after=response.headers.get("Retry-After"),
            )
    except requests.exceptions.ConnectTimeout:
        raise DeliveryError(
            "connect_timeout", "Connection timed out.", resolved_ip=address
        ) from None
    except (TimeoutError, requests.exceptions.ReadTimeout):
        raise DeliveryError("timeout", "The response timed out.", resolved_ip=address) from None
    except requests.exceptions.SSLError as exc:
        raise DeliveryError("tls_error", f"TLS error: {exc}", resolved_ip=address) from None
    except requests.exceptions.ConnectionError as exc:
        raise DeliveryError(
            "connection_error", f"Connection failed: {_short(exc)}", resolved_ip=address
        ) from None
    except requests.exceptions.RequestException as exc:
        raise DeliveryError(
            "http_error", f"HTTP error: {_short(exc)}", resolved_ip=address
        ) from None
    finally:
        session.close()


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."
