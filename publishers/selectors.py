"""Reads for the publisher dashboard. Every function takes the publisher: tenant scoping is
not optional."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest

from postbacks.models import Postback
from publishers.keyset import Keyset
from publishers.models import (
    CallbackTemplate,
    Invitation,
    Membership,
    Publisher,
    PublisherAPIKey,
)
from tracking import caps, payouts
from tracking.models import AdvertiserUser, Campaign, PayoutTerm, TrackingLink
from tracking.selectors.visible import campaigns_for_publisher

# Session keys: the publisher a member of several teams chose, and the one a staff user views
# read-only (publisher public ids; checked again on every request).
SESSION_PUBLISHER = "dashboard.publisher"
SESSION_STAFF_VIEW = "dashboard.staff_view"


def memberships_for_user(user) -> QuerySet[Membership]:
    """Every team the user is on, oldest first: the dashboard's publisher switcher."""
    return (
        Membership.objects.select_related("publisher")
        .filter(user=user)
        .order_by("created_at", "pk")
    )


def is_advertiser_user(user) -> bool:
    """Whether the account signs in to an advertiser's portal (/advertiser/) instead."""
    return user.is_authenticated and AdvertiserUser.objects.filter(user=user).exists()


def membership_for_user(request: HttpRequest) -> Membership | None:
    """The signed-in user's membership: the publisher they chose (`SESSION_PUBLISHER`) while
    they are still on its team, else their first one; None when they have none."""
    memberships = memberships_for_user(request.user)
    chosen = request.session.get(SESSION_PUBLISHER)
    found = memberships.filter(publisher__public_id=chosen).first() if chosen else None
    return found or memberships.first()


def staff_viewed_publisher(request: HttpRequest) -> Publisher | None:
    """The publisher a staff user chose to view read-only, while they are staff."""
    chosen = request.session.get(SESSION_STAFF_VIEW)
    if not chosen or not request.user.is_staff:
        return None
    return Publisher.objects.filter(public_id=chosen).first()


def publishers_for_staff(query: str = "", *, limit: int = 100) -> QuerySet[Publisher]:
    """Publishers a staff user may pick to view: by name or public id, at most `limit`."""
    publishers = Publisher.objects.order_by("name", "pk")
    if query:
        publishers = publishers.filter(Q(name__icontains=query) | Q(public_id=query))
    return publishers[:limit]


def links_for_publisher(publisher: Publisher) -> QuerySet[TrackingLink]:
    return (
        TrackingLink.objects.filter(publisher=publisher)
        .select_related("campaign")
        .order_by("-is_active", "created_at", "pk")
    )


def templates_for_publisher(publisher: Publisher) -> QuerySet[CallbackTemplate]:
    return (
        CallbackTemplate.objects.filter(publisher=publisher)
        .select_related("campaign")
        .order_by("created_at", "pk")
    )


def template_for_publisher(publisher: Publisher, public_id: str) -> CallbackTemplate:
    """One of the publisher's templates; 404 for anyone else's."""
    template = templates_for_publisher(publisher).filter(public_id=public_id).first()
    if template is None:
        raise Http404("No such callback.")
    return template


def api_keys_for_publisher(publisher: Publisher) -> QuerySet[PublisherAPIKey]:
    return PublisherAPIKey.objects.filter(publisher=publisher).order_by("revoked_at", "-created_at")


def api_key_for_publisher(publisher: Publisher, lookup: str) -> PublisherAPIKey:
    key = PublisherAPIKey.objects.filter(publisher=publisher, lookup=lookup).first()
    if key is None:
        raise Http404("No such API key.")
    return key


def members_for_publisher(publisher: Publisher) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(publisher=publisher)
        .select_related("user")
        .order_by("created_at", "pk")
    )


def invitations_for_publisher(publisher: Publisher) -> QuerySet[Invitation]:
    """The team's open invitations (expired ones included, marked by their date)."""
    return Invitation.objects.filter(
        publisher=publisher, status=Invitation.Status.PENDING
    ).order_by("created_at", "pk")


def member_for_publisher(publisher: Publisher, username: str) -> Membership:
    membership = members_for_publisher(publisher).filter(user__username=username).first()
    if membership is None:
        raise Http404("No such team member.")
    return membership


# --- Deliveries -----------------------------------------------------------------------------

DELIVERY_STATES = {
    # Given up, or failed at least once and waiting for the next retry.
    "failing": Q(status=Postback.Status.FAILED) | Q(status=Postback.Status.PENDING, attempts__gt=0),
    # Not attempted yet.
    "pending": Q(status=Postback.Status.PENDING, attempts=0),
}


# Newest first; event ids are unique, so they break ties.
DELIVERY_LOG = Keyset("created_at", "event_id", descending=True)


def delivery_counts(publisher: Publisher) -> dict[str, int]:
    return Postback.objects.filter(publisher=publisher).aggregate(
        **{state: Count("pk", filter=condition) for state, condition in DELIVERY_STATES.items()}
    )


def deliveries(
    publisher: Publisher, *, state: str = "failing", cursor: str = "", limit: int = 50
) -> tuple[list[Postback], str]:
    """Postbacks in `state`, newest first (keyset on created_at, event_id), and the next
    page's cursor ("" at the end)."""
    rows = Postback.objects.filter(DELIVERY_STATES[state], publisher=publisher)
    page = DELIVERY_LOG.page(
        rows.select_related("conversion__click", "template"), cursor=cursor, limit=limit
    )
    return page.items, page.next_if_more


def postback_ids_for_publisher(publisher: Publisher, event_ids: list[str]) -> list[int]:
    """Primary keys of the publisher's postbacks among `event_ids`; others' are ignored."""
    return list(
        Postback.objects.filter(publisher=publisher, event_id__in=event_ids[:1000]).values_list(
            "pk", flat=True
        )
    )


def delivery_condition(states: list[str]) -> Q:
    """Postbacks in any of `states` (keys of DELIVERY_STATES)."""
    condition = Q()
    for state in states:
        condition |= DELIVERY_STATES[state]
    return condition


# --- Payout terms and caps ------------------------------------------------------------------


@dataclass(frozen=True)
class OfferTerms:
    """What a publisher earns on a campaign now, and the caps that concern it."""

    campaign: Campaign
    term: PayoutTerm | None  # None: the campaign's default (or what the advertiser sends)
    caps: list[caps.CapStatus]


def offer_terms_for_publisher(
    publisher: Publisher, *, at: datetime, campaigns: list[Campaign] | None = None
) -> dict[int, OfferTerms]:
    """{campaign id: OfferTerms} for the campaigns the publisher has a link to (or those of
    `campaigns`, which the caller read through the publisher): its own term, and the
    campaign's caps and its own, never another publisher's."""
    if campaigns is None:
        campaigns = list(campaigns_for_publisher(publisher).order_by("name", "pk"))
    ids = [campaign.pk for campaign in campaigns]
    terms = payouts.payout_terms_current(publisher_id=publisher.pk, campaign_ids=ids, at=at)
    status = caps.caps_status(publisher_id=publisher.pk, campaigns=campaigns, at=at)
    return {
        campaign.pk: OfferTerms(campaign, terms.get(campaign.pk), status.get(campaign.pk, []))
        for campaign in campaigns
    }
