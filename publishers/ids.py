"""Opaque, URL-safe, time-ordered public identifiers.

Ids are 128 bits: 48 bits of milliseconds since the epoch, then 80 random bits, written in
lowercase Crockford base32 (26 characters). Time order keeps B-tree inserts at the right edge of
the index (cheap on huge tables); 80 random bits make them unguessable and collision-free in
practice. Integers stay internal primary keys and never appear in URLs.

>>> len(new_id()), new_id("evt_").startswith("evt_")
(26, True)
"""

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str = "") -> str:
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))


def new_click_id() -> str:
    return new_id()


def new_event_id() -> str:
    return new_id("evt_")


def new_conversion_id() -> str:
    return new_id("cnv_")


def new_public_id() -> str:
    return new_id()
