"""API keys: `<prefix>_<lookup>_<secret>`, shown once, stored as a SHA-256 digest.

The lookup part is stored in clear and indexed so authentication is one indexed query; the
digest is compared in constant time. Keys carry 192 random bits, so a fast hash is the right
tool (a slow password hash would only add latency: there is nothing to brute-force).

>>> key = generate_key("rt_adv")
>>> key.plaintext.startswith("rt_adv_") and verify_key(key.plaintext, key.digest)
True
"""

import hashlib
import hmac
import secrets
from typing import NamedTuple


class GeneratedKey(NamedTuple):
    plaintext: str
    lookup: str
    digest: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key(prefix: str) -> GeneratedKey:
    lookup = secrets.token_hex(6)
    plaintext = f"{prefix}_{lookup}_{secrets.token_urlsafe(24)}"
    return GeneratedKey(plaintext, lookup, hash_key(plaintext))


def parse_lookup(plaintext: str, prefix: str) -> str | None:
    """The lookup part of a well-formed key with this prefix, else None."""
    if not plaintext.startswith(prefix + "_"):
        return None
    parts = plaintext[len(prefix) + 1 :].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != 12:
        return None
    return parts[0]


def verify_key(plaintext: str, digest: str) -> bool:
    return hmac.compare_digest(hash_key(plaintext), digest)
