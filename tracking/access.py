"""Offer access: who may run a campaign that is not public, asked for and decided.

A campaign is public (every publisher may run it), needs approval (publishers see it and ask;
staff approve or reject in the admin) or is private (only publishers staff grant access to see
it). The rule of who may run what lives in tracking/selectors/visible.py; this module applies
it where it matters:

- on every click (`click_access_allowed`): a link whose publisher may not run the campaign is
  refused (`offer_not_approved`). A public campaign costs nothing; for the others the answer is
  cached per process like links (`CLICKS_LINK_CACHE_SECONDS`), so a click makes no query;
- when a publisher creates a link (`tracking_link_create`): only to an offer it may run;
- the writes: a publisher's request, staff's decision or direct grant, each in the audit trail.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from publishers.audit import Action, Actor, audit_record
from publishers.models import Publisher
from tracking.cache import ProcessCache
from tracking.models import Campaign, OfferAccess, TrackingLink
from tracking.selectors.visible import campaign_runnable, offers_for_publisher

# (campaign id, publisher id) → may run it. Bounded like the link cache.
_ACCESS_CACHE = ProcessCache(100_000)


def click_access_allowed(campaign: Campaign, publisher_id: int) -> bool:
    """Whether a click of this publisher on this campaign may go through (cached; during a
    database outage the last answer is served like a cached link, else the database error
    propagates and the click endpoint answers 503)."""
    if campaign.access == Campaign.Access.PUBLIC:
        return True
    return _ACCESS_CACHE.load(
        (campaign.pk, publisher_id),
        lambda: campaign_runnable(publisher_id, campaign),
        ttl=settings.CLICKS_LINK_CACHE_SECONDS,
    )


# --- What a publisher sees of an offer ------------------------------------------------------


class AccessState:
    """An offer's state for one publisher, as the dashboard and the API name it."""

    PUBLIC = "public"  # no approval needed: links work
    APPROVED = "approved"  # approved or granted by staff: links work
    REQUESTED = "requested"  # asked, waiting for staff
    REJECTED = "rejected"  # staff said no (the note says why); it may ask again
    NOT_REQUESTED = "not_requested"  # needs approval, not asked yet

    ALL = (PUBLIC, APPROVED, REQUESTED, REJECTED, NOT_REQUESTED)
    RUNNABLE = (PUBLIC, APPROVED)


def access_state(offer: Campaign) -> str:
    """The state of an offer from `offers_for_publisher` (annotated with `access_status`)."""
    status = getattr(offer, "access_status", None)
    if status == OfferAccess.Status.APPROVED:
        return AccessState.APPROVED
    if offer.access == Campaign.Access.PUBLIC:
        return AccessState.PUBLIC
    if status == OfferAccess.Status.REQUESTED:
        return AccessState.REQUESTED
    if status == OfferAccess.Status.REJECTED:
        return AccessState.REJECTED
    return AccessState.NOT_REQUESTED


@dataclass(frozen=True)
class Offer:
    campaign: Campaign
    state: str
    note: str  # staff's note on a decision ("" when none)

    @property
    def can_run(self) -> bool:
        return self.state in AccessState.RUNNABLE

    @property
    def can_request(self) -> bool:
        return self.state in (AccessState.NOT_REQUESTED, AccessState.REJECTED)


def offers_list(publisher: Publisher) -> list[Offer]:
    """The publisher's offer list with each offer's state."""
    return [
        Offer(campaign=offer, state=access_state(offer), note=offer.access_note or "")
        for offer in offers_for_publisher(publisher).select_related("advertiser")
    ]


class OfferNotFound(Exception):
    """No offer with that id the publisher may see (another's private offer included)."""


def offer_for_publisher(publisher: Publisher, public_id: str) -> Offer:
    """One offer of the publisher's list by its public id; raises OfferNotFound."""
    offer = offers_for_publisher(publisher).filter(public_id=public_id[:32]).first()
    if offer is None:
        raise OfferNotFound(public_id)
    return Offer(campaign=offer, state=access_state(offer), note=offer.access_note or "")


# --- Writes ---------------------------------------------------------------------------------


class AccessRefused(Exception):
    """The publisher may not do this with this offer; `code` names why (API error code)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def offer_access_request(
    *, publisher: Publisher, public_id: str, message: str = "", actor: Actor | None = None
) -> Offer:
    """Ask for access to an approval-required offer. Asking again while waiting only updates
    the message; after a rejection it reopens the request. A public or already approved offer
    needs none (AccessRefused `no_approval_needed`); an offer the publisher can't see is
    OfferNotFound."""
    offer = offer_for_publisher(publisher, public_id)
    if offer.can_run:
        raise AccessRefused("no_approval_needed", "You may already run this offer.")
    now = timezone.now()
    message = message.strip()[:500]
    with transaction.atomic():
        try:
            with transaction.atomic():
                OfferAccess.objects.create(
                    campaign=offer.campaign,
                    publisher=publisher,
                    message=message,
                    requested_at=now,
                    created_at=now,
                )
        except IntegrityError:
            # A row exists (requested or rejected: approved ones were answered above). Staff
            # may have approved it in between: never turn an approval back into a request.
            OfferAccess.objects.filter(publisher=publisher, campaign=offer.campaign).exclude(
                status=OfferAccess.Status.APPROVED
            ).update(
                status=OfferAccess.Status.REQUESTED,
                message=message,
                requested_at=now,
                decided_at=None,
                decided_by=None,
                decision_note="",
            )
        audit_record(
            publisher=publisher,
            actor=actor,
            action=Action.OFFER_ACCESS_REQUESTED,
            target=offer.campaign,
            details={"offer": offer.campaign.public_id, "message": message[:200]},
        )
    return offer_for_publisher(publisher, public_id)


def offer_access_decide(
    *,
    access_ids: Iterable[int],
    approve: bool,
    note: str | None = None,
    actor: Actor | None = None,
) -> int:
    """Staff's decision on access rows (requested ones, or a change of mind on decided ones):
    approve or reject, with a note shown to the publisher (None keeps each row's own).
    Returns how many changed. Clicks follow within CLICKS_LINK_CACHE_SECONDS."""
    status = OfferAccess.Status.APPROVED if approve else OfferAccess.Status.REJECTED
    user = actor.user if actor is not None else None
    changed = 0
    for pk in access_ids:
        with transaction.atomic():
            row = (
                # Lock the row only, not the campaign and publisher it is read with.
                OfferAccess.objects.select_for_update(of=("self",))
                .select_related("campaign", "publisher")
                .filter(pk=pk)
                .exclude(status=status)
                .first()
            )
            if row is None:
                continue
            before = row.status
            row.status = status
            row.decided_at = timezone.now()
            row.decided_by = user if user is not None and user.is_authenticated else None
            if note is not None:
                row.decision_note = note.strip()[:255]
            row.save(update_fields=["status", "decided_at", "decided_by", "decision_note"])
            audit_record(
                publisher=row.publisher,
                actor=actor,
                action=Action.OFFER_ACCESS_DECIDED,
                target=row.campaign,
                details={
                    "offer": row.campaign.public_id,
                    "from": before,
                    "to": status,
                    "note": row.decision_note,
                },
            )
            changed += 1
    return changed


def offer_access_grant(
    *, publisher: Publisher, campaign: Campaign, note: str = "", actor: Actor | None = None
) -> OfferAccess:
    """Staff open an offer (private or approval-required) to a publisher directly."""
    row, _ = OfferAccess.objects.get_or_create(publisher=publisher, campaign=campaign)
    offer_access_decide(access_ids=[row.pk], approve=True, note=note, actor=actor)
    row.refresh_from_db()
    return row


def tracking_link_create(
    *,
    publisher: Publisher,
    public_id: str,
    name: str = "",
    default_placement: str = "",
    actor: Actor | None = None,
) -> TrackingLink:
    """A new link of the publisher to an offer it may run; AccessRefused
    (`offer_not_approved`) for one it may only see, OfferNotFound for any other."""
    offer = offer_for_publisher(publisher, public_id)
    if not offer.can_run:
        raise AccessRefused(
            "offer_not_approved",
            "This offer needs approval: request access and wait for it to be approved.",
        )
    link = TrackingLink(
        publisher=publisher,
        campaign=offer.campaign,
        name=name.strip()[:200],
        default_placement=default_placement.strip()[:100],
    )
    link.full_clean()  # ValidationError for a name or placement it can't store
    with transaction.atomic():
        link.save(force_insert=True)
        audit_record(
            publisher=publisher,
            actor=actor,
            action=Action.LINK_CREATED,
            target=link,
            details={"offer": offer.campaign.public_id, "code": link.code},
        )
    return link
