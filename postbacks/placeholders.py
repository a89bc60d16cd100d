"""Placeholder expansion for callback and landing-page URL templates, and the same values as a
JSON webhook's body (`webhook_body`). Pure: no ORM, no settings.

A template is an absolute http(s) URL with `[name]` placeholders (or the `{name}` alias) in its
path and query. Expansion is single-pass: every value is percent-encoded for the component it
lands in and is never scanned again, so a spid such as `[payout]` or `a/b?c#d` arrives literally
and cannot change the URL's host, path shape or query structure.

>>> expand_placeholders("https://pub.example/cb?id=[spid]&p=[payout]", {"spid": "a b&[payout]", "payout": "1.50"})
'https://pub.example/cb?id=a%20b%26%5Bpayout%5D&p=1.50'
>>> expand_placeholders("https://pub.example/[spid]/?yourparam=x", {"spid": "x/y"})
'https://pub.example/x%2Fy/?yourparam=x'
"""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

MAX_TEMPLATE_LENGTH = 2048
MAX_EXPANDED_LENGTH = 8192


@dataclass(frozen=True)
class Placeholder:
    name: str
    help: str  # the dashboard's placeholder reference
    sample: str  # what a test postback and the live preview put in
    # Known at click time, so an advertiser's landing URL may use it too.
    at_click: bool = False
    # Its type in a JSON webhook's `data` (json_fields): "string" (always a string, "" when
    # unknown), "integer" (Unix seconds) or "decimal" (money as a string such as "2.50", or
    # null when unknown or not shared). Documented in docs/delivery.md.
    json_type: str = "string"


# Every placeholder, in the order the dashboard lists them: the one catalog. Documented with
# examples in docs/api.md.
CATALOG: tuple[Placeholder, ...] = (
    Placeholder(
        "spid",
        "Your identifier from the ad link (up to 255 characters), exactly as you sent it",
        "123456789",
        at_click=True,
    ),
    Placeholder("click_id", "Our id of the click", "01kb2x7c3s8q4n6p9r1t5v7w9y", at_click=True),
    Placeholder("conversion_id", "Our id of the conversion", "cnv_01kb2x9d4f6h8j0k2m4n6p8q0r"),
    Placeholder(
        "event_id",
        "Stable id of this postback: the same on every retry, so drop duplicates",
        "evt_01kb2x9d4f6h8j0k2m4n6p8q0s",
    ),
    Placeholder("event", "The advertiser's event name (conversion, sale, lead, …)", "conversion"),
    Placeholder("status", "The conversion's status: approved, pending, rejected, …", "approved"),
    Placeholder(
        "reason",
        "Why a guard or a campaign rule decided (too_fast, bot_click, bot_flagged, "
        "bot_rejected, cap_reached); empty when none did",
        "",
    ),
    Placeholder("payout", "Your payout for this conversion", "2.50", json_type="decimal"),
    Placeholder("currency", "Three-letter currency of the payout", "USD"),
    Placeholder(
        "revenue", "The advertiser's reported revenue, when shared", "4.00", json_type="decimal"
    ),
    Placeholder("txn_id", "The advertiser's transaction id", "order-1001"),
    Placeholder("campaign_id", "Campaign id", "01kb2w3a5c7e9g1j3l5n7q9s1u", at_click=True),
    Placeholder("campaign", "Campaign name", "Summer Sale"),
    Placeholder(
        "creative_id",
        "Creative id (empty if the link named none)",
        "01kb2w4b6d8f0h2k4m6p8r0t2w",
        at_click=True,
    ),
    Placeholder("placement", "Placement of the click", "sidebar", at_click=True),
    Placeholder("smart_ad_id", "Smart ad that was clicked", "1491", at_click=True),
    Placeholder("keyword", "Keyword (q) of the smart ad", "running shoes", at_click=True),
    Placeholder("country", "Two-letter country of the click", "DE", at_click=True),
    Placeholder("device", "Device type: desktop, mobile or tablet", "mobile", at_click=True),
    Placeholder("os", "Operating system", "Android"),
    Placeholder("browser", "Browser", "Chrome"),
    Placeholder("click_time", "Unix time of the click", "1767225600", json_type="integer"),
    Placeholder(
        "conversion_time", "Unix time of the conversion", "1767229200", json_type="integer"
    ),
    Placeholder("timestamp", "Unix time of this attempt", "1767229201", json_type="integer"),
    Placeholder("publisher_id", "Your publisher id", "01kb2v1z3x5v7t9r1p3n5l7j9g", at_click=True),
)

# What a callback template may use.
CALLBACK_PLACEHOLDERS = frozenset(p.name for p in CATALOG)
# What an advertiser's landing URL may use: only what is known at click time.
LANDING_PLACEHOLDERS = frozenset(p.name for p in CATALOG if p.at_click)
# What a test postback (and the dashboard's live preview) puts in each placeholder.
SAMPLE_VALUES: dict[str, str] = {p.name: p.sample for p in CATALOG}

# Every field of a JSON webhook's `data` and its type, in catalog order.
JSON_TYPES: dict[str, str] = {p.name: p.json_type for p in CATALOG}

# Spellings other trackers use, accepted so publishers can paste their existing templates.
ALIASES = {
    "subid": "spid",
    "sub_id": "spid",
    "clickid": "click_id",
    "transaction_id": "txn_id",
    "transactionid": "txn_id",
    "eventid": "event_id",
    "amount": "payout",
    "creativeid": "creative_id",
    "campaignid": "campaign_id",
    "geo": "country",
}


def placeholder_reference() -> list[dict]:
    """The catalog as the dashboard shows it: name, help, example and the aliases of each."""
    aliases: dict[str, list[str]] = {}
    for alias, name in ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    return [
        {
            "name": p.name,
            "help": p.help,
            "example": p.sample,
            "aliases": sorted(aliases.get(p.name, [])),
        }
        for p in CATALOG
    ]


_PLACEHOLDER = re.compile(r"\[([A-Za-z][A-Za-z0-9_]*)\]|\{([A-Za-z][A-Za-z0-9_]*)\}")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f]")


class TemplateError(ValueError):
    """The template can't be used; the message says why, for a form or API error."""


def canonical_name(raw: str) -> str:
    name = raw.lower()
    return ALIASES.get(name, name)


def placeholders_in(text: str) -> list[str]:
    """Canonical names of the placeholders in `text`, in order of appearance."""
    return [canonical_name(m.group(1) or m.group(2)) for m in _PLACEHOLDER.finditer(text)]


def validate_template(template: str, allowed: Iterable[str] = CALLBACK_PLACEHOLDERS) -> None:
    """Raise TemplateError unless `template` is a usable URL template.

    >>> validate_template("https://[spid].example/cb")
    Traceback (most recent call last):
    ...
    postbacks.placeholders.TemplateError: The host can't contain placeholders; put [spid] in the path or query.
    """
    allowed = frozenset(allowed)
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(f"The URL is longer than {MAX_TEMPLATE_LENGTH} characters.")
    if _FORBIDDEN_CHARS.search(template):
        raise TemplateError("The URL contains spaces or control characters; percent-encode them.")
    scheme, sep, rest = template.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise TemplateError("The URL must start with http:// or https://.")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    names = placeholders_in(authority)
    # "[" alone is fine: it brackets an IPv6 literal (https://[2001:db8::1]/cb).
    if names or "{" in authority:
        shown = f"[{names[0]}]" if names else "placeholders"
        raise TemplateError(
            f"The host can't contain placeholders; put {shown} in the path or query."
        )
    if "@" in authority:
        raise TemplateError("The URL can't contain a user name or password.")
    try:
        parts = urlsplit(template)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise TemplateError(f"The URL is not valid: {exc}.") from None
    if not parts.hostname:
        raise TemplateError("The URL has no host.")
    if parts.fragment or template.endswith("#"):
        raise TemplateError(
            "The URL can't have a #fragment: browsers keep it, servers never see it."
        )
    unknown = [name for name in placeholders_in(template) if name not in allowed]
    if unknown:
        listed = ", ".join(f"[{name}]" for name in dict.fromkeys(unknown))
        raise TemplateError(f"Unknown placeholder {listed}. Known: {', '.join(sorted(allowed))}.")


def _substitute(component: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        value = values.get(canonical_name(match.group(1) or match.group(2)))
        # safe="" encodes "/", "?", "&", "=", "#" and "%" too: a value is always one opaque
        # path segment or one query value, never structure.
        return quote(str(value), safe="") if value is not None else ""

    return _PLACEHOLDER.sub(replace, component)


def _substitute_path(path: str, values: Mapping[str, str]) -> str:
    # A segment that expands to "." or ".." is a dot-segment: HTTP clients and servers remove it
    # (RFC 3986 §5.2.4), changing the path and losing the value. Its dots are sent as %2E.
    # Segment by segment is the same as the whole path, as an encoded value never holds "/".
    segments = []
    for segment in path.split("/"):
        expanded = _substitute(segment, values)
        if expanded in (".", "..") and expanded != segment:
            expanded = expanded.replace(".", "%2E")
        segments.append(expanded)
    return "/".join(segments)


def expand_placeholders(template: str, values: Mapping[str, object]) -> str:
    """Expand `template` with `values` (missing ones become empty), in a single pass.

    The template must already have passed `validate_template`.
    """
    text_values = {key: "" if value is None else str(value) for key, value in values.items()}
    head, sep, query = template.partition("?")
    scheme, _, rest = head.partition("://")
    authority, slash, path = rest.partition("/")
    expanded = f"{scheme}://{authority}{slash}{_substitute_path(path, text_values)}"
    if sep:
        expanded += "?" + _substitute(query, text_values)
    if len(expanded) > MAX_EXPANDED_LENGTH:
        raise TemplateError(f"The expanded URL is longer than {MAX_EXPANDED_LENGTH} characters.")
    return expanded


# --- JSON webhooks ---------------------------------------------------------------------------

_INTEGER = re.compile(r"^-?[0-9]{1,18}$")


def json_fields(values: Mapping[str, object]) -> dict[str, object]:
    """The catalog as a JSON webhook's `data`: every placeholder, in catalog order, with the
    value a URL would get, typed by its `json_type` (an empty decimal is null).

    >>> fields = json_fields({"spid": "a b", "payout": "2.50", "revenue": "", "click_time": 17})
    >>> fields["spid"], fields["payout"], fields["revenue"], fields["click_time"], fields["txn_id"]
    ('a b', '2.50', None, 17, '')
    """
    data: dict[str, object] = {}
    for placeholder in CATALOG:
        value = values.get(placeholder.name)
        text = "" if value is None else str(value)
        if placeholder.json_type == "integer":
            # Never null in a delivery; only a test postback's sample value can be no number.
            data[placeholder.name] = int(text) if _INTEGER.match(text) else None
        elif placeholder.json_type == "decimal":
            data[placeholder.name] = text or None
        else:
            data[placeholder.name] = text
    return data


def webhook_body(values: Mapping[str, object], *, status: str, occurred_at: datetime) -> str:
    """A JSON webhook's body, as the Standard Webhooks payload shape recommends: the event type
    (`conversion.<status>`), when it happened (ISO 8601, UTC) and `data` (json_fields).
    Compact and ASCII-only (other characters as \\u escapes), so its bytes never depend on an
    encoding. Built once when the postback is created and stored: retries and re-sends send
    these exact bytes.

    >>> from datetime import UTC, datetime
    >>> body = webhook_body({"spid": "ü"}, status="approved", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    >>> body[:80]
    '{"type":"conversion.approved","timestamp":"2026-01-01T00:00:00Z","data":{"spid":'
    >>> json.loads(body)["data"]["spid"]
    'ü'
    """
    moment = occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = {"type": f"conversion.{status}", "timestamp": moment, "data": json_fields(values)}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
