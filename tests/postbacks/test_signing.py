"""Postback signatures: golden vectors (also printed in docs/delivery.md), the verifier's
edges, and a signature checked against the request as it arrived at a real receiver."""

import doctest
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postbacks import signing
from postbacks.http import send_get
from postbacks.signing import sign, signature_header, signed_content, verify
from tests.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
TS = 1767225600  # 2026-01-01T00:00:00Z
ROTATION_TARGET = "/postback/a%2Fb?sub=x%20y&payout=1.50"

# (secrets, event id, timestamp, request target, header value). Computed independently with
# `printf '%s' "$message" | openssl dgst -sha256 -hmac "$secret" -binary | base64`.
GOLDEN = [
    (
        ["whsec_test"],
        "evt_1",
        TS,
        "/cb?id=42",
        "v1=GZ+vc3IL1OAm9V3Y50iyjMJ7bvNa+8eJRL1gpjtdd58=",
    ),
    (
        ["whsec_test"],
        "evt_1",
        TS,
        "/",
        "v1=Ady9LlMrCmJtc9SVv6NaPAUGM6zRt5jctYuqSaMSRCA=",
    ),
    (
        ["whsec_new", "whsec_old"],  # a rotation: new secret first, then the old one
        "evt_7Qm2xZ",
        TS,
        ROTATION_TARGET,
        "v1=BLVuplWSrPuzhL7IFMytm1AprOhTekKsP2iYfbM2SRQ= "
        "v1=8vGXIS9UVJ6MBU8LJpqv9l+k4zY3JQmlJwrGNz4P7TU=",
    ),
]


@pytest.mark.parametrize(("secrets", "event_id", "timestamp", "target", "header"), GOLDEN)
def test_it_matches_the_golden_vectors(secrets, event_id, timestamp, target, header):
    assert signature_header(secrets, event_id, timestamp, target) == header
    for secret in secrets:
        assert verify([secret], event_id, str(timestamp), header, target, now=timestamp)


@pytest.mark.parametrize(("secrets", "event_id", "timestamp", "target", "header"), GOLDEN)
def test_the_docs_print_the_golden_vectors(secrets, event_id, timestamp, target, header):
    docs = (ROOT / "docs" / "delivery.md").read_text()
    for part in header.split():
        assert part in docs
    assert target in docs


def test_it_signs_event_id_timestamp_method_and_raw_target():
    assert signed_content("evt_1", TS, "/cb?id=42") == b"evt_1.1767225600.GET /cb?id=42"
    assert signed_content("evt_1", "1767225600", "/cb", method="get") == (
        b"evt_1.1767225600.GET /cb"
    )


def test_it_accepts_either_secret_during_a_rotation_and_neither_after():
    header = GOLDEN[2][4]
    common = ("evt_7Qm2xZ", str(TS), header, ROTATION_TARGET)
    assert verify(["whsec_old"], *common, now=TS)
    assert verify(["whsec_new"], *common, now=TS)
    assert verify(["whsec_other", "whsec_new"], *common, now=TS)
    assert not verify(["whsec_other"], *common, now=TS)
    assert not verify([], *common, now=TS)


@pytest.mark.parametrize(
    ("now", "valid"),
    [(TS, True), (TS + 300, True), (TS - 300, True), (TS + 301, False), (TS - 301, False)],
)
def test_it_tolerates_five_minutes_of_skew_either_way(now, valid):
    header = sign("whsec_test", "evt_1", TS, "/cb?id=42")
    assert verify(["whsec_test"], "evt_1", str(TS), header, "/cb?id=42", now=now) is valid


@pytest.mark.parametrize(
    ("event_id", "timestamp", "target", "header"),
    [
        ("evt_2", str(TS), "/cb?id=42", None),  # another event's id
        ("evt_1", str(TS + 1), "/cb?id=42", None),  # another timestamp
        ("evt_1", str(TS), "/cb?id=42&x=1", None),  # a parameter added
        ("evt_1", str(TS), "/cb?ID=42", None),  # case matters
        ("evt_1", str(TS), "/cb?id=42", "v1=" + "A" * 44),  # a forged signature
        ("evt_1", str(TS), "/cb?id=42", "v2=GZ+vc3IL1OAm9V3Y50iyjMJ7bvNa+8eJRL1gpjtdd58="),
        ("evt_1", str(TS), "/cb?id=42", "GZ+vc3IL1OAm9V3Y50iyjMJ7bvNa+8eJRL1gpjtdd58="),
        ("evt_1", str(TS), "/cb?id=42", ""),
        ("", str(TS), "/cb?id=42", None),  # no event id
        ("evt_1", "", "/cb?id=42", None),  # no timestamp
        ("evt_1", f"{TS}\n", "/cb?id=42", None),  # a trailing newline
        ("evt_1", f"+{TS}", "/cb?id=42", None),  # int() would accept these spellings
        ("evt_1", "1_767_225_600", "/cb?id=42", None),
        ("evt_1", f" {TS}", "/cb?id=42", None),
        ("evt_1", "1767225600.0", "/cb?id=42", None),
    ],
)
def test_it_refuses_anything_tampered_or_malformed(event_id, timestamp, target, header):
    if header is None:
        header = sign("whsec_test", "evt_1", TS, "/cb?id=42")
    assert not verify(["whsec_test"], event_id, timestamp, header, target, now=TS)


def test_it_ignores_unknown_versions_and_extra_whitespace_in_the_header():
    good = sign("whsec_test", "evt_1", TS, "/cb?id=42")
    header = f"  v0=legacy   v2=future\t{good}  "
    assert verify(["whsec_test"], "evt_1", str(TS), header, "/cb?id=42", now=TS)


def test_it_verifies_what_a_real_receiver_got_on_the_wire():
    receiver = Receiver().start()
    secrets = ["whsec_new", "whsec_old"]
    # Lowercase escapes, an escaped slash and brackets: a client that re-encoded the target
    # would break the signature.
    target = "/cb/a%2fb?id=x%20y%26z&p=[1]&e=evt_9"
    now = int(time.time())
    try:
        send_get(
            receiver.base_url + target,
            headers={
                "Roundtrip-Event-Id": "evt_9",
                "Roundtrip-Timestamp": str(now),
                "Roundtrip-Signature": signature_header(secrets, "evt_9", now, target),
            },
            allow_private=True,
        )
    finally:
        receiver.stop()
    got = receiver.requests[0]
    assert got.path == target
    for secret in secrets:
        assert verify(
            [secret],
            got.headers["Roundtrip-Event-Id"],
            got.headers["Roundtrip-Timestamp"],
            got.headers["Roundtrip-Signature"],
            got.path,
        )


def test_it_imports_without_django():
    code = (
        "import sys; import postbacks.signing as s; "
        "assert 'django' not in sys.modules, sorted(m for m in sys.modules if 'django' in m); "
        "print(s.sign('whsec_test', 'evt_1', 1767225600, '/cb?id=42'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == GOLDEN[0][4]


def test_its_doctests_hold():
    assert doctest.testmod(signing).failed == 0


def test_it_verifies_a_reconciliation_file_by_the_same_rules():
    body = b'{"rows": []}'
    digest = signing.content_sha256(body)
    header = signing.file_signature_header(["whsec_new", "whsec_old"], TS, "2026-01-01", digest)
    assert signing.verify_file(["whsec_old"], str(TS), "2026-01-01", body, "v2=x " + header)
    assert not signing.verify_file(["whsec_old"], f" {TS}", "2026-01-01", body, header)
    assert not signing.verify_file(["whsec_old"], str(TS), "2026-01-01", body + b" ", header)
    # A file is checked long after it was made: no time window.
    assert signing.verify_file(["whsec_new"], str(TS), "2026-01-01", body, header)
