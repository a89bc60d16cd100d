"""Reconciliation files: every conversion of a day, as JSON or CSV, signed by the publisher's
signing secret (`postbacks.signing.file_signature_header`, where the headers are described)."""

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

from postbacks.models import Postback
from postbacks.values import format_amount
from publishers.models import Publisher
from tracking.models import Conversion
from tracking.selectors import local_day_range

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
