"""Every HMAC signature we make: GET postbacks, JSON webhooks (Standard Webhooks) and
reconciliation files. Sign on our side, verify on the publisher's. Standard library only.

This module imports nothing from Django, so a publisher can copy it as is. JSON webhooks are
described at "JSON webhooks" below. GET postbacks and files use the same signature, `v1=<base64 HMAC-SHA256(secret's UTF-8 bytes, message)>`, with one signature
per active secret, space-separated, during a rotation. Each postback carries:

    Roundtrip-Event-Id:  evt_...            (stable across retries: dedupe on it)
    Roundtrip-Timestamp: 1767225600          (unix seconds of this attempt)
    Roundtrip-Signature: v1=<base64>         (space-separated list during a secret rotation)

where `<base64>` is the standard base64 (with padding) of
HMAC-SHA256(key = the secret's UTF-8 bytes, message = "<event_id>.<timestamp>.GET <path?query>"),
and `<path?query>` is the request target exactly as it arrived (not decoded, not re-encoded).

>>> sig = sign("whsec_test", "evt_1", 1767225600, "/cb?id=42")
>>> sig
'v1=GZ+vc3IL1OAm9V3Y50iyjMJ7bvNa+8eJRL1gpjtdd58='
>>> verify(["whsec_test"], "evt_1", "1767225600", sig, "/cb?id=42", now=1767225700)
True
>>> verify(["whsec_test"], "evt_1", "1767225600", sig, "/cb?id=43", now=1767225700)
False
>>> verify(["whsec_test"], "evt_1", "1767225600", sig, "/cb?id=42", now=1767226000)
False

A reconciliation file carries `Roundtrip-Content-SHA256` (hex SHA-256 of the exact body),
`Roundtrip-Timestamp` (when it was made) and `Roundtrip-Signature`, whose message is
"<timestamp>.<date>.<sha256 hex>": the date is signed so a file can't be passed off as another
day's.

>>> body = b"conversion_id,spid\\r\\n"
>>> header = file_signature_header(["whsec_test"], 1767225600, "2026-01-01", content_sha256(body))
>>> verify_file(["whsec_test"], "1767225600", "2026-01-01", body, header)
True
>>> verify_file(["whsec_test"], "1767225600", "2026-01-02", body, header)
False
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
import time
from collections.abc import Iterable

VERSION = "v1"
# A signed request older (or newer) than this is refused: a captured request can't be replayed
# later. Clocks must agree within it.
DEFAULT_TOLERANCE_SECONDS = 300
# More entries than this in one header is not something we send; don't spend HMACs on it.
_MAX_SIGNATURES = 8
_TIMESTAMP = re.compile(r"^[0-9]{1,15}$")


def _signature(secret: str, message: bytes) -> str:
    mac = hmac.new(secret.encode(), message, hashlib.sha256)
    return f"{VERSION}={base64.b64encode(mac.digest()).decode()}"


def _header_matches(secrets: Iterable[str], message: bytes, header: str) -> bool:
    """True when `header` holds a signature of `message` by any of `secrets`. Entries of
    other versions are ignored."""
    offered = [
        entry.encode()
        for entry in (header or "").split()[:_MAX_SIGNATURES]
        if entry.startswith(f"{VERSION}=")
    ]
    found = False
    for secret in secrets:
        expected = _signature(secret, message).encode()
        for candidate in offered:
            # Constant-time, and no early exit, so timing says nothing about which matched.
            found |= hmac.compare_digest(expected, candidate)
    return found


# --- Postbacks -------------------------------------------------------------------------------


def signed_content(event_id: str, timestamp: int | str, path_qs: str, method: str = "GET") -> bytes:
    """The exact bytes that are signed."""
    return f"{event_id}.{timestamp}.{method.upper()} {path_qs}".encode()


def sign(
    secret: str, event_id: str, timestamp: int | str, path_qs: str, method: str = "GET"
) -> str:
    """One `v1=<base64>` signature of a request to `path_qs` (path plus `?query`)."""
    return _signature(secret, signed_content(event_id, timestamp, path_qs, method))


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
    """True when `header` holds a valid signature by any of `secrets`, made within `tolerance`.

    `event_id`, `timestamp` and `header` are the three Roundtrip-* header values as received;
    `path_qs` is the raw request target. Pass every secret you accept (old and new while you
    rotate). Unknown signature versions in the header are ignored.
    """
    timestamp = str(timestamp)
    if not event_id or not _TIMESTAMP.match(timestamp):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    return _header_matches(secrets, signed_content(event_id, timestamp, path_qs, method), header)


# --- JSON webhooks (Standard Webhooks) -------------------------------------------------------
#
# A callback template set to POST sends a JSON body signed as https://www.standardwebhooks.com
# says, so any Standard Webhooks library verifies it:
#
#     webhook-id:         evt_...            (the postback's event id: dedupe on it)
#     webhook-timestamp:  1767225600          (unix seconds of this attempt)
#     webhook-signature:  v1,<base64>         (space-separated list during a secret rotation)
#
# where `<base64>` is the standard base64 of HMAC-SHA256(key = base64-decoded secret after its
# `whsec_` prefix, message = "<webhook-id>.<webhook-timestamp>.<raw body>"). Each template has
# its own secret (`whsec_` + base64 of 24 random bytes), rotated with the same overlap as the
# publisher's signing secret. The same event id goes in `Roundtrip-Event-Id` too, so one
# dedupe serves GET and POST.

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_WEBHOOK_SECRET_BYTES = 24


def new_webhook_secret() -> str:
    """A fresh template secret: `whsec_` and the base64 of 24 random bytes (the spec asks for
    24 to 64)."""
    return (
        WEBHOOK_SECRET_PREFIX
        + base64.b64encode(_random.token_bytes(_WEBHOOK_SECRET_BYTES)).decode()
    )


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret: its base64 part, decoded.

    >>> webhook_key("whsec_AAEC")
    b'\\x00\\x01\\x02'
    """
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("A webhook secret is whsec_ followed by base64.") from None


def webhook_signed_content(webhook_id: str, timestamp: int | str, body: bytes) -> bytes:
    """The exact bytes that are signed: "<id>.<timestamp>.<body>"."""
    return f"{webhook_id}.{timestamp}.".encode() + body


def webhook_sign(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """One `v1,<base64>` signature of a webhook body."""
    content = webhook_signed_content(webhook_id, timestamp, body)
    mac = hmac.new(webhook_key(secret), content, hashlib.sha256)
    return f"{VERSION},{base64.b64encode(mac.digest()).decode()}"


def webhook_signature_header(
    secrets: Iterable[str], webhook_id: str, timestamp: int, body: bytes
) -> str:
    """The `webhook-signature` value: one signature per active secret (two while rotating)."""
    return " ".join(webhook_sign(secret, webhook_id, timestamp, body) for secret in secrets)


def webhook_verify(
    secrets: Iterable[str],
    webhook_id: str,
    timestamp: str,
    header: str,
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when `header` (webhook-signature) holds a valid signature of `body` by any of
    `secrets`, made within `tolerance` seconds. Never raises on malformed input.

    >>> secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    >>> body = b'{"test": 2432232314}'
    >>> header = webhook_signature_header([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    >>> header
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    >>> webhook_verify([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", header, body, now=1614265400)
    True
    >>> webhook_verify([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", header, body + b" ", now=1614265400)
    False
    """
    timestamp = str(timestamp)
    if not webhook_id or not _TIMESTAMP.match(timestamp):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    offered = [
        entry.encode()
        for entry in (header or "").split()[:_MAX_SIGNATURES]
        if entry.startswith(f"{VERSION},")
    ]
    found = False
    for secret in secrets:
        try:
            expected = webhook_sign(secret, webhook_id, timestamp, body).encode()
        except ValueError:
            continue
        for candidate in offered:
            found |= hmac.compare_digest(expected, candidate)
    return found


# --- Reconciliation files --------------------------------------------------------------------


def content_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def file_signature_header(secrets: Iterable[str], timestamp: int, day: str, sha256_hex: str) -> str:
    """The `Roundtrip-Signature` of a reconciliation file for `day` (YYYY-MM-DD)."""
    message = f"{timestamp}.{day}.{sha256_hex}".encode()
    return " ".join(_signature(secret, message) for secret in secrets)


def verify_file(secrets: Iterable[str], timestamp: str, day: str, body: bytes, header: str) -> bool:
    """True when `header` holds a valid signature of `body` for `day` by any of `secrets`.

    No time window, unlike a postback: a file is kept and checked later, and a replayed file
    proves nothing new (its date and content are what is signed).
    """
    timestamp = str(timestamp)
    if not _TIMESTAMP.match(timestamp):
        return False
    message = f"{timestamp}.{day}.{content_sha256(body)}".encode()
    return _header_matches(secrets, message, header)
