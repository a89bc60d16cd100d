"""The advertiser portal (/advertiser/): who may see what (owner, member, another advertiser, a
publisher's account, anonymous) on every route, keys shown once and revoked for real, the test
conversion, and the log of what the intake answered (accepted, duplicate, status change,
refused with its reason)."""

import json
import os
import re
import subprocess
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from postbacks.models import Postback
from publishers.models import CallbackTemplate, Membership, Publisher
from publishers.services import TeamError, invitation_accept, member_invite
from tests.tracking.helpers import click_stored
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    AdvertiserUser,
    Campaign,
    Click,
    Conversion,
    ConversionRefusal,
    IntakeOutcome,
    TrackingLink,
    reason_label,
)
from tracking.portal import services as portal_services
from tracking.portal.selectors import OUTCOME_LOG
from tracking.portal.urls import urlpatterns
from tracking.portal.views import integration_snippets
from tracking.services import advertiser_key_create, conversion_record

pytestmark = pytest.mark.django_db

BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)


def user(username: str):
    return get_user_model().objects.create_user(username, password=f"pw-{username}")


@pytest.fixture
def adv_owner(advertiser):
    account = user("adv-owner")
    AdvertiserUser.objects.create(
        advertiser=advertiser, user=account, role=AdvertiserUser.Role.OWNER
    )
    return account


@pytest.fixture
def adv_member(advertiser):
    account = user("adv-member")
    AdvertiserUser.objects.create(advertiser=advertiser, user=account)
    return account


@pytest.fixture
def rival(db):
    """Another advertiser with its own owner and campaign."""
    other = Advertiser.objects.create(name="Rival Advertiser")
    Campaign.objects.create(
        advertiser=other, name="Rival campaign", landing_url="https://rival.example/?c=[click_id]"
    )
    account = user("rival-owner")
    AdvertiserUser.objects.create(advertiser=other, user=account, role=AdvertiserUser.Role.OWNER)
    return other


def signed_in(account) -> Client:
    client = Client(HTTP_USER_AGENT=BROWSER)
    client.force_login(account)
    return client


@pytest.fixture
def owner(adv_owner) -> Client:
    return signed_in(adv_owner)


@pytest.fixture
def click(link) -> Click:
    return click_stored(link=link, spid="spid-adv-1", user_agent=BROWSER)


@pytest.fixture
def portal_data(advertiser, campaign, link, click, api_key, adv_owner, adv_member, rival):
    """The advertiser's conversions (accepted, duplicate), one refused as expired, and the
    values only its own people may ever see."""
    advertiser.name = "adv-secret-advertiser"
    advertiser.save()
    campaign.name = "adv-secret-campaign"
    campaign.save()
    conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="adv-secret-txn")
    conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="adv-secret-txn")
    old = Click.objects.create(
        link=link,
        publisher=link.publisher,
        campaign=campaign,
        spid="spid-adv-old",
        created_at=timezone.now() - timedelta(days=30),
    )
    with pytest.raises(Exception, match="attribution window"):
        conversion_record(advertiser=advertiser, click_id=old.click_id, txn_id="adv-old-txn")
    key = AdvertiserAPIKey.objects.filter(advertiser=advertiser).first()
    return {
        "key_lookup": key.lookup,
        "secrets": [
            campaign.public_id,
            campaign.name,
            "advertiser.example/landing",
            click.click_id,
            old.click_id,
            "adv-secret-txn",
            "adv-old-txn",
            key.lookup,
            advertiser.name,
        ],
    }


# --- Who may see what: every route ----------------------------------------------------------


def route_cases(data: dict, campaign_id: str) -> list[tuple[str, str, dict, str]]:
    """(method, url, data, url name) for every route of the portal, with the advertiser's
    own identifiers: the outsider's requests name the owner's objects."""
    lookup = data["key_lookup"]
    return [
        ("get", reverse("advertiser_home"), {}, "advertiser_home"),
        ("get", reverse("advertiser_conversions"), {}, "advertiser_conversions"),
        (
            "get",
            reverse("advertiser_conversions") + f"?campaign={campaign_id}&tz=Asia/Kolkata",
            {},
            "advertiser_conversions",
        ),
        ("get", reverse("advertiser_keys"), {}, "advertiser_keys"),
        (
            "get",
            reverse("advertiser_integration") + f"?campaign={campaign_id}",
            {},
            "advertiser_integration",
        ),
        (
            "post",
            reverse("advertiser_test_conversion"),
            {"campaign": campaign_id, "event": "conversion"},
            "advertiser_test_conversion",
        ),
        (
            "post",
            reverse("advertiser_key_create"),
            {"kind": "api", "name": "k"},
            "advertiser_key_create",
        ),
        (
            "post",
            reverse("advertiser_key_revoke", args=[lookup]),
            {},
            "advertiser_key_revoke",
        ),
    ]


def portal_state(advertiser: Advertiser) -> dict:
    return {
        "keys": sorted(
            AdvertiserAPIKey.objects.filter(advertiser=advertiser).values_list(
                "lookup", "revoked_at"
            )
        ),
        "outcomes": IntakeOutcome.objects.filter(advertiser=advertiser).count(),
        "conversions": Conversion.objects.filter(advertiser=advertiser).count(),
    }


def test_it_covers_every_route_of_the_portal(portal_data, campaign):
    names = {name for *_, name in route_cases(portal_data, campaign.public_id)}
    assert names == {p.name for p in urlpatterns}


def test_it_sends_anonymous_visitors_to_sign_in(portal_data, campaign):
    for method, url, payload, _ in route_cases(portal_data, campaign.public_id):
        response = getattr(Client(), method)(url, payload)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


@pytest.mark.parametrize("username", ["owner-a", "member-a"])
def test_it_refuses_publisher_accounts_on_every_route(portal_data, advertiser, campaign, username):
    client = signed_in(get_user_model().objects.get(username=username))
    before = portal_state(advertiser)
    for method, url, payload, _ in route_cases(portal_data, campaign.public_id):
        response = getattr(client, method)(url, payload)
        assert response.status_code == 403, (url, response.status_code)
        body = response.content.decode()
        assert not [s for s in portal_data["secrets"] if s in body], url
    assert portal_state(advertiser) == before


def test_it_refuses_staff_without_an_advertiser(portal_data, admin_user):
    assert signed_in(admin_user).get(reverse("advertiser_home")).status_code == 403


def test_it_shows_another_advertiser_nothing_of_this_one(portal_data, advertiser, campaign):
    client = signed_in(get_user_model().objects.get(username="rival-owner"))
    before = portal_state(advertiser)
    expected = {
        "advertiser_home": (200,),
        "advertiser_conversions": (200,),  # the campaign is not one of its choices: a form error
        "advertiser_keys": (200,),
        "advertiser_integration": (200,),  # an unknown campaign: its own first one instead
        "advertiser_test_conversion": (302,),  # refused as a form error, nothing sent
        "advertiser_key_create": (302,),  # its own key
        "advertiser_key_revoke": (404,),
    }
    for method, url, payload, name in route_cases(portal_data, campaign.public_id):
        response = getattr(client, method)(url, payload)
        assert response.status_code in expected[name], (url, response.status_code)
        body = response.content.decode()
        # The rival typed the campaign id in; only a form may echo it back.
        body = body.replace(f'value="{campaign.public_id}"', "")
        body = re.sub(rf"[?&]campaign={campaign.public_id}", "", body)
        leaked = [s for s in portal_data["secrets"] if s in body]
        assert not leaked, (url, leaked)
    assert portal_state(advertiser) == before
    # Its own key was created, on its own account.
    assert AdvertiserAPIKey.objects.filter(advertiser__name="Rival Advertiser").count() == 1


def test_it_would_notice_a_leak(portal_data, owner, campaign):
    """The same visits as the owner find the values: the checks above can fail."""
    seen = ""
    for method, url, _payload, _name in route_cases(portal_data, campaign.public_id):
        if method == "get":
            seen += owner.get(url).content.decode()
    missing = [s for s in portal_data["secrets"] if s not in seen]
    assert not missing


def test_it_lets_members_read_and_test_but_not_manage_keys(portal_data, advertiser, campaign):
    client = signed_in(get_user_model().objects.get(username="adv-member"))
    for method, url, payload, name in route_cases(portal_data, campaign.public_id):
        before = portal_state(advertiser)["keys"]
        response = getattr(client, method)(url, payload)
        if name in ("advertiser_key_create", "advertiser_key_revoke"):
            assert response.status_code == 403, url
            assert portal_state(advertiser)["keys"] == before
        else:
            assert response.status_code in (200, 302), url
    assert (
        "Only owners can create or revoke keys"
        in client.get(reverse("advertiser_keys")).content.decode()
    )


def test_it_routes_each_kind_of_account_to_its_own_area(portal_data, adv_owner):
    advertiser_client = signed_in(adv_owner)
    assert advertiser_client.get("/")["Location"] == reverse("advertiser_home")
    # The login page's default destination is the dashboard: it sends them on.
    assert advertiser_client.get(reverse("dashboard"))["Location"] == reverse("advertiser_home")
    assert advertiser_client.get(reverse("conversions"))["Location"] == reverse("advertiser_home")
    publisher_client = signed_in(get_user_model().objects.get(username="owner-a"))
    assert publisher_client.get("/")["Location"] == reverse("dashboard")
    assert publisher_client.get(reverse("advertiser_home")).status_code == 403


def test_it_signs_an_advertiser_in_through_the_one_login_page(portal_data):
    client = Client()
    response = client.post(
        reverse("login"), {"username": "adv-owner", "password": "pw-adv-owner"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("advertiser_home")
    assert "Your campaigns" in response.content.decode()


# --- Campaigns and snippets -----------------------------------------------------------------


def test_it_lists_only_the_advertisers_campaigns(owner, campaign, rival):
    body = owner.get(reverse("advertiser_home")).content.decode()
    assert campaign.public_id in body and "2.50 EUR" in body
    assert "Rival campaign" not in body


def test_it_fills_the_snippets_with_the_site_and_campaign_never_a_secret(
    owner, campaign, api_key, settings
):
    settings.SITE_URL = "https://track.example"
    body = owner.get(reverse("advertiser_integration")).content.decode()
    assert "https://track.example/api/v1/conversions" in body
    assert "https://track.example/postback?token=YOUR_POSTBACK_TOKEN" in body
    assert campaign.public_id in body and "ROUNDTRIP_API_KEY" in body
    for marker in ("snippet-curl", "snippet-python", "snippet-php", "snippet-pixel"):
        assert marker in body
    assert api_key not in body
    assert api_key.split("_")[2] not in body  # not even the lookup part


@pytest.mark.django_db(transaction=True)
def test_the_snippets_record_conversions_as_pasted(live_server, link, api_key, capsys):
    """The Python and curl snippets, with only the key, the click id and the order id filled
    in, record conversions on a running server."""
    snippets = integration_snippets(live_server.url, link.campaign)
    first = click_stored(link=link, spid="snippet-py", user_agent=BROWSER)
    namespace: dict = {}
    exec(snippets["python"], namespace)  # noqa: S102 - our own snippet, the point of the test
    os.environ["ROUNDTRIP_API_KEY"] = api_key
    try:
        namespace["report_conversion"](first.click_id, "order-py")
    finally:
        del os.environ["ROUNDTRIP_API_KEY"]
    assert capsys.readouterr().out.startswith("201 ")
    assert Conversion.objects.get(txn_id="order-py").payout == Decimal("2.50")
    second = click_stored(link=link, spid="snippet-curl", user_agent=BROWSER)
    script = snippets["curl"].replace("CLICK_ID", second.click_id).replace("ORDER_ID", "order-sh")
    answer = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "ROUNDTRIP_API_KEY": api_key},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(answer.stdout)["txn_id"] == "order-sh"
    assert Conversion.objects.filter(txn_id="order-sh").exists()


# --- Keys: reveal once, revoke for real -----------------------------------------------------


def test_it_shows_a_new_key_once_and_keeps_only_its_hash(owner, advertiser):
    response = owner.post(reverse("advertiser_key_create"), {"kind": "api", "name": "server"})
    assert response.status_code == 302
    page = owner.get(reverse("advertiser_keys"))
    assert page["Cache-Control"] == "no-store"
    plaintext = re.search(r'id="new-key">(rt_adv_[A-Za-z0-9_-]+)<', page.content.decode()).group(1)
    key = AdvertiserAPIKey.objects.get(advertiser=advertiser, name="server")
    assert plaintext.startswith(f"rt_adv_{key.lookup}_") and key.kind == "api"
    assert plaintext not in key.digest and len(key.digest) == 64
    again = owner.get(reverse("advertiser_keys")).content.decode()
    assert plaintext not in again and key.lookup in again


def test_it_creates_a_postback_token(owner, advertiser):
    owner.post(reverse("advertiser_key_create"), {"kind": "token", "name": "pixel"})
    body = owner.get(reverse("advertiser_keys")).content.decode()
    assert re.search(r'id="new-key">rt_tok_', body)
    assert AdvertiserAPIKey.objects.get(advertiser=advertiser, name="pixel").kind == "token"


def test_it_refuses_a_bad_key_form_with_a_form_error(owner, advertiser):
    response = owner.post(reverse("advertiser_key_create"), {"kind": "root", "name": "x" * 300})
    assert response.status_code == 200
    assert not AdvertiserAPIKey.objects.filter(advertiser=advertiser).exists()


def test_revoking_a_key_stops_it_on_the_real_api_at_once(owner, advertiser, click):
    owner.post(reverse("advertiser_key_create"), {"kind": "api", "name": "server"})
    body = owner.get(reverse("advertiser_keys")).content.decode()
    plaintext = re.search(r'id="new-key">(rt_adv_[A-Za-z0-9_-]+)<', body).group(1)
    api = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}

    def send(txn: str):
        payload = json.dumps({"click_id": click.click_id, "txn_id": txn})
        return api.post("/api/v1/conversions", payload, content_type="application/json", **auth)

    assert send("before-revoke").status_code == 201  # the key is now in the process cache
    lookup = AdvertiserAPIKey.objects.get(name="server").lookup
    assert owner.post(reverse("advertiser_key_revoke", args=[lookup])).status_code == 302
    assert AdvertiserAPIKey.objects.get(name="server").revoked_at is not None
    assert send("after-revoke").status_code == 401
    assert not Conversion.objects.filter(txn_id="after-revoke").exists()


def test_revoking_a_token_stops_the_get_postback(owner, advertiser, click, postback_token):
    def pixel(txn: str):
        return Client().get(
            "/postback", {"token": postback_token, "click_id": click.click_id, "txn_id": txn}
        )

    assert pixel("p1").status_code == 201
    lookup = postback_token.split("_")[2]
    owner.post(reverse("advertiser_key_revoke", args=[lookup]))
    assert pixel("p2").status_code == 401


def test_it_answers_404_for_another_advertisers_key(owner, rival):
    key, _ = advertiser_key_create(advertiser=rival)
    assert owner.post(reverse("advertiser_key_revoke", args=[key.lookup])).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


# --- The conversion log ---------------------------------------------------------------------


def outcomes_page(client: Client, query: str = "") -> str:
    response = client.get(reverse("advertiser_conversions") + query)
    assert response.status_code == 200
    return response.content.decode()


def test_it_shows_accepted_duplicates_status_changes_and_refusals_with_reasons(
    owner, advertiser, campaign, link, click, api_key
):
    api = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}

    def send(fields: dict):
        payload = json.dumps(fields)
        return api.post("/api/v1/conversions", payload, content_type="application/json", **auth)

    assert send({"click_id": click.click_id, "txn_id": "order-1"}).status_code == 201
    assert send({"click_id": click.click_id, "txn_id": "order-1"}).status_code == 200
    reversed_ = {"click_id": click.click_id, "txn_id": "order-1", "status": "reversed"}
    assert send(reversed_).status_code == 200
    old = Click.objects.create(
        link=link,
        publisher=link.publisher,
        campaign=campaign,
        created_at=timezone.now() - timedelta(days=8),
    )
    assert send({"click_id": old.click_id, "txn_id": "order-old"}).status_code == 422
    # Unknown clicks are answered 404 and not logged: they name nothing of the advertiser's.
    assert send({"click_id": "nope", "txn_id": "x"}).status_code == 404

    rows = list(IntakeOutcome.objects.filter(advertiser=advertiser).order_by("created_at", "pk"))
    assert [(r.outcome, r.status, r.reason) for r in rows] == [
        ("accepted", "approved", ""),
        ("duplicate", "approved", ""),
        ("status_changed", "reversed", ""),
        ("refused", "", "expired"),
    ]
    body = outcomes_page(owner)
    for text in ("Accepted", "Duplicate", "Status change", "Refused", "order-old"):
        assert text in body
    assert escape(reason_label("expired")) in body
    assert "older than the campaign&#x27;s attribution window" in body


def test_it_shows_what_a_guard_decided(owner, advertiser, campaign, click):
    campaign.min_seconds_to_convert = 3600
    campaign.save()
    conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="fast")
    body = outcomes_page(owner)
    assert escape(reason_label(Conversion.Reason.TOO_FAST)) in body
    assert "rejected" in body


def test_it_reads_every_reason_from_the_models_choices(owner, advertiser, campaign):
    """A reason added to either model (e.g. a cap) shows with its label, no change here."""
    reasons = [*Conversion.Reason.choices, *ConversionRefusal.Reason.choices]
    for value, _ in reasons:
        IntakeOutcome.objects.create(
            advertiser=advertiser,
            campaign=campaign,
            outcome=IntakeOutcome.Outcome.REFUSED,
            reason=value,
            click_id=f"c-{value}",
            event="conversion",
        )
    body = outcomes_page(owner)
    for value, label in reasons:
        assert escape(label) in body, value


def test_it_pages_and_filters_by_campaign_and_day_in_a_time_zone(owner, advertiser, campaign):
    other = Campaign.objects.create(
        advertiser=advertiser, name="Second", landing_url="https://a.example/?c=[click_id]"
    )
    now = timezone.now()
    for n in range(55):
        IntakeOutcome.objects.create(
            advertiser=advertiser,
            campaign=campaign,
            outcome=IntakeOutcome.Outcome.ACCEPTED,
            click_id=f"click-{n:03d}",
            event="conversion",
            created_at=now - timedelta(minutes=n),
        )
    IntakeOutcome.objects.create(
        advertiser=advertiser,
        campaign=other,
        outcome=IntakeOutcome.Outcome.DUPLICATE,
        click_id="click-second",
        event="conversion",
        created_at=now - timedelta(days=3),
    )
    response = owner.get(reverse("advertiser_conversions") + "?tz=Asia/Kolkata")
    rows = response.context["rows"]
    assert len(rows) == 50 and rows[0]["row"].click_id == "click-000"
    assert "Received (Asia/Kolkata)" in response.content.decode()
    next_url = response.context["next_url"]
    assert "tz=Asia%2FKolkata" in next_url
    rest = owner.get(reverse("advertiser_conversions") + next_url).context["rows"]
    assert [r["row"].click_id for r in rest] == [
        *(f"click-{n:03d}" for n in range(50, 55)),
        "click-second",
    ]
    only_second = owner.get(
        reverse("advertiser_conversions") + f"?campaign={other.public_id}"
    ).context["rows"]
    assert [r["row"].click_id for r in only_second] == ["click-second"]
    day = timezone.localdate(now - timedelta(days=3))
    by_day = owner.get(
        reverse("advertiser_conversions") + f"?start={day}&end={day}&tz=UTC"
    ).context["rows"]
    assert [r["row"].click_id for r in by_day] == ["click-second"]


def test_it_answers_bad_filters_with_a_form_error(owner, rival):
    rival_campaign = Campaign.objects.get(advertiser=rival)
    for query in (
        f"?campaign={rival_campaign.public_id}",
        "?start=9999-12-31&end=9999-12-31",
        "?start=2026-02-01&end=2026-01-01",
        "?start=not-a-day",
        "?after=garbage",
    ):
        response = owner.get(reverse("advertiser_conversions") + query)
        assert response.status_code == 200, query


def test_a_cursor_only_moves_within_the_advertisers_own_rows(owner, rival, advertiser, campaign):
    rival_campaign = Campaign.objects.get(advertiser=rival)
    IntakeOutcome.objects.create(
        advertiser=rival,
        campaign=rival_campaign,
        outcome=IntakeOutcome.Outcome.ACCEPTED,
        click_id="rival-click",
        event="conversion",
    )
    cursor = OUTCOME_LOG.encode(timezone.now() + timedelta(days=1), 2**62)
    body = outcomes_page(owner, f"?after={cursor}")
    assert "rival-click" not in body


# --- The test conversion --------------------------------------------------------------------


def test_a_test_conversion_goes_through_the_intake_and_pays_no_real_publisher(
    owner, advertiser, campaign, publisher, link, receiver
):
    # Publisher A has a callback on every approved conversion of the campaign.
    CallbackTemplate.objects.create(publisher=publisher, url_template=f"{receiver.base_url}/cb")
    response = owner.post(
        reverse("advertiser_test_conversion"), {"campaign": campaign.public_id, "event": "Sale"}
    )
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("advertiser_conversions"))
    outcome = IntakeOutcome.objects.get(advertiser=advertiser)
    assert (outcome.outcome, outcome.status, outcome.is_test, outcome.event) == (
        "accepted",
        "approved",
        True,
        "sale",
    )
    conversion = outcome.conversion
    house = Publisher.objects.get(public_id=portal_services.TEST_PUBLISHER_PUBLIC_ID)
    assert conversion.publisher == house and house.status == Publisher.Status.PAUSED
    assert conversion.payout == Decimal(0) and conversion.txn_id.startswith("test-")
    assert conversion.click.user_agent == BROWSER
    assert not Postback.objects.exists()  # no publisher called back
    assert not Conversion.objects.filter(publisher=publisher).exists()
    assert not Membership.objects.filter(publisher=house).exists()
    # The house publisher's link takes no real visitor's click.
    house_link = TrackingLink.objects.get(publisher=house, campaign=campaign)
    assert Client().get(f"/click?ref={house_link.code}").status_code == 404

    page = owner.get(response["Location"])
    body = page.content.decode()
    assert "pill-test" in body and outcome.click_id in body
    assert "Test conversion on Campaign: Accepted, status approved" in body


def test_a_test_conversion_shows_a_guards_decision(owner, advertiser, campaign):
    campaign.min_seconds_to_convert = 60
    campaign.save()
    owner.post(
        reverse("advertiser_test_conversion"),
        {"campaign": campaign.public_id, "event": "conversion"},
    )
    outcome = IntakeOutcome.objects.get(advertiser=advertiser)
    assert (outcome.status, outcome.reason, outcome.is_test) == ("rejected", "too_fast", True)


def test_a_test_conversion_refuses_another_advertisers_campaign(owner, rival):
    rival_campaign = Campaign.objects.get(advertiser=rival)
    response = owner.post(
        reverse("advertiser_test_conversion"),
        {"campaign": rival_campaign.public_id, "event": "conversion"},
    )
    assert response.status_code == 302
    assert not Conversion.objects.exists() and not IntakeOutcome.objects.exists()


# --- Admin and demo -------------------------------------------------------------------------


def test_staff_add_an_advertiser_user_in_the_admin(admin_client, advertiser, publisher):
    account = user("new-adv")
    url = reverse("admin:tracking_advertiseruser_add")
    response = admin_client.post(
        url, {"user": account.pk, "advertiser": advertiser.pk, "role": "owner"}
    )
    assert response.status_code == 302, response.content
    assert AdvertiserUser.objects.get(user=account).advertiser == advertiser
    # An account on a publisher's team can't also be an advertiser user ...
    member = get_user_model().objects.get(username="member-a")
    response = admin_client.post(
        url, {"user": member.pk, "advertiser": advertiser.pk, "role": "member"}
    )
    assert response.status_code == 200 and "publisher" in response.content.decode()
    assert not AdvertiserUser.objects.filter(user=member).exists()
    # ... nor the other way round.
    response = admin_client.post(
        reverse("admin:publishers_membership_add"),
        {"user": account.pk, "publisher": publisher.pk, "role": "member"},
    )
    assert response.status_code == 200 and "advertiser user" in response.content.decode()
    assert not Membership.objects.filter(user=account).exists()


def test_an_advertiser_user_cannot_join_a_publishers_team(publisher, adv_owner):
    adv_owner.email = "adv@example.com"
    adv_owner.save()
    invitation = member_invite(publisher=publisher, email="adv@example.com")
    with pytest.raises(TeamError, match="advertiser"):
        invitation_accept(invitation=invitation, user=adv_owner)
    assert not Membership.objects.filter(user=adv_owner).exists()


def test_the_demo_seed_creates_an_advertiser_login(db, capsys, settings):
    settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS = True
    call_command("seed_demo")
    banner = capsys.readouterr().out
    assert "/advertiser/" in banner and "advertiser / roundtrip-advertiser" in banner
    account = AdvertiserUser.objects.get(user__username="advertiser")
    assert account.role == "owner" and account.advertiser.name == "Demo Advertiser"
    client = Client()
    signed = client.post(
        reverse("login"), {"username": "advertiser", "password": "roundtrip-advertiser"}
    )
    assert signed.status_code == 302
    assert client.get(reverse("advertiser_home")).status_code == 200
