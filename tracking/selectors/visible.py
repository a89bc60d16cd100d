"""What a publisher may see of the network's side: the offers it may run or ask for, the
campaigns it has a link to, their creatives and the smart ads that show them. One home for the
rules, read by reports, the dashboard's forms and pages, the API's serializers, link creation
and the click's access check (tracking/access.py)."""

from django.db.models import OuterRef, Q, QuerySet, Subquery

from publishers.models import Publisher
from tracking.models import Campaign, Creative, OfferAccess, SmartAd, TrackingLink


def campaigns_for_publisher(publisher: Publisher) -> QuerySet[Campaign]:
    """Campaigns the publisher has a link to: the only ones it may see, filter on or attach a
    callback to; another's is "does not exist". A semi-join, not a join: no duplicates to
    remove, so it also serves as a subquery."""
    return Campaign.objects.filter(
        pk__in=TrackingLink.objects.filter(publisher=publisher).values("campaign_id")
    )


def _approved_for(publisher: Publisher | int) -> QuerySet[OfferAccess]:
    return OfferAccess.objects.filter(publisher=publisher, status=OfferAccess.Status.APPROVED)


def campaigns_runnable_by(publisher: Publisher | int) -> QuerySet[Campaign]:
    """Campaigns the publisher may run, i.e. whose links work and to which it may create
    links: public ones, and the others once staff approved or granted its access. Paused
    campaigns included (their links are refused for being paused, not for access)."""
    return Campaign.objects.filter(
        Q(access=Campaign.Access.PUBLIC) | Q(pk__in=_approved_for(publisher).values("campaign_id"))
    )


def campaign_runnable(publisher: Publisher | int, campaign: Campaign) -> bool:
    """Whether the publisher may run `campaign` (the rule of `campaigns_runnable_by`); a
    public campaign costs no query."""
    if campaign.access == Campaign.Access.PUBLIC:
        return True
    return campaigns_runnable_by(publisher).filter(pk=campaign.pk).exists()


def offers_for_publisher(publisher: Publisher) -> QuerySet[Campaign]:
    """The offer list: active campaigns that are public or need approval, plus private ones
    staff opened to this publisher; each annotated with `access_status` (its OfferAccess
    status, None when it has none). Another publisher's private offer is not in it, nor
    anything of its requests."""
    mine = OfferAccess.objects.filter(publisher=publisher, campaign=OuterRef("pk"))
    return (
        Campaign.objects.filter(status=Campaign.Status.ACTIVE)
        .filter(
            Q(access__in=[Campaign.Access.PUBLIC, Campaign.Access.APPROVAL])
            | Q(pk__in=_approved_for(publisher).values("campaign_id"))
        )
        .annotate(
            access_status=Subquery(mine.values("status")[:1]),
            access_note=Subquery(mine.values("decision_note")[:1]),
        )
        .order_by("name", "pk")
    )


def creatives_for_publisher(publisher: Publisher) -> QuerySet[Creative]:
    return (
        Creative.objects.filter(campaign__in=campaigns_for_publisher(publisher))
        .select_related("campaign")
        .order_by("campaign__name", "name")
    )


def smart_ads_for_publisher(publisher: Publisher) -> QuerySet:
    """Active smart ads whose pool holds one of the publisher's campaigns: the units it can
    embed. (Smart ads are staff-managed; their id, name and size are not tenant data.)"""
    return (
        SmartAd.objects.filter(is_active=True, campaigns__in=campaigns_for_publisher(publisher))
        .distinct()
        .order_by("pk")
    )
