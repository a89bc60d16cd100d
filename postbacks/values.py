"""What goes into each placeholder: a conversion's values, the samples a test postback (and the
dashboard's live preview) uses, and how money is written in a URL."""

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracking.models import Click, Conversion


def format_amount(value: Decimal | None) -> str:
    """Money for a URL: at least two decimals, no trailing zeros beyond them.

    >>> format_amount(Decimal("1.500000")), format_amount(Decimal("0.125")), format_amount(None)
    ('1.50', '0.125', '')
    """
    if value is None:
        return ""
    text = f"{value:f}"
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"{whole}.{frac}"


def placeholder_values(
    conversion: "Conversion", click: "Click", event_id: str, now: datetime
) -> dict:
    campaign = conversion.campaign
    return {
        "spid": click.spid,
        "click_id": click.click_id,
        "conversion_id": conversion.public_id,
        "event_id": event_id,
        "event": conversion.event,
        "status": conversion.status,
        "payout": format_amount(conversion.payout),
        "currency": conversion.currency,
        "revenue": format_amount(conversion.revenue),
        "txn_id": conversion.txn_id,
        "campaign_id": campaign.public_id,
        "campaign": campaign.name,
        "creative_id": click.creative.public_id if click.creative_id else "",
        "placement": click.placement,
        "smart_ad_id": click.smart_ad_id,
        "keyword": click.keyword,
        "country": click.country,
        "device": click.device,
        "os": click.os,
        "browser": click.browser,
        "click_time": int(click.created_at.timestamp()),
        "conversion_time": int(conversion.created_at.timestamp()),
        "timestamp": int(now.timestamp()),
        "publisher_id": click.publisher.public_id,
    }


# What a test postback (and the dashboard's live preview) puts in each placeholder.
SAMPLE_VALUES: dict[str, str] = {
    "spid": "123456789",
    "click_id": "01kb2x7c3s8q4n6p9r1t5v7w9y",
    "conversion_id": "cnv_01kb2x9d4f6h8j0k2m4n6p8q0r",
    "event_id": "evt_01kb2x9d4f6h8j0k2m4n6p8q0s",
    "event": "conversion",
    "status": "approved",
    "payout": "2.50",
    "currency": "USD",
    "revenue": "4.00",
    "txn_id": "order-1001",
    "campaign_id": "01kb2w3a5c7e9g1j3l5n7q9s1u",
    "campaign": "Summer Sale",
    "creative_id": "01kb2w4b6d8f0h2k4m6p8r0t2w",
    "placement": "sidebar",
    "smart_ad_id": "1491",
    "keyword": "running shoes",
    "country": "DE",
    "device": "mobile",
    "os": "Android",
    "browser": "Chrome",
    "click_time": "1767225600",
    "conversion_time": "1767229200",
    "timestamp": "1767229201",
    "publisher_id": "01kb2v1z3x5v7t9r1p3n5l7j9g",
}
