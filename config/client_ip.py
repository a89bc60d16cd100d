"""The address a request came from, as every part of the site reads it: the click endpoint,
the admission throttle, the sign-in lockout (django-axes) and the audit log."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the nearest untrusted X-Forwarded-For hop when the peer is our proxy."""
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = settings.TRUSTED_PROXY_NETWORKS
    if not remote or not proxies:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    chain = [hop.strip() for hop in forwarded.split(",") if hop.strip()] + [remote]
    # Walk from the nearest hop outwards while the hop is one of our proxies.
    for hop in reversed(chain):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return remote
        if not any(address in network for network in proxies):
            return hop
    return chain[0]
