"""The SSRF guard: which destinations postbacks may reach, pinning, and the check on save.

Name resolution is injected (a table standing in for DNS) so every row is deterministic;
connections go to real receivers on 127.0.0.1.
"""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from postbacks.http import (
    ERROR_KINDS,
    DeliveryError,
    check_destination_allowed,
    is_public_address,
    send_get,
    vet_destination,
)
from publishers.models import CallbackTemplate
from publishers.services import callback_template_create
from tests.receiver import Receiver

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

FAKE_DNS = {
    "public.example": [PUBLIC_V4],
    "dual.example": [PUBLIC_V4, PUBLIC_V6],
    "xn--bcher-kva.example": [PUBLIC_V4],  # bücher.example
    "cafe.cafe": [PUBLIC_V4],  # hex-looking labels are still names
    "deadbeef.com": [PUBLIC_V4],
    "metadata.example": ["169.254.169.254"],
    "internal.example": ["10.1.2.3"],
    "loopback.example": ["127.0.0.1"],
    "half-private.example": [PUBLIC_V4, "192.168.0.10"],  # any private answer taints
    "mapped.example": ["::ffff:127.0.0.1"],
    "ula.example": ["fd00::5"],
    "nat64.example": ["64:ff9b::a9fe:a9fe"],  # 169.254.169.254 behind a translator
    "cgnat.example": ["100.64.1.1"],
    "zero.example": ["0.0.0.0"],
}


def fake_resolver(host: str, port: int) -> list[str]:
    host = host.removesuffix(".")  # an absolute name, as real DNS treats it
    if host not in FAKE_DNS:
        raise OSError(f"NXDOMAIN {host}")
    return FAKE_DNS[host]


REFUSED = "forbidden_destination"
INVALID = "invalid_url"

# (url, None when allowed or the error kind)
DESTINATIONS = [
    # Public destinations go through.
    (f"http://{PUBLIC_V4}/cb?id=1", None),
    (f"https://[{PUBLIC_V6}]/cb", None),
    ("http://1.1.1.1:8080/cb", None),
    ("https://public.example/cb?id=[spid]", None),
    ("HTTPS://Public.Example/cb", None),
    ("https://dual.example/cb", None),
    ("https://bücher.example/cb", None),
    ("https://cafe.cafe/", None),
    ("https://deadbeef.com/", None),
    ("https://public.example./cb", None),
    # Loopback, private, link-local, CGNAT, "this network".
    ("http://127.0.0.1/", REFUSED),
    ("http://127.10.20.30:8000/", REFUSED),
    ("http://10.0.0.1/", REFUSED),
    ("http://172.16.0.1/", REFUSED),
    ("http://172.31.255.255/", REFUSED),
    ("http://192.168.1.1/", REFUSED),
    ("http://169.254.169.254/latest/meta-data/", REFUSED),
    ("http://169.254.1.1/", REFUSED),
    ("http://100.64.0.1/", REFUSED),
    ("http://100.127.255.254/", REFUSED),
    ("http://0.0.0.0:8000/", REFUSED),
    ("http://0.1.2.3/", REFUSED),
    # Multicast, reserved, broadcast, special-purpose and documentation ranges.
    ("http://224.0.0.1/", REFUSED),
    ("http://239.255.255.250/", REFUSED),
    ("http://240.0.0.1/", REFUSED),
    ("http://255.255.255.255/", REFUSED),
    ("http://192.0.0.1/", REFUSED),
    ("http://192.0.2.1/", REFUSED),
    ("http://192.88.99.1/", REFUSED),
    ("http://198.18.0.1/", REFUSED),
    ("http://198.51.100.1/", REFUSED),
    ("http://203.0.113.1/", REFUSED),
    # IPv6: loopback, unspecified, IPv4 wrapped in IPv6 (mapped, compatible, NAT64, 6to4,
    # Teredo), ULA, link-local, site-local, multicast, discard, documentation, SRv6.
    ("http://[::1]/", REFUSED),
    ("http://[::]/", REFUSED),
    ("http://[::ffff:127.0.0.1]/", REFUSED),
    ("http://[::ffff:7f00:1]/", REFUSED),
    ("http://[::ffff:10.0.0.1]/", REFUSED),
    (f"http://[::ffff:{PUBLIC_V4}]/", REFUSED),
    ("http://[::127.0.0.1]/", REFUSED),
    ("http://[64:ff9b::7f00:1]/", REFUSED),
    ("http://[64:ff9b:1::1]/", REFUSED),
    ("http://[2002:7f00:1::1]/", REFUSED),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", REFUSED),
    ("http://[2001:db8::1]/", REFUSED),
    ("http://[fc00::1]/", REFUSED),
    ("http://[fd12:3456:789a::1]/", REFUSED),
    ("http://[fe80::1]/", REFUSED),
    ("http://[fe80::1%25eth0]/", REFUSED),
    ("http://[fec0::1]/", REFUSED),
    ("http://[ff02::1]/", REFUSED),
    ("http://[100::1]/", REFUSED),
    ("http://[3fff::1]/", REFUSED),
    ("http://[5f00::1]/", REFUSED),
    # Names whose answers are not public.
    ("https://metadata.example/", REFUSED),
    ("https://internal.example/", REFUSED),
    ("https://loopback.example/", REFUSED),
    ("https://half-private.example/", REFUSED),
    ("https://mapped.example/", REFUSED),
    ("https://ula.example/", REFUSED),
    ("https://nat64.example/", REFUSED),
    ("https://cgnat.example/", REFUSED),
    ("https://zero.example/", REFUSED),
    # Odd spellings of IPv4 addresses (inet_aton would accept them).
    ("http://2130706433/", REFUSED),
    ("http://0x7f000001/", REFUSED),
    ("http://0x7f.1/", REFUSED),
    ("http://017700000001/", REFUSED),
    ("http://0177.0.0.1/", REFUSED),
    ("http://127.1/", REFUSED),
    ("http://127.0.1/", REFUSED),
    ("http://093.184.216.34/", REFUSED),
    ("http://1.2.3.4.5/", REFUSED),
    ("http://example.0x1/", REFUSED),
    ("http://127.0.0.1./", REFUSED),  # trailing dot: resolvers answer it as 127.0.0.1
    ("http://93.184.216.34./", REFUSED),
    # Schemes and credentials.
    ("ftp://public.example/cb", REFUSED),
    ("file:///etc/passwd", REFUSED),
    ("gopher://public.example:70/", REFUSED),
    ("javascript:alert(1)", REFUSED),
    ("//public.example/cb", REFUSED),
    ("http://user:secret@public.example/", REFUSED),
    ("http://user@public.example/", REFUSED),
    ("http://public.example\\@127.0.0.1/", REFUSED),
    # Malformed.
    ("http:///cb", INVALID),
    ("https://public.example:0/", INVALID),
    ("https://public.example:99999/", INVALID),
    ("https://public.example/c b", INVALID),
    ("https://public.example/caf\u00e9", INVALID),
    ("https://public.example/cb?x=\r\nX-Injected: 1", INVALID),
    ("https://bad_host!.example/", INVALID),
    ("https://a..b.example/", INVALID),
    ("http://[::1/", INVALID),
]


def test_the_table_has_at_least_fifty_rows():
    assert len(DESTINATIONS) >= 50


@pytest.mark.parametrize(("url", "kind"), DESTINATIONS, ids=[row[0] for row in DESTINATIONS])
def test_it_allows_only_public_http_destinations(url, kind):
    if kind is None:
        destination = vet_destination(url, allow_private=False, resolver=fake_resolver)
        assert destination.addresses
        assert all(is_public_address(a) for a in destination.addresses)
        return
    with pytest.raises(DeliveryError) as caught:
        vet_destination(url, allow_private=False, resolver=fake_resolver)
    assert caught.value.kind == kind
    assert caught.value.permanent is True
    assert ERROR_KINDS[kind] is True


def test_it_resolves_localhost_for_real_and_refuses_it():
    with pytest.raises(DeliveryError) as caught:
        vet_destination("http://localhost:8000/cb", allow_private=False)
    assert caught.value.kind == REFUSED
    assert caught.value.resolved_ip in {"127.0.0.1", "::1"}


def test_it_lets_the_operator_allow_private_destinations_but_never_odd_literals_or_schemes():
    assert vet_destination("http://127.0.0.1:8000/", allow_private=True).addresses == ("127.0.0.1",)
    assert vet_destination("http://[::1]/", allow_private=True).addresses == ("::1",)
    for url in (
        "http://2130706433/",
        "http://0x7f.1/",
        "http://127.0.0.1./",
        "ftp://127.0.0.1/",
        "http://u@127.0.0.1/",
    ):
        with pytest.raises(DeliveryError):
            vet_destination(url, allow_private=True)


def test_it_refuses_before_connecting():
    receiver = Receiver().start()
    try:
        with pytest.raises(DeliveryError) as caught:
            send_get(receiver.base_url + "/cb", headers={}, allow_private=False)
    finally:
        receiver.stop()
    assert (caught.value.kind, caught.value.resolved_ip) == (REFUSED, "127.0.0.1")
    assert receiver.requests == []


# --- DNS rebinding --------------------------------------------------------------------------


class RebindingResolver:
    """Answers with a public address first and with loopback afterwards, like an attacker's
    DNS server with a zero TTL."""

    def __init__(self):
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [PUBLIC_V4] if self.calls == 1 else ["127.0.0.1"]


def test_it_resolves_once_so_a_rebinding_name_never_reaches_loopback():
    receiver = Receiver().start()  # what the rebinding answer would reach
    resolver = RebindingResolver()
    try:
        try:
            result = send_get(
                f"http://rebind.example:{receiver.port}/cb",
                headers={},
                allow_private=False,
                connect_timeout=0.5,
                total_timeout=1.0,
                resolver=resolver,
            )
            reached = result.resolved_ip
        except DeliveryError as error:
            # No route to the public address from the test machine: fine, as long as it was
            # the vetted address we tried.
            assert error.kind in {"connect_timeout", "connection_error", "timeout"}
            reached = error.resolved_ip
    finally:
        receiver.stop()
    assert resolver.calls == 1
    assert reached == PUBLIC_V4
    assert receiver.requests == []


def test_it_connects_to_the_vetted_answer_and_not_a_later_one():
    # With private destinations allowed the connection succeeds, so we can see where it went:
    # the first (vetted) answer names our receiver, a later lookup would name a dead port.
    receiver = Receiver().start()
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])
    try:
        result = send_get(
            f"http://pinned.example:{receiver.port}/cb",
            headers={},
            allow_private=True,
            resolver=lambda host, port: next(answers),
        )
    finally:
        receiver.stop()
    assert (result.status_code, result.resolved_ip) == (200, "127.0.0.1")
    assert receiver.requests[0].headers["Host"] == f"pinned.example:{receiver.port}"
    assert next(answers) == ["127.0.0.2"]  # asked once


def test_it_tries_the_next_vetted_address_when_one_does_not_answer():
    receiver = Receiver().start()
    try:
        result = send_get(
            f"http://multi.example:{receiver.port}/cb",
            headers={},
            allow_private=True,
            resolver=lambda host, port: ["::1", "127.0.0.1"] if host == "multi.example" else [],
        )
    finally:
        receiver.stop()
    # The receiver listens on 127.0.0.1 only: ::1 is refused, then 127.0.0.1 answers.
    assert (result.status_code, result.resolved_ip) == (200, "127.0.0.1")


# --- The check when a template is saved -----------------------------------------------------


def test_check_destination_allowed_ignores_placeholders_and_unresolvable_names():
    check_destination_allowed(
        "https://public.example/cb/[spid]?p={payout}", allow_private=False, resolver=fake_resolver
    )
    check_destination_allowed(
        "https://not-yet-in-dns.example/cb", allow_private=False, resolver=fake_resolver
    )
    with pytest.raises(DeliveryError):
        check_destination_allowed(
            "https://metadata.example/cb?id=[spid]", allow_private=False, resolver=fake_resolver
        )


@pytest.mark.parametrize(
    ("url_template", "message_part"),
    [
        ("http://127.0.0.1:9/cb?id=[spid]", "private or internal address (127.0.0.1)"),
        ("http://localhost/cb?id=[spid]", "private or internal address"),
        ("http://169.254.169.254/latest?id=[spid]", "169.254.169.254"),
        ("http://2130706433/cb?id=[spid]", "not a plain IPv4 address"),
        ("http://127.0.0.1.:9/cb?id=[spid]", "not a plain IPv4 address"),
    ],
)
def test_it_refuses_a_private_template_with_a_clear_error(
    publisher, settings, url_template, message_part
):
    settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS = False
    with pytest.raises(ValidationError) as caught:
        callback_template_create(publisher=publisher, url_template=url_template)
    assert message_part in caught.value.message_dict["url_template"][0]
    assert not CallbackTemplate.objects.filter(publisher=publisher).exists()


def test_it_shows_the_refusal_as_a_form_error_in_the_dashboard(member_client, publisher, settings):
    settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS = False
    response = member_client.post(
        reverse("callback_new"),
        {"url_template": "http://10.0.0.8/cb?id=[spid]", "statuses": ["approved"]},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["url_template"] == [
        "10.0.0.8 resolves to a private or internal address (10.0.0.8); "
        "postbacks only go to public addresses."
    ]
    assert not CallbackTemplate.objects.filter(publisher=publisher).exists()


def test_it_saves_public_templates_and_private_ones_when_the_operator_allows(
    publisher, settings, receiver
):
    settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS = False
    public = callback_template_create(
        publisher=publisher, url_template=f"http://{PUBLIC_V4}/cb?id=[spid]"
    )
    settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS = True
    local = callback_template_create(
        publisher=publisher, url_template=f"{receiver.base_url}/cb?id=[spid]"
    )
    assert {public.pk, local.pk} == set(
        CallbackTemplate.objects.filter(publisher=publisher).values_list("pk", flat=True)
    )
