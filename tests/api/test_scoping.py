"""Tenant isolation: every route, called with another publisher's key, reveals nothing.

The table names every route of the publisher API; a route added without a row fails
`test_it_covers_every_route`. Routes that name an object answer 404; collection routes answer
as if publisher A's data did not exist; actions change nothing of A's.
"""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, get_resolver
from django.utils import timezone

from postbacks import health
from postbacks.models import Postback
from publishers.api.base import PublisherScopedView
from publishers.api.conversions import conversion_list
from publishers.models import CallbackTemplate
from tests.api.conftest import SPID
from tracking.models import Campaign, ConversionCap, OfferAccess, PayoutTerm

pytestmark = pytest.mark.django_db


@dataclass
class Route:
    name: str  # URL name
    method: str
    path: Callable  # world -> path
    params: Callable = lambda w: {}
    body: Callable = lambda w: None
    nothing: Callable | None = None  # (response) -> bool, for collection routes; None: 404
    prepare: Callable = lambda w: None  # world -> None: A's state that makes the action real
    # What A's own key gets for the same request (the control).
    own: tuple[int, ...] = (200, 202, 204)


def a_private_offer(world) -> str:
    """A private offer staff opened to A only; its id."""
    offer, _ = Campaign.objects.get_or_create(
        advertiser=world.click.campaign.advertiser,
        name="a-private-offer",
        defaults={"landing_url": "https://advertiser.example/p", "access": "private"},
    )
    OfferAccess.objects.get_or_create(publisher=world.publisher, campaign=offer, status="approved")
    return offer.public_id


def no_private_offer(response) -> bool:
    names = {offer["name"] for offer in response.json()["results"]}
    return response.status_code == 200 and "a-private-offer" not in names


def payout_rules_for_a(world) -> None:
    """A's own term and cap on its campaign: what C must not see."""
    campaign = world.click.campaign
    PayoutTerm.objects.create(
        campaign=campaign, publisher=world.publisher, kind="fixed", amount=Decimal("3")
    )
    ConversionCap.objects.create(
        campaign=campaign, publisher=world.publisher, period="daily", max_conversions=5
    )


def empty_results(response) -> bool:
    return response.status_code == 200 and response.json()["results"] == []


def today() -> str:
    return timezone.localdate().isoformat()


ROUTES = [
    Route("api-conversions", "get", lambda w: "/api/v1/conversions", nothing=empty_results),
    Route(
        "api-conversions",
        "get",
        lambda w: "/api/v1/conversions",
        params=lambda w: {"click_id": w.click.click_id},
        nothing=empty_results,
    ),
    Route("api-click", "get", lambda w: f"/api/v1/clicks/{w.click.click_id}"),
    Route(
        "api-trace",
        "get",
        lambda w: "/api/v1/trace",
        params=lambda w: {"spid": SPID},
        nothing=lambda r: r.status_code == 200 and r.json()["clicks"] == [],
    ),
    Route("api-postbacks", "get", lambda w: "/api/v1/postbacks", nothing=empty_results),
    Route(
        "api-postbacks-replay",
        "post",
        lambda w: "/api/v1/postbacks/replay",
        body=lambda w: {"from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"},
        nothing=lambda r: r.status_code == 202 and r.json()["matched"] == 0,
    ),
    Route(
        "api-postbacks-replay",
        "post",
        lambda w: "/api/v1/postbacks/replay",
        body=lambda w: {
            "from": "2000-01-01T00:00:00Z",
            "to": "2999-01-01T00:00:00Z",
            "callback_id": w.template.public_id,
        },
        nothing=lambda r: r.status_code == 400,
    ),
    Route("api-postback", "get", lambda w: f"/api/v1/postbacks/{w.failed.event_id}"),
    Route("api-postback-retry", "post", lambda w: f"/api/v1/postbacks/{w.failed.event_id}/retry"),
    Route("api-callbacks", "get", lambda w: "/api/v1/callbacks", nothing=empty_results),
    Route("api-callback", "get", lambda w: f"/api/v1/callbacks/{w.template.public_id}"),
    Route(
        "api-callback",
        "patch",
        lambda w: f"/api/v1/callbacks/{w.template.public_id}",
        body=lambda w: {"is_active": False},
    ),
    Route("api-callback", "delete", lambda w: f"/api/v1/callbacks/{w.template.public_id}"),
    Route("api-callback-test", "post", lambda w: f"/api/v1/callbacks/{w.template.public_id}/test"),
    Route(
        "api-callback-resume",
        "post",
        lambda w: f"/api/v1/callbacks/{w.template.public_id}/resume",
        prepare=lambda w: health.endpoint_pause([w.template.pk], reason="failing"),
    ),
    Route(
        "api-stats",
        "get",
        lambda w: "/api/v1/stats",
        params=lambda w: {"from": today(), "to": today(), "group_by": "placement"},
        nothing=lambda r: r.status_code == 200 and r.json()["rows"] == [],
    ),
    Route(
        "api-offers",
        "get",
        lambda w: "/api/v1/offers",
        nothing=no_private_offer,
        prepare=a_private_offer,
    ),
    Route(
        "api-offer-access-request",
        "post",
        lambda w: f"/api/v1/offers/{a_private_offer(w)}/access-request",
        body=lambda w: {"message": "let me in"},
        # A may already run it: nothing to ask for.
        own=(409,),
    ),
    Route(
        "api-offer-links",
        "post",
        lambda w: f"/api/v1/offers/{a_private_offer(w)}/links",
        body=lambda w: {"name": "c's link"},
        own=(201,),
    ),
    Route(
        "api-payouts",
        "get",
        lambda w: "/api/v1/payouts",
        nothing=empty_results,
        prepare=lambda w: payout_rules_for_a(w),
    ),
    Route(
        "api-reconciliation",
        "get",
        lambda w: "/api/v1/reconciliation",
        params=lambda w: {"date": today()},
        nothing=lambda r: r.status_code == 200 and r.json()["rows"] == [],
    ),
]


@pytest.mark.parametrize(
    "route", ROUTES, ids=[f"{r.method.upper()} {r.name} {i}" for i, r in enumerate(ROUTES)]
)
def test_it_hides_publisher_a_from_publisher_c(api, other_api, world, receiver, route):
    route.prepare(world)
    active_before = CallbackTemplate.objects.get(pk=world.template.pk).is_active
    path, params, body = route.path(world), route.params(world), route.body(world)
    call = getattr(other_api, route.method)
    response = call(path, params) if route.method == "get" else call(path, body, format="json")
    if route.nothing is None:
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"
    else:
        assert route.nothing(response), response.content
    # Nothing of A's changed or was sent.
    assert receiver.requests == []
    assert Postback.objects.get(pk=world.failed.pk).status == "failed"
    assert CallbackTemplate.objects.get(pk=world.template.pk).is_active is active_before
    # Control: the same request with A's key finds A's data, so the 404 above was scoping,
    # not a wrong path.
    own = getattr(api, route.method)
    mine = own(path, params) if route.method == "get" else own(path, body, format="json")
    assert mine.status_code in route.own, mine.content
    if route.nothing is not None and route.method == "get":
        assert not route.nothing(mine)


def test_it_covers_every_route():
    names = {
        pattern.name
        for pattern in get_resolver("publishers.api_urls").url_patterns
        if isinstance(pattern, URLPattern)
    }
    assert names == {route.name for route in ROUTES}


def test_it_builds_every_route_on_the_scoping_base():
    for pattern in get_resolver("publishers.api_urls").url_patterns:
        # /api/v1/conversions dispatches by method: the publishers' side is the list view.
        view = conversion_list if pattern.name == "api-conversions" else pattern.callback
        assert issubclass(view.view_class, PublisherScopedView), pattern.name


def test_it_refuses_a_view_that_overrides_get_queryset():
    with pytest.raises(ImproperlyConfigured, match="tenant scoping"):

        class Leaky(PublisherScopedView):
            def get_queryset(self):
                return Postback.objects.all()
