"""Per-caller concurrency limits: one caller gets its share of a web pool, never the whole pool.

A request to the conversion intake (`POST /api/v1/conversions`, `GET /postback`), the publisher
API (the rest of `/api/`) or the dashboard (`/dashboard/`) takes a slot in its caller's
semaphore before anything else runs, and gives it back when its response is ready. The caller
is a hash of the credential it presents (the advertiser key or postback token, the publisher
key, the session cookie), or its address when it presents none; so the check needs no
database. A caller whose slots are all taken is answered `429` with `Retry-After` at once, and
the refusal is counted in `/metrics` (`roundtrip_requests_limited_total`).

How many requests per second a publisher key may make is a different limit, with its own home
(`PublisherKeyRateThrottle`, publishers/authentication.py): this one bounds how much of the pool
a caller holds at one moment, which is what a burst of slow requests takes from everyone else.

The semaphores live in Redis (shared by every web process and node), as sorted sets of
(slot token, taken-at time). A slot older than `ADMISSION_SLOT_SECONDS` no longer counts, so a
process that died holding slots does not keep its caller out for longer than that. When Redis is
unreachable, requests pass unlimited (a limit protects the service; it is not the service);
without `REDIS_URL` (local mode) there is no limit at all.

The click redirect, `/smart`, health probes and `/metrics` are never limited here: their pool is
protected by running on its own workers (docs/deploy.md).
"""

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import Counter
from redis.exceptions import RedisError

from config.api import error_body
from config.client_ip import client_ip
from config.redis import get_redis

logger = logging.getLogger(__name__)

LIMITED = Counter(
    "roundtrip_requests_limited",
    "Requests refused with 429 because their caller already had all its concurrent slots, "
    "by kind (intake, api, portal) and by what identified the caller (key, address, session).",
    ["kind", "caller"],
)

# Atomic take: drop expired slots, refuse when full, else add ours. One round trip.
_ACQUIRE = """
local key, now, ttl, limit, token = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
    tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - ttl)
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, now, token)
redis.call('EXPIRE', key, math.ceil(ttl))
return 1
"""


@dataclass(frozen=True)
class Caller:
    kind: str  # intake, api, portal
    by: str  # key, address, session
    ident: str  # hash of the credential, or the address
    limit: int


def _digest(secret: str) -> str:
    # The credential itself never reaches Redis; a hash identifies it as well.
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def _bearer(request: HttpRequest) -> str:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


def caller_for(request: HttpRequest) -> Caller | None:
    """Which limit this request counts against, or None when it is not limited."""
    path, method = request.path, request.method
    if (path.rstrip("/") == "/api/v1/conversions" and method not in ("GET", "HEAD")) or (
        path == "/postback"
    ):
        kind = "intake"
        credential = request.GET.get("token", "") if path == "/postback" else _bearer(request)
        per_key, per_address = (
            settings.INTAKE_CONCURRENCY_PER_KEY,
            settings.INTAKE_CONCURRENCY_PER_ADDRESS,
        )
    elif path.startswith("/api/"):
        kind = "api"
        credential = _bearer(request)
        per_key, per_address = (
            settings.API_CONCURRENCY_PER_KEY,
            settings.API_CONCURRENCY_PER_ADDRESS,
        )
    elif path.startswith("/dashboard/"):
        kind = "portal"
        credential = request.COOKIES.get(settings.SESSION_COOKIE_NAME, "")
        per_key, per_address = (
            settings.PORTAL_CONCURRENCY_PER_SESSION,
            settings.PORTAL_CONCURRENCY_PER_ADDRESS,
        )
    else:
        return None
    if credential:
        by = "session" if kind == "portal" else "key"
        return Caller(kind, by, _digest(credential), per_key)
    return Caller(kind, "address", client_ip(request) or "unknown", per_address)


def acquire(caller: Caller) -> tuple[str, str] | bool | None:
    """Take a slot: (redis key, token) to release, False when the caller is full, None when
    there is no limit to apply (no Redis, or Redis unreachable: fail open)."""
    client = get_redis()
    if client is None or caller.limit <= 0:
        return None
    key = f"roundtrip:admission:{caller.kind}:{caller.by}:{caller.ident}"
    token = secrets.token_hex(8)
    ttl = settings.ADMISSION_SLOT_SECONDS
    try:
        taken = client.eval(_ACQUIRE, 1, key, time.time(), ttl, caller.limit, token)
    except RedisError:
        logger.warning("admission limiter unavailable (Redis); request not limited")
        return None
    return (key, token) if taken else False


def release(slot: tuple[str, str]) -> None:
    client = get_redis()
    if client is None:
        return
    try:
        client.zrem(*slot)
    except RedisError:
        # The slot expires by itself after ADMISSION_SLOT_SECONDS.
        logger.warning("admission limiter unavailable (Redis); slot left to expire")


def refusal(caller: Caller) -> HttpResponse:
    retry_after = str(settings.ADMISSION_RETRY_AFTER)
    message = (
        f"Too many concurrent requests for this {'advertiser key' if caller.kind == 'intake' else caller.by}"
        if caller.by != "address"
        else "Too many concurrent requests from this address"
    ) + f" (at most {caller.limit} at a time). Retry after {retry_after} s."
    if caller.kind == "portal":
        response = HttpResponse(message + "\n", status=429, content_type="text/plain")
    else:
        response = JsonResponse(error_body("rate_limited", message), status=429)
    response["Retry-After"] = retry_after
    return response


class AdmissionMiddleware:
    """First in MIDDLEWARE after SecurityMiddleware: refuses before sessions, database or view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        caller = caller_for(request)
        if caller is None:
            return self.get_response(request)
        slot = acquire(caller)
        if slot is False:
            LIMITED.labels(kind=caller.kind, caller=caller.by).inc()
            return refusal(caller)
        try:
            return self.get_response(request)
        finally:
            if slot:
                release(slot)
