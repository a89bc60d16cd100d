"""Signed reconciliation files: every conversion of a day, as JSON or CSV, with a SHA-256 of
the exact bytes and an HMAC signature by the publisher's signing secret.

Headers sent with a file:

    Roundtrip-Content-SHA256: <hex SHA-256 of the body>
    Roundtrip-Timestamp:      <unix seconds when it was made>
    Roundtrip-Signature:      v1=<base64>   (space-separated list during a secret rotation)

where `<base64>` is the standard base64 of HMAC-SHA256(secret, "<timestamp>.<date>.<sha256 hex>").
The date is in the signed content so a file can't be passed off as another day's. The signing
functions use the standard library only, so a publisher can copy them.

>>> body = b"conversion_id,spid\\r\\n"
>>> digest = content_sha256(body)
>>> sig = sign("whsec_test", 1767225600, "2026-01-01", digest)
>>> verify(["whsec_test"], "1767225600", "2026-01-01", body, sig)
True
>>> verify(["whsec_test"], "1767225600", "2026-01-02", body, sig)
False
"""

import base64
import csv
import hashlib
import hmac
import io
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

from postbacks.models import Postback
from postbacks.values import format_amount
from publishers.models import Publisher
from tracking.models import Conversion
from tracking.selectors import local_day_range

VERSION = "v1"
COLUMNS = (
    "conversion_id",
    "click_id",
    "spid",
    "campaign_id",
    "event",
    "txn_id",
    "status",
    "payout",
    "currency",
    "created_at",
    "updated_at",
    "event_id",
    "postback_conversion_status",
    "delivery_status",
    "attempts",
    "last_status_code",
    "delivered_at",
)


def content_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def sign(secret: str, timestamp: int, day: str, sha256_hex: str) -> str:
    """One `v1=<base64>` signature of a file's digest."""
    message = f"{timestamp}.{day}.{sha256_hex}".encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256)
    return f"{VERSION}={base64.b64encode(mac.digest()).decode()}"


def signature_header(secrets: Iterable[str], timestamp: int, day: str, sha256_hex: str) -> str:
    return " ".join(sign(secret, timestamp, day, sha256_hex) for secret in secrets)


def verify(secrets: Iterable[str], timestamp: str, day: str, body: bytes, header: str) -> bool:
    """True when `header` holds a valid signature of `body` for `day` by any of `secrets`."""
    try:
        made_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    digest = content_sha256(body)
    offered = header.split()
    return any(
        hmac.compare_digest(sign(secret, made_at, day, digest), candidate)
        for secret in secrets
        for candidate in offered
    )


def reconciliation_rows(publisher: Publisher, day: date, tz: str) -> Iterator[dict]:
    """One row per postback of each conversion created on `day` in `tz` (one row with an
    empty event id for a conversion without postback), in a fixed order."""
    start, end = local_day_range(day, day, tz)
    conversions = (
        Conversion.objects.filter(publisher=publisher, created_at__gte=start, created_at__lt=end)
        .select_related("click", "campaign")
        .order_by("created_at", "pk")
    )
    postbacks: dict[int, list[Postback]] = {}
    for postback in Postback.objects.filter(
        publisher=publisher, conversion__in=conversions.values("pk")
    ).order_by("created_at", "pk"):
        postbacks.setdefault(postback.conversion_id, []).append(postback)
    for conversion in conversions.iterator(chunk_size=2000):
        base = {
            "conversion_id": conversion.public_id,
            "click_id": conversion.click.click_id,
            "spid": conversion.click.spid,
            "campaign_id": conversion.campaign.public_id,
            "event": conversion.event,
            "txn_id": conversion.txn_id,
            "status": conversion.status,
            "payout": format_amount(conversion.payout),
            "currency": conversion.currency,
            "created_at": _instant(conversion.created_at),
            "updated_at": _instant(conversion.updated_at),
        }
        for postback in postbacks.get(conversion.pk) or [None]:
            yield {
                **base,
                "event_id": postback.event_id if postback else "",
                "postback_conversion_status": postback.conversion_status if postback else "",
                "delivery_status": postback.status if postback else "none",
                "attempts": postback.attempts if postback else 0,
                "last_status_code": postback.last_status_code if postback else None,
                "delivered_at": _instant(postback.delivered_at) if postback else None,
            }


def _instant(moment: datetime | None) -> str | None:
    """UTC, microseconds, "Z": one spelling, so both sides hash the same text."""
    if moment is None:
        return None
    return moment.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def render_csv(rows: Iterable[dict]) -> bytes:
    """RFC 4180 CSV (CRLF line ends), header first. Values are exact, never rewritten: spid
    comes from visitors, so open the file in a spreadsheet only with formulas disabled."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().encode()
