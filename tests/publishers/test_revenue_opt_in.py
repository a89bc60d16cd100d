"""`[revenue]` shows the network's margin: a publisher's callbacks get it only when the network
turned `share_revenue` on for that publisher; otherwise it is empty in real postbacks, test
postbacks, the live preview and the placeholder reference."""

from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from publishers.models import CallbackTemplate
from tracking.models import Click
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

TEMPLATE = "/cb?s=[spid]&p=[payout]&r=[revenue]"


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


@pytest.mark.parametrize(("shared", "expected"), [(False, ""), (True, "7.25")])
def test_a_postback_carries_revenue_only_when_shared(
    publisher, link, campaign, advertiser, receiver, shared, expected
):
    publisher.share_revenue = shared
    publisher.save(update_fields=["share_revenue"])
    CallbackTemplate.objects.create(publisher=publisher, url_template=receiver.base_url + TEMPLATE)
    click = Click.objects.create(link=link, publisher=publisher, campaign=campaign, spid="s-1")
    outcome = conversion_record(
        advertiser=advertiser,
        click_id=click.click_id,
        payout=Decimal("2.50"),
        revenue=Decimal("7.25"),
    )
    query = _query(outcome.postbacks[0].url)
    assert query["r"] == [expected] and query["p"] == ["2.50"]


def test_the_dashboard_never_shows_an_unshared_revenue(member_client, publisher, receiver):
    preview = member_client.post(
        reverse("callback_preview"), {"url_template": "https://pub.example" + TEMPLATE}
    ).json()
    assert _query(preview["url"])["r"] == [""]
    test = member_client.post(
        reverse("callback_test"),
        {"url_template": receiver.base_url + TEMPLATE},
        HTTP_ACCEPT="application/json",
    ).json()
    assert _query(test["request"]["url"])["r"] == [""]
    page = member_client.get(reverse("callback_new")).content.decode()
    assert "doesn&#x27;t share it: always empty" in page

    publisher.share_revenue = True
    publisher.save(update_fields=["share_revenue"])
    shared = member_client.post(
        reverse("callback_preview"), {"url_template": "https://pub.example" + TEMPLATE}
    ).json()
    assert _query(shared["url"])["r"] == ["4.00"]
