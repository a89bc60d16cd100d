"""The keyset cursor of the dashboard's logs (conversions, deliveries, activity): an opaque,
URL-safe token for a (time, id) position. Plain Python."""

import base64
import binascii
from datetime import UTC, datetime


def encode_cursor(moment: datetime, token: str) -> str:
    """An opaque keyset cursor for (time, id) ordering; `decode_cursor` reads it back."""
    raw = f"{moment.isoformat()}|{token}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, public_id = raw.split("|", 1)
        parsed = datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed, public_id
