"""Money on real processes: click → conversion → payout terms and caps → the publisher's
callback carries the right `[payout]`.

gunicorn, a Celery worker and beat run as subprocesses (conftest.py); the publisher is an HTTP
receiver on 127.0.0.1. The demo publisher is on a 40 % revenue share and the campaign pays two
conversions a day; what the receiver gets is what the publisher would book.
"""

from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.utils import timezone

from publishers.models import CallbackTemplate
from tests.e2e.processes import wait_until
from tests.e2e.test_round_trip import click
from tracking.models import Campaign, ConversionCap, ConversionRefusal, PayoutTerm

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def report(base_url: str, api_key: str, click_id: str, txn_id: str, **fields) -> requests.Response:
    return requests.post(
        f"{base_url}/api/v1/conversions",
        json={"click_id": click_id, "txn_id": txn_id, **fields},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )


def callbacks(receiver) -> list[tuple[str, str, str]]:
    """(spid, payout, status) of every callback received, in order."""
    seen = []
    for request in list(receiver.requests):
        query = parse_qs(urlsplit(request.path).query)
        seen.append((query["spid"][0], query["payout"][0], query["status"][0]))
    return seen


def test_callbacks_carry_the_revshare_payout_zero_over_a_cap_and_corrections(
    roundtrip_stack, receiver, publisher, campaign, link, api_key
):
    PayoutTerm.objects.create(
        campaign=campaign,
        publisher=publisher,
        kind=PayoutTerm.Kind.REVSHARE,
        percent=Decimal("40"),
        effective_from=timezone.now() - timedelta(minutes=1),
    )
    campaign.cap_policy = Campaign.CapPolicy.ACCEPT_UNPAID
    campaign.time_zone = "Europe/Berlin"
    campaign.save()
    ConversionCap.objects.create(campaign=campaign, period="daily", max_conversions=2)
    CallbackTemplate.objects.create(
        publisher=publisher,
        url_template=f"{receiver.base_url}/cb?spid=[spid]&payout=[payout]&status=[status]",
    )
    base = roundtrip_stack.base_url

    with requests.Session() as session:
        clicks = {spid: click(session, base, link.code, spid) for spid in ("a", "b", "c", "d")}
    answers = {
        spid: report(base, api_key, clicks[spid], f"order-{spid}", revenue="10", payout="99")
        for spid in ("a", "b", "c")
    }
    assert [answers[s].status_code for s in "abc"] == [201, 201, 201]
    assert [answers[s].json()["payout"] for s in "abc"] == ["4.00", "4.00", "0.00"]
    assert answers["c"].json()["reason"] == "cap_reached"

    # The advertiser corrects order a's revenue: a new approved callback with the new payout.
    corrected = report(base, api_key, clicks["a"], "order-a", revenue="5")
    assert corrected.status_code == 200 and corrected.json()["payout"] == "2.00"

    # The campaign now refuses conversions over its cap: the advertiser is told which one.
    campaign.cap_policy = Campaign.CapPolicy.REJECT
    campaign.save()
    refused = report(base, api_key, clicks["d"], "order-d", revenue="10")
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert (error["code"], error["fields"]["cap_period"]) == ("cap_reached", ["daily"])
    assert "days in Europe/Berlin" in error["fields"]["cap"][0]
    assert ConversionRefusal.objects.get().reason == "cap_reached"

    def all_arrived() -> bool:
        roundtrip_stack.check_alive()
        return len(receiver.requests) >= 4

    wait_until(all_arrived, timeout=45, interval=0.2, what="four callbacks")
    assert sorted(callbacks(receiver)) == [
        ("a", "2.00", "approved"),
        ("a", "4.00", "approved"),
        ("b", "4.00", "approved"),
        ("c", "0.00", "approved"),
    ]
    event_ids = [r.headers.get("Roundtrip-Event-Id") for r in receiver.requests]
    assert len(set(event_ids)) == 4
