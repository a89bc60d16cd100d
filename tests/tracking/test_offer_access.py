"""Offer access (tracking/access.py): public, approval-required and private campaigns; the
click refused for a publisher that may not run the offer; requests, decisions and grants; and
links created only to offers a publisher may run."""

import pytest

from publishers.models import AuditEvent
from tests.tracking.helpers import isolate_tracking_state
from tracking import access, clickbuffer
from tracking.access import AccessState
from tracking.cache import process_caches_clear
from tracking.models import (
    Campaign,
    Click,
    ClickRejection,
    Creative,
    OfferAccess,
    SmartAd,
    TrackingLink,
)

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


@pytest.fixture(autouse=True)
def isolated(settings):
    clean_up = isolate_tracking_state(settings)
    yield
    clean_up()


def make_campaign(advertiser, name: str, access_mode: str) -> Campaign:
    return Campaign.objects.create(
        advertiser=advertiser,
        name=name,
        landing_url="https://advertiser.example/go?click_id=[click_id]",
        access=access_mode,
    )


def visit(client, code: str):
    return client.get(
        "/click", {"ref": code, "spid": "s-1"}, REMOTE_ADDR="203.0.113.7", HTTP_USER_AGENT=BROWSER
    )


def states(publisher) -> dict[str, str]:
    return {offer.campaign.name: offer.state for offer in access.offers_list(publisher)}


def test_a_link_to_an_offer_not_approved_is_refused_with_its_reason(client, advertiser, publisher):
    campaign = make_campaign(advertiser, "Gated", Campaign.Access.APPROVAL)
    # Staff made the link before the offer was gated (or made it anyway in the shell).
    link = TrackingLink.objects.create(publisher=publisher, campaign=campaign, code="gated1")

    response = visit(client, link.code)
    assert response.status_code == 403
    assert response["X-Roundtrip-Refused"] == "offer_not_approved"
    assert "Location" not in response and b"offer_not_approved" in response.content
    clickbuffer.clicks_flush_all()
    assert not Click.objects.exists()
    rejection = ClickRejection.objects.get(publisher=publisher)
    assert (rejection.reason, rejection.count) == ("offer_not_approved", 1)
    assert rejection.get_reason_display() == "Offer not approved for this publisher"

    access.offer_access_request(publisher=publisher, public_id=campaign.public_id)
    process_caches_clear()
    assert visit(client, link.code).status_code == 403  # asked is not approved

    row = OfferAccess.objects.get()
    assert access.offer_access_decide(access_ids=[row.pk], approve=True) == 1
    process_caches_clear()  # CLICKS_LINK_CACHE_SECONDS later
    assert visit(client, link.code).status_code == 302

    access.offer_access_decide(access_ids=[row.pk], approve=False, note="Traffic quality")
    process_caches_clear()
    assert visit(client, link.code).status_code == 403
    assert ClickRejection.objects.get(publisher=publisher).count == 3


def test_the_answer_is_cached_like_links(client, advertiser, publisher, django_assert_num_queries):
    campaign = make_campaign(advertiser, "Gated", Campaign.Access.APPROVAL)
    link = TrackingLink.objects.create(publisher=publisher, campaign=campaign, code="gated2")
    OfferAccess.objects.create(publisher=publisher, campaign=campaign, status="approved")
    assert visit(client, link.code).status_code == 302
    # Link, access and policy all come from the process's caches: the click makes no query.
    with django_assert_num_queries(0):
        assert visit(client, link.code).status_code == 302


def test_public_offers_need_nothing(client, link, publisher, advertiser):
    assert link.campaign.access == Campaign.Access.PUBLIC
    assert visit(client, link.code).status_code == 302
    assert states(publisher)["Campaign"] == AccessState.PUBLIC
    with pytest.raises(access.AccessRefused) as refused:
        access.offer_access_request(publisher=publisher, public_id=link.campaign.public_id)
    assert refused.value.code == "no_approval_needed"


def test_private_offers_are_seen_only_by_publishers_they_are_granted_to(
    advertiser, publisher, other_publisher
):
    private = make_campaign(advertiser, "Private", Campaign.Access.PRIVATE)
    make_campaign(advertiser, "Gated", Campaign.Access.APPROVAL)
    assert states(publisher) == {"Gated": "not_requested"}
    with pytest.raises(access.OfferNotFound):
        access.offer_access_request(publisher=publisher, public_id=private.public_id)
    with pytest.raises(access.OfferNotFound):
        access.tracking_link_create(publisher=publisher, public_id=private.public_id)

    access.offer_access_grant(publisher=publisher, campaign=private, note="Welcome")
    assert states(publisher) == {"Gated": "not_requested", "Private": "approved"}
    assert states(other_publisher) == {"Gated": "not_requested"}
    with pytest.raises(access.OfferNotFound):
        access.offer_access_request(publisher=other_publisher, public_id=private.public_id)
    link = access.tracking_link_create(publisher=publisher, public_id=private.public_id)
    assert link.campaign == private and link.publisher == publisher


def test_a_request_is_asked_decided_and_asked_again(advertiser, publisher, other_publisher):
    gated = make_campaign(advertiser, "Gated", Campaign.Access.APPROVAL)
    offer = access.offer_access_request(
        publisher=publisher, public_id=gated.public_id, message="  Email list, 40k DE  "
    )
    assert offer.state == "requested" and not offer.can_run and not offer.can_request
    row = OfferAccess.objects.get(publisher=publisher)
    assert (row.status, row.message) == ("requested", "Email list, 40k DE")
    # Another publisher's request is its own row: A's is untouched by it.
    access.offer_access_request(publisher=other_publisher, public_id=gated.public_id)
    assert OfferAccess.objects.count() == 2

    access.offer_access_decide(access_ids=[row.pk], approve=False, note="Not this quarter")
    offer = access.offer_for_publisher(publisher, gated.public_id)
    assert (offer.state, offer.note, offer.can_request) == ("rejected", "Not this quarter", True)
    assert states(other_publisher)["Gated"] == "requested"  # and C never sees A's note

    offer = access.offer_access_request(publisher=publisher, public_id=gated.public_id)
    row.refresh_from_db()
    assert (offer.state, row.status, row.decision_note, row.decided_at) == (
        "requested",
        "requested",
        "",
        None,
    )
    actions = list(AuditEvent.objects.filter(publisher=publisher).values_list("action", flat=True))
    assert sorted(actions) == sorted(
        ["offer.access_requested", "offer.access_decided", "offer.access_requested"]
    )


def test_asking_again_never_undoes_an_approval(advertiser, publisher):
    gated = make_campaign(advertiser, "Gated", Campaign.Access.APPROVAL)
    OfferAccess.objects.create(publisher=publisher, campaign=gated, status="approved")
    with pytest.raises(access.AccessRefused):
        access.offer_access_request(publisher=publisher, public_id=gated.public_id)
    assert OfferAccess.objects.get().status == "approved"


def test_links_are_created_only_to_offers_the_publisher_may_run(advertiser, publisher):
    gated = make_campaign(advertiser, "Gated", Campaign.Access.APPROVAL)
    with pytest.raises(access.AccessRefused) as refused:
        access.tracking_link_create(publisher=publisher, public_id=gated.public_id)
    assert refused.value.code == "offer_not_approved"
    assert not TrackingLink.objects.exists()
    access.offer_access_grant(publisher=publisher, campaign=gated)
    link = access.tracking_link_create(
        publisher=publisher, public_id=gated.public_id, name="newsletter", default_placement="top"
    )
    assert (link.name, link.default_placement, link.is_active) == ("newsletter", "top", True)
    assert AuditEvent.objects.filter(publisher=publisher, action="link.created").count() == 1


def test_a_paused_offer_is_not_listed(advertiser, publisher):
    gated = make_campaign(advertiser, "Gated", Campaign.Access.APPROVAL)
    gated.status = Campaign.Status.PAUSED
    gated.save()
    assert states(publisher) == {}
    with pytest.raises(access.OfferNotFound):
        access.offer_access_request(publisher=publisher, public_id=gated.public_id)


def test_a_smart_ad_shows_only_offers_the_publisher_may_run(client, advertiser, link, publisher):
    gated = make_campaign(advertiser, "Gated", Campaign.Access.APPROVAL)
    Creative.objects.create(campaign=gated, name="Gated ad", headline="Gated headline")
    Creative.objects.create(campaign=link.campaign, name="Open ad", headline="Open headline")
    unit = SmartAd.objects.create(name="Unit", slots=2)
    unit.campaigns.add(gated, link.campaign)

    def shown() -> str:
        response = client.get(
            "/smart",
            {"ref": link.code, "smart_ad_id": unit.pk, "spid": "s"},
            HTTP_USER_AGENT=BROWSER,
        )
        assert response.status_code == 200
        return response.content.decode()

    html = shown()
    assert "Open headline" in html and "Gated headline" not in html
    access.offer_access_grant(publisher=publisher, campaign=gated)
    process_caches_clear()
    html = shown()
    assert "Open headline" in html and "Gated headline" in html
