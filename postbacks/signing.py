"""Postback signatures: sign on our side, verify on the publisher's. Standard library only.

This module imports nothing from Django, so a publisher can copy it as is. Each postback carries:

    Roundtrip-Event-Id:  evt_...            (stable across retries: dedupe on it)
    Roundtrip-Timestamp: 1767225600          (unix seconds of this attempt)
    Roundtrip-Signature: v1=<base64>         (space-separated list during a secret rotation)

where `<base64>` is the standard base64 of HMAC-SHA256(secret, "<event_id>.<timestamp>.GET <path?query>").

>>> sig = sign("whsec_test", "evt_1", 1767225600, "/cb?id=42")
>>> sig
'v1=z7rDHtBrbvn3JQ3ieByTiSlyWOKX4f7lXHOe2nGt/LY='
>>> verify(["whsec_test"], "evt_1", "1767225600", sig, "/cb?id=42", now=1767225700)
True
>>> verify(["whsec_test"], "evt_1", "1767225600", sig, "/cb?id=43", now=1767225700)
False
"""

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable

VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


def signed_content(event_id: str, timestamp: int | str, path_qs: str, method: str = "GET") -> bytes:
    return f"{event_id}.{timestamp}.{method.upper()} {path_qs}".encode()


def sign(secret: str, event_id: str, timestamp: int, path_qs: str, method: str = "GET") -> str:
    """One `v1=<base64>` signature of a request to `path_qs` (path plus `?query`)."""
    mac = hmac.new(
        secret.encode(), signed_content(event_id, timestamp, path_qs, method), hashlib.sha256
    )
    return f"{VERSION}={base64.b64encode(mac.digest()).decode()}"


def signature_header(
    secrets: Iterable[str], event_id: str, timestamp: int, path_qs: str, method: str = "GET"
) -> str:
    """The header value: one signature per active secret (two during a rotation)."""
    return " ".join(sign(secret, event_id, timestamp, path_qs, method) for secret in secrets)


def verify(
    secrets: Iterable[str],
    event_id: str,
    timestamp: str,
    header: str,
    path_qs: str,
    *,
    method: str = "GET",
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when `header` holds a valid signature by any of `secrets`, made within `tolerance`."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        return False
    offered = header.split()
    for secret in secrets:
        expected = sign(secret, event_id, sent_at, path_qs, method)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return True
    return False
