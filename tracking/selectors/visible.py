"""What a publisher may see of the network's side: the campaigns it has a link to, their
creatives and the smart ads that show them. One home for the rule, read by reports, the
dashboard's forms and the API's serializers."""

from django.db.models import QuerySet

from publishers.models import Publisher
from tracking.models import Campaign, Creative, SmartAd, TrackingLink


def campaigns_for_publisher(publisher: Publisher) -> QuerySet[Campaign]:
    """Campaigns the publisher has a link to: the only ones it may see, filter on or attach a
    callback to; another's is "does not exist". A semi-join, not a join: no duplicates to
    remove, so it also serves as a subquery."""
    return Campaign.objects.filter(
        pk__in=TrackingLink.objects.filter(publisher=publisher).values("campaign_id")
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
