"""Publisher API authentication and rate limiting: `Authorization: Bearer rt_pub_…`.

A request is authenticated as a `PublisherPrincipal` (the key's publisher and the key), which
DRF exposes as `request.user`; the tenant-scoping base view reads the publisher from it and from
nowhere else. Rate limits count per key, in the default cache (Redis in production, so every
web process shares one count).
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework import authentication, exceptions, throttling
from rest_framework.request import Request

from publishers.keys import parse_lookup, verify_key
from publishers.models import Publisher, PublisherAPIKey

logger = logging.getLogger(__name__)

# "Last used" to the minute is plenty, and saves a write on most requests.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class PublisherPrincipal:
    """Who is calling: a publisher, through one of its API keys."""

    publisher: Publisher
    key: PublisherAPIKey

    # DRF's permission classes ask these of request.user.
    is_authenticated = True
    is_anonymous = False


def publisher_key_lookup(plaintext: str) -> PublisherAPIKey | None:
    """The active key (with its active publisher) matching this plaintext, else None.

    One indexed query on the key's lookup part, then a constant-time digest comparison.
    """
    lookup = parse_lookup(plaintext, PublisherAPIKey.PREFIX)
    if lookup is None:
        return None
    key = (
        PublisherAPIKey.objects.select_related("publisher")
        .filter(lookup=lookup, revoked_at__isnull=True)
        .first()
    )
    if key is None or not verify_key(plaintext, key.digest):
        return None
    if key.publisher.status != Publisher.Status.ACTIVE:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        PublisherAPIKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


class PublisherKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <publisher API key>`; anything else is a 401."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[PublisherPrincipal, PublisherAPIKey] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if not header:
            return None
        if scheme.lower() != "bearer" or not credential.strip():
            raise exceptions.AuthenticationFailed(
                "Send your publisher API key as 'Authorization: Bearer <key>'."
            )
        key = publisher_key_lookup(credential.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown, revoked or malformed API key.")
        return PublisherPrincipal(key.publisher, key), key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) and tell the client which scheme to use.
        return f'{self.keyword} realm="api"'


class PublisherKeyRateThrottle(throttling.SimpleRateThrottle):
    """Requests per API key per period (`API_RATE_LIMIT`, e.g. "600/min").

    The rate is read from settings on every request (not once at import like DRF's default
    THROTTLE_RATES), so an operator's change and a test's override both apply.
    """

    scope = "publisher_key"

    def get_rate(self) -> str:
        return settings.API_RATE_LIMIT

    def allow_request(self, request: Request, view) -> bool:
        # Parsed per request for the reason above.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except RedisError:
            # The counter lives in Redis; when Redis is down, serve the request unthrottled
            # rather than fail it: a rate limit protects the service, it is not the service.
            logger.warning("API rate limiter unavailable (Redis); request not throttled")
            return True

    def get_cache_key(self, request: Request, view) -> str | None:
        principal = request.user
        if not isinstance(principal, PublisherPrincipal):
            return None  # unauthenticated requests were refused before throttling
        return self.cache_format % {"scope": self.scope, "ident": principal.key.lookup}
