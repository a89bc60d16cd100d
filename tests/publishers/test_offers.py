"""Offers through the dashboard, the publisher API and the admin: the list with each offer's
access state, a request, staff's decision, a link to an offer the publisher may run — and
owner / member / outsider checks on every route."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from publishers.models import AuditEvent
from publishers.services import api_key_create
from tests.tracking.helpers import isolate_tracking_state
from tracking.cache import process_caches_clear
from tracking.models import Campaign, CampaignPolicy, OfferAccess, TrackingLink

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated(settings):
    settings.API_RATE_LIMIT = "100000/min"
    clean_up = isolate_tracking_state(settings)
    yield
    clean_up()


@pytest.fixture
def offers(advertiser, campaign):
    """The fixture's public campaign, one that needs approval, and two private ones."""

    def make(name: str, mode: str) -> Campaign:
        return Campaign.objects.create(
            advertiser=advertiser,
            name=name,
            landing_url="https://advertiser.example/go?click_id=[click_id]",
            access=mode,
            currency="EUR",
        )

    return {
        "public": campaign,
        "gated": make("Gated", Campaign.Access.APPROVAL),
        "private_a": make("Private for A", Campaign.Access.PRIVATE),
        "private_c": make("Private for C", Campaign.Access.PRIVATE),
    }


@pytest.fixture
def granted(offers, publisher, other_publisher):
    OfferAccess.objects.create(publisher=publisher, campaign=offers["private_a"], status="approved")
    OfferAccess.objects.create(
        publisher=other_publisher, campaign=offers["private_c"], status="approved"
    )
    return offers


def signed_in(username: str) -> Client:
    """A client of its own (the suite's `*_client` fixtures share one)."""
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client


def api(publisher) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(publisher=publisher)[1]}")
    return client


# --- Dashboard ------------------------------------------------------------------------------


def test_the_offers_page_lists_what_the_publisher_may_run_or_ask_for(owner_client, granted):
    response = owner_client.get("/dashboard/offers/")
    assert response.status_code == 200
    shown = {o.campaign.name: o.state for o in response.context["offers"]}
    assert shown == {"Campaign": "public", "Gated": "not_requested", "Private for A": "approved"}
    html = response.content.decode()
    assert "Private for C" not in html and granted["private_c"].public_id not in html
    assert "Request access" in html and "Create link" in html
    assert "2.50 EUR" in html  # the default payout says its currency


def test_a_member_requests_access_and_staff_approve_it(granted, publisher, admin_client):
    member_client = signed_in("member-a")
    gated = granted["gated"]
    response = member_client.post(
        f"/dashboard/offers/{gated.public_id}/request/", {"message": "Newsletter, 40k"}
    )
    assert response.status_code == 302
    row = OfferAccess.objects.get(publisher=publisher, campaign=gated)
    assert (row.status, row.message) == ("requested", "Newsletter, 40k")
    event = AuditEvent.objects.get(publisher=publisher, action="offer.access_requested")
    assert event.via == "dashboard" and event.actor.username == "member-a"

    # Staff approve it with the admin's action.
    response = admin_client.post(
        "/admin/tracking/offeraccess/",
        {"action": "approve", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    row.refresh_from_db()
    assert row.status == "approved" and row.decided_by.username == "root"
    decided = AuditEvent.objects.get(publisher=publisher, action="offer.access_decided")
    assert decided.via == "admin" and decided.details["to"] == "approved"

    response = member_client.post(
        f"/dashboard/offers/{gated.public_id}/links/", {"name": "news", "default_placement": ""}
    )
    assert response.status_code == 302 and response["Location"] == "/dashboard/links/"
    link = TrackingLink.objects.get(campaign=gated)
    assert link.publisher == publisher and link.name == "news"
    assert link.code in member_client.get("/dashboard/links/").content.decode()


def test_no_link_to_an_offer_not_approved(owner_client, granted):
    response = owner_client.post(f"/dashboard/offers/{granted['gated'].public_id}/links/", {})
    assert response.status_code == 403
    assert not TrackingLink.objects.filter(campaign=granted["gated"]).exists()


def test_outsiders_cant_see_request_or_link_anothers_private_offer(outsider_client, granted):
    private_a = granted["private_a"]
    html = outsider_client.get("/dashboard/offers/").content.decode()
    assert "Private for A" not in html and "Private for C" in html
    for action in ("request", "links"):
        response = outsider_client.post(f"/dashboard/offers/{private_a.public_id}/{action}/", {})
        assert response.status_code == 404, action
    assert (
        not OfferAccess.objects.filter(campaign=private_a)
        .exclude(publisher__name="Publisher A")
        .exists()
    )
    assert not TrackingLink.objects.filter(campaign=private_a).exists()


def test_an_outsider_cant_act_on_anothers_request(granted, publisher, other_publisher):
    owner_client, outsider_client = signed_in("owner-a"), signed_in("owner-c")
    gated = granted["gated"]
    owner_client.post(f"/dashboard/offers/{gated.public_id}/request/", {"message": "A's words"})
    row = OfferAccess.objects.get(publisher=publisher, campaign=gated)
    OfferAccess.objects.filter(pk=row.pk).update(status="rejected", decision_note="A's note")
    # C asking for the same offer makes C's own request; A's row, message and note are A's.
    outsider_client.post(f"/dashboard/offers/{gated.public_id}/request/", {"message": "C"})
    row.refresh_from_db()
    assert (row.status, row.message, row.decision_note) == ("rejected", "A's words", "A's note")
    assert OfferAccess.objects.get(publisher=other_publisher, campaign=gated).message == "C"
    assert "A's note" not in outsider_client.get("/dashboard/offers/").content.decode()
    # Nor create a link on A's behalf: links belong to the caller's publisher.
    assert (
        outsider_client.post(f"/dashboard/offers/{gated.public_id}/links/", {}).status_code == 403
    )


def test_a_bad_form_is_a_400_and_changes_nothing(owner_client, granted):
    gated = granted["gated"]
    response = owner_client.post(
        f"/dashboard/offers/{gated.public_id}/request/", {"message": "x" * 501}
    )
    assert response.status_code == 400
    assert not OfferAccess.objects.filter(campaign=gated).exists()
    response = owner_client.post(
        f"/dashboard/offers/{granted['public'].public_id}/links/", {"name": "a\x00b"}
    )
    assert response.status_code == 400
    assert TrackingLink.objects.filter(campaign=granted["public"]).count() == 0


def test_the_staff_view_is_read_only(client, granted, publisher):
    staff = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    client.post("/dashboard/staff/view/", {"publisher": publisher.public_id})
    assert client.get("/dashboard/offers/").status_code == 200
    response = client.post(f"/dashboard/offers/{granted['gated'].public_id}/request/", {})
    assert response.status_code == 403
    assert not OfferAccess.objects.filter(campaign=granted["gated"]).exists()


def test_anonymous_visitors_are_sent_to_sign_in(client, granted):
    for url in ("/dashboard/offers/", f"/dashboard/offers/{granted['gated'].public_id}/request/"):
        response = client.post(url) if "request" in url else client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- API ------------------------------------------------------------------------------------


def test_the_api_lists_offers_with_their_access_state(granted, publisher, other_publisher):
    body = api(publisher).get("/api/v1/offers").json()
    rows = {row["name"]: row for row in body["results"]}
    assert set(rows) == {"Campaign", "Gated", "Private for A"}
    assert rows["Gated"] == {
        "id": granted["gated"].public_id,
        "name": "Gated",
        "default_payout": "0.00",
        "currency": "EUR",
        "access": "approval",
        "access_state": "not_requested",
        "can_run": False,
        "decision_note": "",
    }
    assert (rows["Campaign"]["access_state"], rows["Campaign"]["can_run"]) == ("public", True)
    assert rows["Private for A"]["access_state"] == "approved"
    others = {row["name"] for row in api(other_publisher).get("/api/v1/offers").json()["results"]}
    assert others == {"Campaign", "Gated", "Private for C"}


def test_the_api_requests_access_and_creates_links(granted, publisher):
    client = api(publisher)
    gated = granted["gated"]
    response = client.post(f"/api/v1/offers/{gated.public_id}/links", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "offer_not_approved"

    response = client.post(
        f"/api/v1/offers/{gated.public_id}/access-request", {"message": "SEO"}, format="json"
    )
    assert response.status_code == 200 and response.json()["access_state"] == "requested"
    event = AuditEvent.objects.get(publisher=publisher, action="offer.access_requested")
    assert event.via == "api"

    response = client.post(
        f"/api/v1/offers/{granted['public'].public_id}/access-request", {}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_approval_needed"

    response = client.post(
        f"/api/v1/offers/{granted['public'].public_id}/links",
        {"name": "api link", "default_placement": "footer"},
        format="json",
    )
    assert response.status_code == 201
    link = TrackingLink.objects.get(name="api link")
    assert response.json()["code"] == link.code and link.default_placement == "footer"
    assert response.json()["url"].endswith(f"/click?ref={link.code}&spid=YOUR_SPID")


def test_the_api_answers_404_for_anothers_private_offer(granted, other_publisher):
    client = api(other_publisher)
    private_a = granted["private_a"].public_id
    for action in ("access-request", "links"):
        response = client.post(f"/api/v1/offers/{private_a}/{action}", {}, format="json")
        assert response.status_code == 404, action
        assert response.json()["error"]["code"] == "not_found"
    assert OfferAccess.objects.filter(publisher=other_publisher).count() == 1  # its own grant


def test_the_api_refuses_a_bad_body(granted, publisher):
    response = api(publisher).post(
        f"/api/v1/offers/{granted['gated'].public_id}/access-request",
        {"message": "x" * 501},
        format="json",
    )
    assert response.status_code == 400 and "message" in response.json()["error"]["fields"]


# --- Admin ----------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client):
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    client.force_login(staff)
    return client


def test_staff_grant_a_private_offer_from_the_admin(admin_client, granted, other_publisher):
    private_a = granted["private_a"]
    response = admin_client.post(
        "/admin/tracking/offeraccess/add/",
        {"campaign": private_a.pk, "publisher": other_publisher.pk, "decision_note": "Trial"},
        follow=True,
    )
    assert response.status_code == 200
    row = OfferAccess.objects.get(publisher=other_publisher, campaign=private_a)
    assert (row.status, row.decision_note, row.decided_by.username) == ("approved", "Trial", "root")
    assert AuditEvent.objects.filter(
        publisher=other_publisher, action="offer.access_decided"
    ).exists()
    names = {o["name"] for o in api(other_publisher).get("/api/v1/offers").json()["results"]}
    assert "Private for A" in names


def test_staff_cant_link_a_publisher_to_an_offer_it_may_not_run(
    admin_client, granted, other_publisher
):
    response = admin_client.post(
        "/admin/tracking/trackinglink/add/",
        {
            "code": "staffmade",
            "publisher": other_publisher.pk,
            "campaign": granted["gated"].pk,
            "is_active": "on",
        },
    )
    assert response.status_code == 200  # the form again, with its error
    assert "grant its access under Offer access first" in response.content.decode()
    assert not TrackingLink.objects.filter(code="staffmade").exists()


def test_staff_set_a_campaigns_policy_and_access_in_the_admin(admin_client, granted):
    campaign = granted["public"]
    page = admin_client.get(f"/admin/tracking/campaign/{campaign.pk}/change/")
    assert page.status_code == 200 and "bot and fraud policy" in page.content.decode().lower()
    form = {
        "advertiser": campaign.advertiser_id,
        "name": campaign.name,
        "landing_url": campaign.landing_url,
        "default_payout": "2.50",
        "currency": "EUR",
        "attribution_window": "7 00:00:00",
        "min_seconds_to_convert": "10",
        "status": "active",
        "access": "approval",
        "policy-TOTAL_FORMS": "1",
        "policy-INITIAL_FORMS": "0",
        "policy-MIN_NUM_FORMS": "0",
        "policy-MAX_NUM_FORMS": "1",
        "policy-0-bot_action": "flag",
        "policy-0-blocked_ips": "203.0.113.0/24, 198.51.100.7",
        "policy-0-max_clicks_per_ip_per_minute": "5",
        "time_zone": "UTC",
        "cap_policy": "reject",
        **{
            f"{prefix}-{part}": value
            for prefix in ("creatives", "payout_terms", "caps")
            for part, value in (
                ("TOTAL_FORMS", "0"),
                ("INITIAL_FORMS", "0"),
                ("MIN_NUM_FORMS", "0"),
                ("MAX_NUM_FORMS", "1000"),
            )
        },
    }
    bad = admin_client.post(
        f"/admin/tracking/campaign/{campaign.pk}/change/",
        {**form, "policy-0-blocked_ips": "not-an-ip"},
    )
    assert bad.status_code == 200 and "is not an IP address or CIDR block" in bad.content.decode()
    assert not CampaignPolicy.objects.exists()
    response = admin_client.post(f"/admin/tracking/campaign/{campaign.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    row = CampaignPolicy.objects.get(campaign=campaign)
    assert (row.bot_action, row.blocked_ips, row.max_clicks_per_ip_per_minute) == (
        "flag",
        "203.0.113.0/24\n198.51.100.7/32",
        5,
    )
    campaign.refresh_from_db()
    assert campaign.access == "approval"
    process_caches_clear()


def test_the_admin_pages_render(admin_client, granted, publisher):
    row = OfferAccess.objects.get(publisher=publisher)
    for url in (
        "/admin/tracking/offeraccess/",
        "/admin/tracking/offeraccess/?status__exact=requested",
        f"/admin/tracking/offeraccess/{row.pk}/change/",
        "/admin/tracking/offeraccess/add/",
        "/admin/tracking/campaign/add/",
        "/admin/tracking/campaign/?access__exact=private",
    ):
        assert admin_client.get(url).status_code == 200, url
    # On an existing row the pair is fixed; the note is staff's to edit (and audited).
    response = admin_client.post(
        f"/admin/tracking/offeraccess/{row.pk}/change/", {"decision_note": "Top partner"}
    )
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.status, row.decision_note) == ("approved", "Top partner")
    assert AuditEvent.objects.filter(publisher=publisher, action="staff.edited").exists()
