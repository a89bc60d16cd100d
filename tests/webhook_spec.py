"""A Standard Webhooks verifier written from the specification for the tests, independent of
postbacks.signing: a delivered webhook is checked the way a publisher's library would check it,
so a bug shared by our signer and our own verifier can't pass unnoticed."""

import base64
import hashlib
import hmac


def spec_verify(secret: str, headers: dict[str, str], body: bytes, *, now: float) -> bool:
    """key = the Base64 after "whsec_"; signed content = "{id}.{timestamp}.{body}"; the
    header is a space-separated list of "v1,<base64 HMAC-SHA256>"; a timestamp more than five
    minutes away is refused. `headers` as received (any case)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered["webhook-id"]
    timestamp = lowered["webhook-timestamp"]
    if abs(now - int(timestamp)) > 300:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for entry in lowered["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False
