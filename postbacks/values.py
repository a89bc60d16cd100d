"""What goes into each placeholder: a click's values (landing URLs), a conversion's (postbacks),
and how money is written in a URL. The names, help and samples are in placeholders.CATALOG."""

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


def click_values(
    click: "Click", *, publisher_public_id: str, campaign_public_id: str
) -> dict[str, object]:
    """What is known at click time (`LANDING_PLACEHOLDERS`): a landing URL's values, and the
    click's part of every postback's. The publisher's and campaign's public ids come from the
    caller, which has them loaded already (the click may not)."""
    return {
        "click_id": click.click_id,
        "spid": click.spid,
        "publisher_id": publisher_public_id,
        "campaign_id": campaign_public_id,
        "creative_id": click.creative.public_id if click.creative_id else "",
        "placement": click.placement,
        "smart_ad_id": click.smart_ad_id,
        "keyword": click.keyword,
        "country": click.country,
        "device": click.device,
    }


def hidden_values(publisher) -> dict[str, str]:
    """Placeholders emptied for this publisher: [revenue] shows the network's margin, so it is
    filled only for a publisher the network shares it with (`Publisher.share_revenue`)."""
    return {} if publisher.share_revenue else {"revenue": ""}


def placeholder_values(
    conversion: "Conversion", click: "Click", event_id: str, now: datetime
) -> dict[str, object]:
    """Every callback placeholder's value for one postback of `conversion`."""
    return {
        **click_values(
            click,
            publisher_public_id=click.publisher.public_id,
            campaign_public_id=conversion.campaign.public_id,
        ),
        "conversion_id": conversion.public_id,
        "event_id": event_id,
        "event": conversion.event,
        "status": conversion.status,
        "reason": conversion.reason,
        "payout": format_amount(conversion.payout),
        "currency": conversion.currency,
        "revenue": format_amount(conversion.revenue),
        "txn_id": conversion.txn_id,
        "campaign": conversion.campaign.name,
        "os": click.os,
        "browser": click.browser,
        "click_time": int(click.created_at.timestamp()),
        "conversion_time": int(conversion.created_at.timestamp()),
        "timestamp": int(now.timestamp()),
        **hidden_values(click.publisher),
    }
