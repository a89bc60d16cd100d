"""Dashboard test data: publisher A with clicks, conversions, postbacks (delivered, retrying,
failed) and an API key; publisher C with a little traffic of its own. Every value that belongs
to A is distinctive, so a test can assert that none of them leaks into C's pages."""

import math
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from postbacks import dispatch
from postbacks.dispatch import Lane
from postbacks.models import Postback
from publishers.models import CallbackTemplate, Publisher
from publishers.services import api_key_create, member_invite
from tests.receiver import Receiver
from tracking.models import Advertiser, Campaign, Click, Creative, TrackingLink
from tracking.rollups import stats_rebuild
from tracking.services import advertiser_key_create, conversion_record


@dataclass
class DashboardData:
    publisher: Publisher
    other: Publisher
    link: TrackingLink
    good_template: CallbackTemplate
    bad_template: CallbackTemplate
    clicks: list[Click]
    conversions: list = field(default_factory=list)
    postbacks: list[Postback] = field(default_factory=list)
    key_lookup: str = ""
    other_spid: str = "spid-c-own-1"
    # The advertiser's API key (the advertiser portal's routes name it).
    advertiser_key_lookup: str = ""
    receiver_url: str = ""

    def a_ids(self) -> list[str]:
        """Identifiers and values only publisher A may ever see."""
        ids = [
            self.publisher.public_id,
            self.publisher.name,
            self.publisher.signing_secret,
            self.good_template.webhook_secret,
            self.bad_template.webhook_secret,
            self.link.code,
            self.good_template.public_id,
            self.bad_template.public_id,
            "a-only-callback",
            self.key_lookup,
            "owner-a",
            "member-a",
            "a-secret-placement",
            "a-secret-keyword",
            "a-smart-77",
            "pending-a@example.com",
        ]
        ids += [c.click_id for c in self.clicks] + [c.spid for c in self.clicks]
        ids += [c.public_id for c in self.conversions]
        ids += [p.event_id for p in self.postbacks]
        return [i for i in ids if i]


def route_receiver(receiver: Receiver) -> None:
    """/fail answers 500, anything else 200 "ok"."""

    def respond(handler) -> None:
        failing = handler.path.startswith("/fail")
        body = b"boom" if failing else b"ok"
        handler.send_response(500 if failing else 200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    receiver.responder = respond


def build_dashboard_data(
    *,
    publisher: Publisher,
    other: Publisher,
    advertiser: Advertiser,
    campaign: Campaign,
    creative: Creative,
    link: TrackingLink,
    receiver: Receiver,
) -> DashboardData:
    route_receiver(receiver)
    now = timezone.now()
    good = CallbackTemplate.objects.create(
        publisher=publisher,
        name="a-only-callback",
        url_template=f"{receiver.base_url}/cb?id=[spid]&p=[payout]&e=[event_id]",
    )
    bad = CallbackTemplate.objects.create(
        publisher=publisher, url_template=f"{receiver.base_url}/fail?id=[spid]"
    )
    specs = [
        ("spid-a-alpha", "DE", "a-secret-placement", "", "", creative, 3),
        ("spid-a-alpha", "DE", "a-secret-placement", "", "", None, 2),
        ("spid-a-beta", "FR", "footer", "a-smart-77", "a-secret-keyword", creative, 1),
        ("spid-a-gamma", "US", "footer", "", "", None, 0),
    ]
    clicks = [
        Click.objects.create(
            link=link,
            publisher=publisher,
            campaign=campaign,
            creative=creative_obj,
            spid=spid,
            country=country,
            placement=placement,
            smart_ad_id=smart_ad,
            keyword=keyword,
            device="mobile",
            created_at=now - timedelta(hours=hours_ago),
        )
        for spid, country, placement, smart_ad, keyword, creative_obj, hours_ago in specs
    ]
    data = DashboardData(publisher, other, link, good, bad, clicks, receiver_url=receiver.base_url)
    for click, payout in ((clicks[0], Decimal("2.50")), (clicks[2], Decimal("4.00"))):
        outcome = conversion_record(
            advertiser=advertiser, click_id=click.click_id, payout=payout, txn_id=f"t-{click.pk}"
        )
        data.conversions.append(outcome.conversion)
        data.postbacks.extend(outcome.postbacks)
    dispatch.drain(Lane.RETRY, wait=math.inf, kicks=False)
    data.key_lookup = api_key_create(publisher=publisher, name="a-key")[0].lookup
    data.advertiser_key_lookup = advertiser_key_create(advertiser=advertiser)[0].lookup
    member_invite(publisher=publisher, email="pending-a@example.com")

    # Publisher C: its own link on the same campaign, one click, one conversion.
    other_link = TrackingLink.objects.create(publisher=other, campaign=campaign, code="linkc")
    other_click = Click.objects.create(
        link=other_link,
        publisher=other,
        campaign=campaign,
        spid=data.other_spid,
        country="IT",
        created_at=now - timedelta(hours=1),
    )
    conversion_record(advertiser=advertiser, click_id=other_click.click_id, txn_id="t-c")
    for pub in (publisher, other):
        stats_rebuild(publisher_id=pub.pk, start=now - timedelta(days=2), end=now)
    return data
