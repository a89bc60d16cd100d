"""`postbacks/placeholders.py`: expansion (single pass, per-component encoding) and validation.

The property tests feed thousands of spids (any Unicode, reserved characters, placeholder-like
text, the full 255 characters) through templates with `[spid]` in the path and in the query, and
check what a publisher relies on: the URL keeps its scheme, host, port, path shape and query
keys, and decoding the segment or parameter gives back exactly the spid that was clicked.
"""

import json
import re
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from postbacks.placeholders import (
    ALIASES,
    CALLBACK_PLACEHOLDERS,
    CATALOG,
    LANDING_PLACEHOLDERS,
    MAX_EXPANDED_LENGTH,
    MAX_TEMPLATE_LENGTH,
    SAMPLE_VALUES,
    TemplateError,
    canonical_name,
    expand_placeholders,
    placeholder_reference,
    placeholders_in,
    validate_template,
    webhook_body,
)
from postbacks.values import click_values
from tracking.models import Click

# Characters that mean structure somewhere in a URL, and text that looks like our own syntax.
RESERVED = ":/?#[]@!$&'()*+,;=% \"<>\\^`{|}~."
TRICKY = [
    "[payout]",
    "[spid]",
    "{spid}",
    "{payout}",
    "[SPID]",
    "%",
    "%25",
    "%2F",
    "%5Bspid%5D",
    "&",
    "=",
    "#",
    "/",
    "?",
    ".",
    "..",
    "+",
    " ",
    "ü",
    "😀",
    "\u200b",
    "\ufeff",
    "\u0000",
    "\r\n",
    'a b&c/d?e#f%g"ü',
]

any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=255)
spids = st.one_of(
    any_text,
    st.text(st.characters(exclude_categories=["Cs"]), min_size=255, max_size=255),
    st.text(st.sampled_from(RESERVED), max_size=255),
    st.lists(st.sampled_from(TRICKY), max_size=40).map(lambda parts: "".join(parts)[:255]),
    st.sampled_from(TRICKY),
)

# Templates with [spid] in the path, in the query, in both, next to other placeholders and
# literal text, with the {alias} spelling, with and without a port.
TEMPLATES = [
    "https://pub.example/cb?id=[spid]&p=[payout]",
    "https://pub.example/[spid]/?yourparam=x",
    "https://pub.example/[spid]",
    "https://pub.example?id=[spid]",
    "http://pub.example:8080/a/[spid]/b?x=[spid]&y=1&p=[payout]",
    "https://pub.example/x-{spid}-y/cb?sub={subid}&p={payout}&e=[event_id]",
    "https://pub.example/p/[spid][payout]/z?a=[spid][payout]&b=&c=[SPID]",
    "https://127.0.0.1:9/deep/er/[spid]/[click_id]/?[spid]=k&t=[timestamp]",
]

OTHER_VALUES = {"payout": "1.50", "event_id": "evt_1", "click_id": "c1", "timestamp": "1767225600"}
_TOKEN = re.compile(r"\[([A-Za-z][A-Za-z0-9_]*)\]|\{([A-Za-z][A-Za-z0-9_]*)\}")


def raw_substitute(text: str, values: dict[str, str]) -> str:
    """The oracle: the template text with every placeholder replaced by its raw value."""
    return _TOKEN.sub(
        lambda m: values.get(canonical_name(m.group(1) or m.group(2)), ""),
        text,
    )


def split_template(template: str) -> tuple[str, str, str]:
    """(authority, path, query) of a template, split the way the expander splits it."""
    head, _, query = template.partition("?")
    rest = head.partition("://")[2]
    authority, slash, path = rest.partition("/")
    return authority, slash + path, query


# --- Property tests -------------------------------------------------------------------------


@settings(max_examples=3000, deadline=None)
@given(spid=spids, template=st.sampled_from(TEMPLATES))
@example(spid="..", template="https://pub.example/[spid]/?yourparam=x")
@example(spid=".", template="https://pub.example/[spid]")
@example(spid="[payout]", template="https://pub.example/cb?id=[spid]&p=[payout]")
@example(spid="x" * 255, template=TEMPLATES[4])
def test_it_never_changes_the_url_shape_and_round_trips_the_spid(spid, template):
    values = {**OTHER_VALUES, "spid": spid}
    validate_template(template)
    expanded = expand_placeholders(template, values)
    before, after = urlsplit(template), urlsplit(expanded)

    # Scheme, host and port never change, nor does anything before the path.
    assert (after.scheme, after.netloc, after.hostname, after.port) == (
        before.scheme,
        before.netloc,
        before.hostname,
        before.port,
    )
    assert after.fragment == ""

    # The path keeps its segments; each decodes to the template segment with raw values in it.
    _, template_path, template_query = split_template(template)
    template_segments = template_path.split("/")
    segments = after.path.split("/")
    assert len(segments) == len(template_segments)
    assert [unquote(s, errors="strict") for s in segments] == [
        raw_substitute(s, values) for s in template_segments
    ]
    # No value turns into a dot-segment, which clients and servers would remove.
    assert [s for s in segments if s in (".", "..")] == [
        s for s in template_segments if s in (".", "..")
    ]

    # The query keeps its keys, in order; each value decodes to exactly the raw value(s).
    pairs = parse_qsl(after.query, keep_blank_values=True, errors="strict")
    template_pairs = (
        [pair.partition("=")[::2] for pair in template_query.split("&")] if template_query else []
    )
    assert [key for key, _ in pairs] == [raw_substitute(key, values) for key, _ in template_pairs]
    assert [value for _, value in pairs] == [
        raw_substitute(value, values) for _, value in template_pairs
    ]

    # What an HTTP client (urllib3, under requests) makes of the URL: the same path and query,
    # nothing normalised away or re-encoded.
    parsed = parse_url(expanded)
    assert (parsed.host, parsed.port) == (before.hostname, before.port)
    assert (parsed.path or "", parsed.query or "") == (after.path, after.query)

    # Only unreserved characters and percent-escapes come out of a value.
    assert re.fullmatch(r"[A-Za-z0-9\-._~%/?&=:]*", expanded.partition("://")[2])


@settings(max_examples=500, deadline=None)
@given(spid=spids)
def test_it_decodes_to_the_spid_in_a_lone_path_segment_and_query_value(spid):
    expanded = expand_placeholders("https://pub.example/cb/[spid]/x?id=[spid]", {"spid": spid})
    parts = urlsplit(expanded)
    assert parts.hostname == "pub.example"
    assert unquote(parts.path.split("/")[2]) == spid
    assert parse_qsl(parts.query, keep_blank_values=True) == [("id", spid)]


short_values = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=10), st.sampled_from(TRICKY)
)


@settings(max_examples=500, deadline=None)
@given(values=st.dictionaries(st.sampled_from(sorted(CALLBACK_PLACEHOLDERS)), short_values))
def test_it_expands_in_a_single_pass_whatever_the_values(values):
    template = "https://pub.example/" + "/".join(f"[{n}]" for n in sorted(CALLBACK_PLACEHOLDERS))
    template += "?" + "&".join(f"{n}=[{n}]" for n in sorted(CALLBACK_PLACEHOLDERS))
    parts = urlsplit(expand_placeholders(template, values))
    assert "[" not in parts.path and "]" not in parts.query and "{" not in parts.query
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    assert query == {name: values.get(name, "") for name in CALLBACK_PLACEHOLDERS}


# --- Expansion ------------------------------------------------------------------------------


def test_it_encodes_the_briefs_examples():
    spid = 'a b&c/d?e#f%g"ü'
    assert (
        expand_placeholders(
            "https://pub.example/cb?id=[spid]&p=[payout]", {"spid": spid, "payout": "2.50"}
        )
        == "https://pub.example/cb?id=a%20b%26c%2Fd%3Fe%23f%25g%22%C3%BC&p=2.50"
    )
    assert (
        expand_placeholders("https://pub.example/[spid]/?yourparam=x", {"spid": spid})
        == "https://pub.example/a%20b%26c%2Fd%3Fe%23f%25g%22%C3%BC/?yourparam=x"
    )


def test_it_keeps_a_placeholder_inside_a_value_literal():
    expanded = expand_placeholders(
        "https://pub.example/[spid]?id=[spid]&p=[payout]",
        {"spid": "[payout]{payout}", "payout": "[spid]"},
    )
    assert expanded == (
        "https://pub.example/%5Bpayout%5D%7Bpayout%7D?id=%5Bpayout%5D%7Bpayout%7D&p=%5Bspid%5D"
    )


def test_it_accepts_the_brace_spelling_and_aliases():
    values = {"spid": "s/1", "click_id": "c1", "txn_id": "t 1"}
    assert (
        expand_placeholders(
            "https://pub.example/{spid}?a={SUBID}&b=[sub_id]&c={clickid}&d=[transaction_id]", values
        )
        == "https://pub.example/s%2F1?a=s%2F1&b=s%2F1&c=c1&d=t%201"
    )
    assert placeholders_in("x{spid}[subid][Click_ID]{geo}") == [
        "spid",
        "spid",
        "click_id",
        "country",
    ]
    assert set(ALIASES.values()) <= CALLBACK_PLACEHOLDERS


def test_it_expands_missing_and_none_values_to_nothing():
    assert (
        expand_placeholders(
            "https://pub.example/[spid]/x?id=[spid]&p=[payout]&n=[nope]", {"payout": None}
        )
        == "https://pub.example//x?id=&p=&n="
    )


def test_it_turns_non_string_values_into_text():
    assert (
        expand_placeholders(
            "https://pub.example/cb?t=[timestamp]&p=[payout]",
            {"timestamp": 1767225600, "payout": 0},
        )
        == "https://pub.example/cb?t=1767225600&p=0"
    )


def test_it_encodes_a_value_that_would_be_a_dot_segment():
    assert expand_placeholders("https://pub.example/[spid]/cb", {"spid": ".."}) == (
        "https://pub.example/%2E%2E/cb"
    )
    assert expand_placeholders("https://pub.example/a/[spid]", {"spid": "."}) == (
        "https://pub.example/a/%2E"
    )
    # Dots are only escaped where they would form a dot-segment; the template's own are kept.
    assert expand_placeholders(
        "https://pub.example/./v[spid]/[spid]?x=[spid]", {"spid": "..."}
    ) == ("https://pub.example/./v.../...?x=...")
    assert expand_placeholders("https://pub.example/[spid]?x=[spid]", {"spid": ".."}) == (
        "https://pub.example/%2E%2E?x=.."
    )


def test_it_refuses_an_expansion_longer_than_the_cap():
    template = "https://pub.example/cb?" + "&".join(f"s{i}=[spid]" for i in range(11))
    with pytest.raises(TemplateError, match=str(MAX_EXPANDED_LENGTH)):
        expand_placeholders(template, {"spid": "😀" * 255})  # 12 characters each once encoded


# --- Validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        *TEMPLATES,
        "https://pub.example/[spid][spid]/?yourparam=x",
        "HTTPS://Pub.Example:443/cb?id=[spid]",
        "http://pub.example",
        "https://pub.example/cb?a=%20[spid]",
        "https://pub.example/path@with-at/[spid]",
    ],
)
def test_it_accepts_usable_templates(template):
    validate_template(template)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("https://[spid].example/cb", r"host can't contain placeholders; put \[spid\]"),
        ("https://pub.[click_id]/cb", r"host can't contain placeholders; put \[click_id\]"),
        ("https://{spid}.example/cb", r"host can't contain placeholders; put \[spid\]"),
        ("https://pub.example:[payout]/cb", r"host can't contain placeholders"),
        ("https://pub.example[/cb", r"not valid"),
        ("https://[spid]/cb", r"host can.t contain placeholders; put \[spid\]"),
        ("https://pub.example/cb?x=[foo]", r"Unknown placeholder \[foo\]\."),
        ("https://pub.example/[bar]/cb?x=[foo]&y=[foo]", r"Unknown placeholder \[bar\], \[foo\]\."),
        ("https://pub.example/cb?x={Nope}", r"Unknown placeholder \[nope\]\."),
        ("ftp://pub.example/cb?id=[spid]", "must start with http:// or https://"),
        ("javascript:alert(1)//[spid]", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("//pub.example/cb?id=[spid]", "must start with http:// or https://"),
        ("pub.example/cb?id=[spid]", "must start with http:// or https://"),
        ("https://user:pw@pub.example/cb", "user name or password"),
        ("https://user@pub.example/cb", "user name or password"),
        ("https://pub.example/cb?id=[spid]#frag", "fragment"),
        ("https://pub.example/cb#[spid]", "fragment"),
        ("https://pub.example/cb?id=[spid]#", "fragment"),
        ("https://pub.example/c b?id=[spid]", "spaces or control characters"),
        ("https://pub.example/cb?id=[spid]\n", "spaces or control characters"),
        ("https://pub.example/cb?id=\t[spid]", "spaces or control characters"),
        ("https://pub.example/cb\x7f", "spaces or control characters"),
        (" https://pub.example/cb", "spaces or control characters"),
        ("https://pub.example/" + "x" * MAX_TEMPLATE_LENGTH, f"longer than {MAX_TEMPLATE_LENGTH}"),
        ("https://pub.example:99999/cb", "not valid"),
        ("https://pub.example:port/cb", "not valid"),
        ("https:///cb?id=[spid]", "no host"),
        ("https://", "no host"),
    ],
)
def test_it_refuses_unusable_templates_with_a_clear_message(template, message):
    with pytest.raises(TemplateError, match=message):
        validate_template(template)


def test_it_names_the_known_placeholders_when_one_is_unknown():
    with pytest.raises(TemplateError) as raised:
        validate_template("https://pub.example/cb?x=[spidd]")
    assert "[spidd]" in str(raised.value)
    assert "spid" in str(raised.value).split("Known:")[1]


def test_it_checks_landing_urls_against_their_own_set():
    validate_template("https://adv.example/l?c=[click_id]&s=[spid]", LANDING_PLACEHOLDERS)
    with pytest.raises(TemplateError, match=r"\[payout\]"):
        validate_template("https://adv.example/l?c=[click_id]&p=[payout]", LANDING_PLACEHOLDERS)


def test_it_fills_every_placeholder_from_the_one_catalog():
    """Landing URLs get exactly the click-time names; a postback and a test send get all."""
    click = Click(click_id="c1", spid="s1", placement="p", country="DE", device="mobile")
    landing = click_values(click, publisher_public_id="pub", campaign_public_id="cmp")
    assert set(landing) == LANDING_PLACEHOLDERS
    assert (
        set(SAMPLE_VALUES) == CALLBACK_PLACEHOLDERS == {p["name"] for p in placeholder_reference()}
    )


def test_it_accepts_exactly_the_longest_template():
    template = "https://pub.example/cb?id=[spid]&x="
    validate_template(template + "x" * (MAX_TEMPLATE_LENGTH - len(template)))


def test_it_accepts_an_ipv6_literal_host():
    validate_template("https://[2001:db8::1]:8443/cb?id=[spid]")
    assert (
        expand_placeholders("https://[2001:db8::1]/cb?id=[spid]", {"spid": "a/b"})
        == "https://[2001:db8::1]/cb?id=a%2Fb"
    )


# --- JSON webhook bodies ---------------------------------------------------------------------


@given(spid=st.text(max_size=255), txn_id=st.text(max_size=100))
def test_a_webhook_body_is_ascii_json_that_gives_back_every_value_exactly(spid, txn_id):
    body = webhook_body(
        {**SAMPLE_VALUES, "spid": spid, "txn_id": txn_id, "revenue": ""},
        status="approved",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert body.isascii()
    data = json.loads(body)["data"]
    assert (data["spid"], data["txn_id"], data["revenue"]) == (spid, txn_id, None)
    assert list(data) == [p.name for p in CATALOG]
