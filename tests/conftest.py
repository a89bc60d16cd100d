"""Shared fixtures: two tenants (publisher A with an owner and a member, publisher C with an
owner), an advertiser with a campaign and credentials, a local HTTP receiver."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from config.redis import get_redis
from publishers.models import CallbackTemplate, Membership, Publisher
from publishers.services import api_key_create
from tests.receiver import Receiver
from tracking import clickbuffer
from tracking.cache import process_caches_clear
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    Campaign,
    Creative,
    SmartAd,
    TrackingLink,
)
from tracking.services import advertiser_key_create


def click_buffer_wipe() -> None:
    client = get_redis()
    if client is None:
        return
    client.delete(clickbuffer.STREAM)
    keys = list(client.scan_iter("roundtrip:click:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(autouse=True)
def production_state_fresh():
    """The click buffer and the per-process caches are on, as in production (tests/settings.py);
    each test starts with them empty, so no test sees what another one read or clicked."""
    process_caches_clear()
    click_buffer_wipe()


@pytest.fixture
def buffered(settings):
    """The click buffer's Redis client, flushing batches of 50. Clicks wait there until a
    flush (`clickbuffer.clicks_flush_all()`), as in production until beat's flusher runs."""
    settings.CLICKS_BUFFER_BATCH = 50
    return get_redis()


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop(hold=False)


@pytest.fixture
def publisher(db) -> Publisher:
    pub = Publisher.objects.create(name="Publisher A")
    user_model = get_user_model()
    owner = user_model.objects.create_user("owner-a", password="pw-owner-a")
    member = user_model.objects.create_user("member-a", password="pw-member-a")
    Membership.objects.create(publisher=pub, user=owner, role=Membership.Role.OWNER)
    Membership.objects.create(publisher=pub, user=member, role=Membership.Role.MEMBER)
    return pub


@pytest.fixture
def other_publisher(db) -> Publisher:
    pub = Publisher.objects.create(name="Publisher C")
    owner = get_user_model().objects.create_user("owner-c", password="pw-owner-c")
    Membership.objects.create(publisher=pub, user=owner, role=Membership.Role.OWNER)
    return pub


@pytest.fixture
def advertiser(db) -> Advertiser:
    return Advertiser.objects.create(name="Advertiser")


@pytest.fixture
def campaign(advertiser) -> Campaign:
    return Campaign.objects.create(
        advertiser=advertiser,
        name="Campaign",
        landing_url="https://advertiser.example/landing?click_id=[click_id]&s=[spid]",
        default_payout=Decimal("2.50"),
        currency="EUR",
        attribution_window=timedelta(days=7),
    )


@pytest.fixture
def creative(campaign) -> Creative:
    return Creative.objects.create(campaign=campaign, name="Banner")


@pytest.fixture
def link(publisher, campaign) -> TrackingLink:
    return TrackingLink.objects.create(
        publisher=publisher, campaign=campaign, code="linka", default_placement="sidebar"
    )


@pytest.fixture
def travel_smart_ad(advertiser) -> SmartAd:
    """A smart ad showing both creatives of the advertiser's "Travel" campaign."""
    travel = Campaign.objects.create(
        advertiser=advertiser,
        name="Travel",
        landing_url="https://travel.example/go?click_id=[click_id]&kw=[keyword]",
    )
    Creative.objects.create(campaign=travel, name="Flights", headline="Cheap flights")
    Creative.objects.create(campaign=travel, name="Hotels", headline="Hotels")
    unit = SmartAd.objects.create(name="Sidebar", width=300, height=250, slots=2)
    unit.campaigns.add(travel)
    return unit


@pytest.fixture
def api_key(advertiser) -> str:
    return advertiser_key_create(advertiser=advertiser, kind=AdvertiserAPIKey.Kind.API)[1]


@pytest.fixture
def postback_token(advertiser) -> str:
    return advertiser_key_create(advertiser=advertiser, kind=AdvertiserAPIKey.Kind.POSTBACK_TOKEN)[
        1
    ]


@pytest.fixture
def publisher_key(publisher) -> str:
    return api_key_create(publisher=publisher)[1]


@pytest.fixture
def template(publisher, receiver) -> CallbackTemplate:
    return CallbackTemplate.objects.create(
        publisher=publisher,
        url_template=f"{receiver.base_url}/cb?id=[spid]&p=[payout]&e=[event_id]",
    )


# --- Dashboard (publishers/views) ------------------------------------------------------------


def _signed_in(client, username: str):
    client.force_login(get_user_model().objects.get(username=username))
    return client


@pytest.fixture
def owner_client(client, publisher):
    """Signed in as the owner of publisher A."""
    return _signed_in(client, "owner-a")


@pytest.fixture
def member_client(client, publisher):
    """Signed in as a (non-owner) member of publisher A."""
    return _signed_in(client, "member-a")


@pytest.fixture
def outsider_client(client, other_publisher):
    """Signed in as the owner of publisher C: an outsider to A."""
    return _signed_in(client, "owner-c")


@pytest.fixture
def dashboard_data(publisher, other_publisher, advertiser, campaign, creative, link, receiver):
    """A's clicks, conversions, delivered/retrying postbacks and API key, C's own traffic,
    and rollups rebuilt for both (see tests/publishers/data.py)."""
    from tests.publishers.data import build_dashboard_data

    return build_dashboard_data(
        publisher=publisher,
        other=other_publisher,
        advertiser=advertiser,
        campaign=campaign,
        creative=creative,
        link=link,
        receiver=receiver,
    )
