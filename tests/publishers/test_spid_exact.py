"""A spid is matched exactly as the publisher sent it, leading and trailing spaces included,
in the dashboard's trace and conversion filter and in the API's `?spid=`: "x", " x" and "x "
are three different spids."""

from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse

from tracking.models import Click
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

SPIDS = ["x", " x", "x ", "\tx x\t", "  "]


@pytest.fixture
def spid_clicks(publisher, link, campaign, advertiser) -> dict[str, Click]:
    clicks = {}
    for spid in SPIDS:
        click = Click.objects.create(link=link, publisher=publisher, campaign=campaign, spid=spid)
        conversion_record(advertiser=advertiser, click_id=click.click_id)
        clicks[spid] = click
    return clicks


def test_it_traces_each_spid_exactly_on_the_dashboard(owner_client, spid_clicks):
    for spid, click in spid_clicks.items():
        response = owner_client.get(reverse("trace") + "?" + urlencode({"q": spid}))
        assert [c.click_id for c in response.context["trace"].clicks] == [click.click_id], spid
    # Our own ids are still found when pasted with spaces around them.
    click = spid_clicks["x"]
    response = owner_client.get(reverse("trace") + "?" + urlencode({"q": f" {click.click_id} "}))
    assert [c.click_id for c in response.context["trace"].clicks] == [click.click_id]


def test_it_filters_conversions_by_the_exact_spid_on_the_dashboard(owner_client, spid_clicks):
    for spid in SPIDS:
        response = owner_client.get(reverse("conversions") + "?" + urlencode({"spid": spid}))
        assert [c.click.spid for c in response.context["rows"]] == [spid], repr(spid)


def test_it_matches_the_exact_spid_in_the_api(publisher_key, spid_clicks, settings):
    settings.API_CONVERSIONS_SETTLE_SECONDS = 0  # list the conversions just recorded
    client = Client(HTTP_AUTHORIZATION=f"Bearer {publisher_key}")
    for spid, click in spid_clicks.items():
        listed = client.get("/api/v1/conversions?" + urlencode({"spid": spid})).json()
        assert [row["spid"] for row in listed["results"]] == [spid], repr(spid)
        traced = client.get("/api/v1/trace?" + urlencode({"spid": spid})).json()
        assert [c["click_id"] for c in traced["clicks"]] == [click.click_id], repr(spid)
