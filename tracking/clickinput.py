"""The click edge's input rules: the one place that decides what of a visitor's request may be
stored with a click.

A click's text fields come from anyone on the internet, and PostgreSQL refuses some of what
HTTP can carry (a NUL byte, over-long values). Whatever got past this edge would be refused
later by the click flusher, away from the request that brought it. So every stored field is
checked here, before the click is buffered:

- The **spid** is the publisher's own identifier and comes back byte-exact in its callbacks, so
  it is never altered: a spid that is not valid UTF-8, holds a control character (NUL included)
  or is longer than 255 characters gets the click **refused**, counted per publisher, day and
  reason (`ClickRejection`), and the visitor is still sent to the landing page.
- Every other text field (placement, creative, keyword `q`, user agent, referer) describes the
  visit and is **cleaned**: invalid UTF-8 is replaced by U+FFFD, control characters are removed,
  and the value is cut to its column's length. The click is stored with the names of the
  cleaned fields in `Click.cleaned_fields`, which the publisher sees in the spid trace and the
  API.
- The `ref` code is only looked up: one that could not be a code is an unknown link.

Invalid UTF-8 can't be seen in `request.GET` (Django decodes it to U+FFFD), so the query string
and the headers are read here from their raw bytes.
"""

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from django.http import HttpRequest

SPID_MAX_LENGTH = 255
REF_MAX_LENGTH = 32
CREATIVE_MAX_LENGTH = 32
SMART_AD_ID_MAX_LENGTH = 32
PLACEMENT_MAX_LENGTH = 100
KEYWORD_MAX_LENGTH = 100
USER_AGENT_MAX_LENGTH = 512
REFERER_MAX_LENGTH = 1024

# Why a click is refused (the values of tracking.models.ClickRejection.Reason).
SPID_TOO_LONG = "spid_too_long"
SPID_CONTROL_CHARS = "spid_control_chars"
SPID_INVALID_UTF8 = "spid_invalid_utf8"

# Unicode category Cc: C0 controls (NUL included), DEL and the C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _decode(raw: bytes) -> tuple[str, bool]:
    """The text of `raw` and whether it had to be repaired (invalid UTF-8)."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


def _clean(raw: bytes, max_length: int, *, collapse_spaces: bool = False) -> tuple[str, bool]:
    """A storable value and whether anything but spacing was changed to make it so."""
    text, repaired = _decode(raw)
    if collapse_spaces:
        # Placements and keywords are labels: runs of white space (tabs and newlines too) are
        # one space. That is normalisation, documented, and not flagged.
        text = " ".join(text.split())
    stripped = _CONTROL.sub("", text)
    cut = stripped[:max_length]
    return cut, repaired or cut != text


def spid_problem(raw: bytes | str) -> str | None:
    """Why a spid can't be recorded (a refusal reason above), or None.

    >>> spid_problem("a b&c/d?e#f%g\\"ü") is None
    True
    >>> spid_problem(b"\\xff"), spid_problem("x\\x00"), spid_problem("x" * 256)
    ('spid_invalid_utf8', 'spid_control_chars', 'spid_too_long')
    """
    if isinstance(raw, bytes):
        text, repaired = _decode(raw)
        if repaired:
            return SPID_INVALID_UTF8
    else:
        text = raw
    if _CONTROL.search(text):
        return SPID_CONTROL_CHARS
    if len(text) > SPID_MAX_LENGTH:
        return SPID_TOO_LONG
    return None


def normalize_label(value: str, max_length: int) -> str:
    """A placement or keyword as stored and sent back: spacing collapsed, controls removed, cut.

    >>> normalize_label("  top \\t banner\\x00 ", 100)
    'top banner'
    """
    return _clean(value.encode("utf-8", "surrogatepass"), max_length, collapse_spaces=True)[0]


@dataclass(frozen=True)
class ClickParams:
    """What a `/click` or `/smart` request carries, made storable."""

    ref: str  # "" when it could not be a link code
    spid: str
    spid_problem: str | None  # a refusal reason: the click is refused
    placement: str
    creative: str  # "" when it could not be a creative id
    smart_ad_id: str
    keyword: str  # the smart ad's `q` (a smart click's keyword is signed in its link)
    user_agent: str
    referer: str
    cleaned: tuple[str, ...]  # names of the fields above that were changed to be storable
    # The query's values as Django decodes them, for checking a smart link's signature (which
    # was made over the values the link was served with).
    query: dict[str, str]


def _query_bytes(query: bytes) -> dict[bytes, bytes]:
    """`a=1&b=%FF` as raw bytes per name, undecoded. Repeated names: the last one wins, as in
    `request.GET.get`."""
    values = {}
    for pair in query.split(b"&"):
        if pair:
            name, _, value = pair.partition(b"=")
            values[unquote_to_bytes(name.replace(b"+", b" "))] = unquote_to_bytes(
                value.replace(b"+", b" ")
            )
    return values


def _header(request: HttpRequest, name: str) -> bytes:
    # WSGI hands headers over as the raw bytes decoded as latin-1 (PEP 3333).
    return request.META.get(name, "").encode("latin-1", errors="replace")


def click_params(request: HttpRequest) -> ClickParams:
    """Read and check every field of a click request (module docstring: the rules)."""
    raw_query = request.META.get("QUERY_STRING", "").encode("latin-1", errors="replace")
    raw = _query_bytes(raw_query)
    cleaned: list[str] = []

    def field(name: str, value: bytes, max_length: int, **options: bool) -> str:
        text, changed = _clean(value, max_length, **options)
        if changed:
            cleaned.append(name)
        return text

    def code(value: bytes, max_length: int) -> str | None:
        """An identifier that is only looked up: kept whole, or None when it can't be one."""
        text, repaired = _decode(value)
        ok = not repaired and len(text) <= max_length and not _CONTROL.search(text)
        return text if ok else None

    spid_raw = raw.get(b"spid", b"")
    creative = code(raw.get(b"creative", b""), CREATIVE_MAX_LENGTH)
    if creative is None:
        cleaned.append("creative")
    return ClickParams(
        ref=code(raw.get(b"ref", b""), REF_MAX_LENGTH) or "",
        spid=_decode(spid_raw)[0],
        spid_problem=spid_problem(spid_raw),
        placement=field(
            "placement", raw.get(b"placement", b""), PLACEMENT_MAX_LENGTH, collapse_spaces=True
        ),
        creative=creative or "",
        smart_ad_id=code(raw.get(b"smart_ad_id", b""), SMART_AD_ID_MAX_LENGTH) or "",
        keyword=field("keyword", raw.get(b"q", b""), KEYWORD_MAX_LENGTH, collapse_spaces=True),
        user_agent=field("user_agent", _header(request, "HTTP_USER_AGENT"), USER_AGENT_MAX_LENGTH),
        referer=field("referer", _header(request, "HTTP_REFERER"), REFERER_MAX_LENGTH),
        cleaned=tuple(cleaned),
        query={key.decode("utf-8", "replace"): _decode(value)[0] for key, value in raw.items()},
    )
