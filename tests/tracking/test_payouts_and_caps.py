"""Payout terms (fixed or revenue share, with history) and conversion caps (daily, monthly,
total, budgets; reject or accept unpaid) through the conversion intake, on real PostgreSQL."""

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postbacks import dispatch
from postbacks.models import Postback
from publishers.models import CallbackTemplate
from tests.tracking.helpers import click_stored
from tracking import caps
from tracking.models import (
    Campaign,
    CapCounter,
    Conversion,
    ConversionCap,
    ConversionRefusal,
    IntakeOutcome,
    PayoutTerm,
    TrackingLink,
)
from tracking.services import IntakeError, conversion_record

pytestmark = pytest.mark.django_db

BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)


@pytest.fixture(autouse=True)
def task_sent():
    with mock.patch.object(dispatch, "kick", return_value=True) as kick:
        yield kick


@pytest.fixture
def callback(publisher) -> CallbackTemplate:
    return CallbackTemplate.objects.create(
        publisher=publisher,
        url_template="https://pub.example/cb?s=[spid]&p=[payout]&c=[currency]&st=[status]",
    )


def new_click(link: TrackingLink, spid: str = "s1"):
    return click_stored(link=link, spid=spid, user_agent=BROWSER)


def post(api_key: str, fields: dict):
    return Client().post(
        "/api/v1/conversions",
        json.dumps(fields),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )


def term(campaign, publisher, *, kind, amount=None, percent=None, since=None) -> PayoutTerm:
    row = PayoutTerm(
        campaign=campaign,
        publisher=publisher,
        kind=kind,
        amount=amount,
        percent=percent,
        effective_from=since or timezone.now() - timedelta(days=1),
    )
    row.full_clean()
    row.save()
    return row


def payout_in_url(postback: Postback) -> str:
    return postback.url.split("&p=")[1].split("&")[0]


# --- Payout terms ---------------------------------------------------------------------------


def test_it_pays_a_fixed_term_whatever_the_advertiser_sends(
    api_key, campaign, publisher, link, callback
):
    term(campaign, publisher, kind=PayoutTerm.Kind.FIXED, amount=Decimal("1.75"))
    click = new_click(link)
    response = post(api_key, {"click_id": click.click_id, "payout": "9", "revenue": "20"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["payout"], body["currency"], body["reason"]) == ("1.75", "EUR", "")
    assert Conversion.objects.get().payout == Decimal("1.75")
    assert payout_in_url(Postback.objects.get()) == "1.75"


def test_it_pays_a_revenue_share_of_the_sent_or_default_revenue(
    advertiser, campaign, publisher, link, callback
):
    term(campaign, publisher, kind=PayoutTerm.Kind.REVSHARE, percent=Decimal("30"))
    sent = conversion_record(
        advertiser=advertiser, click_id=new_click(link, "a").click_id, revenue=Decimal("19.99")
    )
    assert sent.conversion.payout == Decimal("5.997")
    assert payout_in_url(sent.postbacks[0]) == "5.997"
    # No revenue sent: the campaign's default revenue; none at all: a share of nothing.
    campaign.default_revenue = Decimal("10")
    campaign.save()
    default = conversion_record(advertiser=advertiser, click_id=new_click(link, "b").click_id)
    assert (default.conversion.payout, default.conversion.revenue) == (Decimal(3), Decimal(10))
    campaign.default_revenue = None
    campaign.save()
    nothing = conversion_record(advertiser=advertiser, click_id=new_click(link, "c").click_id)
    assert nothing.conversion.payout == Decimal(0)


def test_terms_are_per_publisher_and_others_keep_the_campaign_default(
    advertiser, campaign, publisher, other_publisher, link
):
    term(campaign, publisher, kind=PayoutTerm.Kind.FIXED, amount=Decimal("4"))
    other_link = TrackingLink.objects.create(publisher=other_publisher, campaign=campaign)
    mine = conversion_record(advertiser=advertiser, click_id=new_click(link).click_id)
    theirs = conversion_record(advertiser=advertiser, click_id=new_click(other_link).click_id)
    assert mine.conversion.payout == Decimal(4)
    assert theirs.conversion.payout == campaign.default_payout == Decimal("2.50")


def test_a_new_term_supersedes_without_rewriting_the_past(
    advertiser, campaign, publisher, link, callback
):
    start = timezone.now() - timedelta(days=3)
    term(campaign, publisher, kind=PayoutTerm.Kind.FIXED, amount=Decimal("1"), since=start)
    old = conversion_record(
        advertiser=advertiser, click_id=new_click(link, "old").click_id, txn_id="OLD"
    )
    # A term can't start before a recorded conversion: it would rewrite what it earned.
    with pytest.raises(Exception, match="latest of them"):
        term(campaign, publisher, kind=PayoutTerm.Kind.REVSHARE, percent=Decimal("50"))
    term(
        campaign,
        publisher,
        kind=PayoutTerm.Kind.REVSHARE,
        percent=Decimal("50"),
        since=timezone.now(),
    )
    new = conversion_record(
        advertiser=advertiser,
        click_id=new_click(link, "new").click_id,
        txn_id="NEW",
        revenue=Decimal("8"),
    )
    assert new.conversion.payout == Decimal(4)
    old.conversion.refresh_from_db()
    assert old.conversion.payout == Decimal(1)
    # A correction of the old conversion's revenue is decided by the term of its own time
    # (fixed: still 1), so nothing changes and nothing is sent again.
    again = conversion_record(
        advertiser=advertiser,
        click_id=old.conversion.click.click_id,
        txn_id="OLD",
        revenue=Decimal("100"),
    )
    assert again.conversion.payout == Decimal(1) and again.conversion.revenue == Decimal(100)
    assert Postback.objects.filter(conversion=old.conversion).count() == 1


def test_a_term_row_can_hold_only_its_kinds_value():
    fixed = PayoutTerm(kind=PayoutTerm.Kind.FIXED, percent=Decimal(10))
    with pytest.raises(Exception, match="amount"):
        fixed.clean()
    share = PayoutTerm(kind=PayoutTerm.Kind.REVSHARE, percent=Decimal(101))
    with pytest.raises(Exception, match="percent"):
        share.full_clean(exclude=["campaign", "publisher"])


def test_a_corrected_revenue_recomputes_the_payout_and_fires_the_status_postback_again(
    api_key, campaign, publisher, link, callback
):
    term(campaign, publisher, kind=PayoutTerm.Kind.REVSHARE, percent=Decimal("25"))
    click = new_click(link)
    first = post(api_key, {"click_id": click.click_id, "txn_id": "T-1", "revenue": "40"})
    assert first.status_code == 201 and first.json()["payout"] == "10.00"
    corrected = post(api_key, {"click_id": click.click_id, "txn_id": "T-1", "revenue": "20"})
    assert corrected.status_code == 200, corrected.content
    body = corrected.json()
    assert (body["created"], body["payout"], body["revenue"]) == (False, "5.00", "20.00")
    rows = list(Postback.objects.order_by("revision"))
    assert [(r.conversion_status, r.revision, payout_in_url(r)) for r in rows] == [
        ("approved", 0, "10.00"),
        ("approved", 1, "5.00"),
    ]
    assert rows[0].event_id != rows[1].event_id
    # The same correction again is a plain repeat.
    same = post(api_key, {"click_id": click.click_id, "txn_id": "T-1", "revenue": "20"})
    assert same.status_code == 200 and Postback.objects.count() == 2


def test_a_status_change_recomputes_with_a_corrected_revenue(
    advertiser, campaign, publisher, link, callback
):
    term(campaign, publisher, kind=PayoutTerm.Kind.REVSHARE, percent=Decimal("10"))
    click = new_click(link)
    conversion_record(
        advertiser=advertiser,
        click_id=click.click_id,
        txn_id="T",
        revenue=Decimal(50),
        status="pending",
    )
    approved = conversion_record(
        advertiser=advertiser, click_id=click.click_id, txn_id="T", revenue=Decimal(30)
    )
    assert (approved.conversion.status, approved.conversion.payout) == ("approved", Decimal(3))
    # The template announces approved conversions: the approval goes out with the new payout.
    assert [(p.conversion_status, payout_in_url(p)) for p in Postback.objects.all()] == [
        ("approved", "3.00")
    ]


def test_without_a_term_a_sent_payout_corrects_and_no_payout_keeps_it(advertiser, link):
    click = new_click(link)
    conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="T", payout=Decimal(7))
    kept = conversion_record(
        advertiser=advertiser, click_id=click.click_id, txn_id="T", status="reversed"
    )
    assert (kept.conversion.status, kept.conversion.payout) == ("reversed", Decimal(7))
    fixed = conversion_record(
        advertiser=advertiser,
        click_id=click.click_id,
        txn_id="T",
        payout=Decimal(6),
        status="reversed",
    )
    assert fixed.conversion.payout == Decimal(6)


def test_a_term_campaign_refuses_another_currency(api_key, campaign, publisher, link):
    term(campaign, publisher, kind=PayoutTerm.Kind.FIXED, amount=Decimal(1))
    response = post(api_key, {"click_id": new_click(link).click_id, "currency": "USD"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "currency_mismatch"
    assert not Conversion.objects.exists()


# --- Caps -----------------------------------------------------------------------------------


def cap(campaign, *, period="daily", publisher=None, conversions=None, budget=None):
    row = ConversionCap(
        campaign=campaign,
        publisher=publisher,
        period=period,
        max_conversions=conversions,
        max_payout=budget,
    )
    row.full_clean()
    row.save()
    return row


def test_a_rejecting_campaign_refuses_over_its_cap_with_a_named_422(
    api_key, advertiser, campaign, link, callback
):
    cap(campaign, conversions=2)
    clicks = [new_click(link, f"s{i}") for i in range(3)]
    for i, click in enumerate(clicks[:2]):
        assert post(api_key, {"click_id": click.click_id, "txn_id": f"T{i}"}).status_code == 201
    response = post(api_key, {"click_id": clicks[2].click_id, "txn_id": "T2"})
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "cap_reached"
    assert error["fields"]["cap_scope"] == ["campaign"]
    assert error["fields"]["cap_period"] == ["daily"]
    assert "daily cap of 2 conversions for the whole campaign" in error["message"]
    assert "days in UTC" in error["fields"]["cap"][0]
    refusal = ConversionRefusal.objects.get()
    assert (refusal.reason, refusal.txn_id, refusal.click_id) == (
        "cap_reached",
        "T2",
        clicks[2].click_id,
    )
    assert Conversion.objects.count() == 2 and Postback.objects.count() == 2
    # The advertiser's log (its portal) lists the refusal with the reason.
    logged = IntakeOutcome.objects.get(txn_id="T2")
    assert (logged.outcome, logged.reason) == ("refused", "cap_reached")
    # Sent again: refused again, counted as another attempt.
    assert post(api_key, {"click_id": clicks[2].click_id, "txn_id": "T2"}).status_code == 422
    assert ConversionRefusal.objects.get().attempts == 2
    # A repeat of a conversion recorded before the cap filled is still answered as one.
    repeat = post(api_key, {"click_id": clicks[0].click_id, "txn_id": "T0"})
    assert repeat.status_code == 200 and repeat.json()["created"] is False


def test_an_accepting_campaign_records_over_its_cap_unpaid(
    api_key, campaign, publisher, link, callback
):
    campaign.cap_policy = Campaign.CapPolicy.ACCEPT_UNPAID
    campaign.save()
    cap(campaign, publisher=publisher, period="total", conversions=1)
    first = post(api_key, {"click_id": new_click(link, "a").click_id})
    over = post(api_key, {"click_id": new_click(link, "b").click_id, "payout": "3"})
    assert first.status_code == 201 and first.json()["payout"] == "2.50"
    assert over.status_code == 201, over.content
    body = over.json()
    assert (body["status"], body["reason"], body["payout"]) == ("approved", "cap_reached", "0.00")
    assert "total cap of 1 conversions for publisher Publisher A" in body["reason_detail"]
    assert payout_in_url(Postback.objects.get(conversion__public_id=body["id"])) == "0.00"
    assert not ConversionRefusal.objects.exists()
    logged = IntakeOutcome.objects.get(conversion__public_id=body["id"])
    assert (logged.outcome, logged.reason) == ("accepted", "cap_reached")
    # Unpaid over a cap stays unpaid, whatever is sent later; its status can still change.
    reversed_ = post(
        api_key,
        {"click_id": Conversion.objects.get(public_id=body["id"]).click.click_id, "payout": "5"},
    )
    assert reversed_.json()["payout"] == "0.00"


def test_a_publisher_cap_leaves_other_publishers_alone(
    advertiser, campaign, publisher, other_publisher, link
):
    cap(campaign, publisher=publisher, period="monthly", conversions=1)
    other_link = TrackingLink.objects.create(publisher=other_publisher, campaign=campaign)
    conversion_record(advertiser=advertiser, click_id=new_click(link, "a").click_id)
    with pytest.raises(IntakeError) as refused:
        conversion_record(advertiser=advertiser, click_id=new_click(link, "b").click_id)
    assert (refused.value.status, refused.value.code) == (422, "cap_reached")
    for spid in ("c", "d"):
        assert conversion_record(
            advertiser=advertiser, click_id=new_click(other_link, spid).click_id
        ).created


def test_a_payout_budget_stops_paying_when_the_next_payout_would_exceed_it(advertiser, link):
    campaign = link.campaign
    cap(campaign, period="total", budget=Decimal("6"))
    for spid in ("a", "b"):
        conversion_record(advertiser=advertiser, click_id=new_click(link, spid).click_id)
    with pytest.raises(IntakeError, match="6 EUR payout"):
        conversion_record(advertiser=advertiser, click_id=new_click(link, "c").click_id)
    # A smaller payout still fits the rest of the budget (1 of 6 left).
    fits = conversion_record(
        advertiser=advertiser, click_id=new_click(link, "d").click_id, payout=Decimal(1)
    )
    assert fits.created
    counter = CapCounter.objects.get()
    assert (counter.conversions, counter.payout) == (3, Decimal(6))


def test_rejected_conversions_take_no_place_in_a_cap(advertiser, campaign, link):
    cap(campaign, period="daily", conversions=1)
    conversion_record(
        advertiser=advertiser, click_id=new_click(link, "a").click_id, status="rejected"
    )
    assert conversion_record(advertiser=advertiser, click_id=new_click(link, "b").click_id).created


def test_days_are_counted_in_the_campaigns_time_zone(advertiser, campaign, link):
    campaign.time_zone = "Asia/Tokyo"  # UTC+9
    campaign.save()
    cap(campaign, period="daily", conversions=1)
    click = new_click(link, "a")
    late = click.created_at.replace(hour=14, minute=30)  # 23:30 in Tokyo
    if late < click.created_at:
        late += timedelta(days=1)
    conversion_record(advertiser=advertiser, click_id=click.click_id, now=late)
    with pytest.raises(IntakeError):
        conversion_record(advertiser=advertiser, click_id=new_click(link, "b").click_id, now=late)
    # 16:00 UTC is the next day in Tokyo, still the same day in UTC: a new daily period.
    next_day = late + timedelta(minutes=90)
    assert conversion_record(
        advertiser=advertiser, click_id=new_click(link, "c").click_id, now=next_day
    ).created
    starts = sorted(CapCounter.objects.values_list("period_start", flat=True))
    assert starts == [late.date() + timedelta(days=d) for d in (0, 1)]


def test_period_start_cuts_days_and_months_in_the_zone():
    at = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)
    assert caps.period_start("daily", at, "UTC").isoformat() == "2026-01-31"
    assert caps.period_start("daily", at, "Europe/Berlin").isoformat() == "2026-02-01"
    assert caps.period_start("monthly", at, "Europe/Berlin").isoformat() == "2026-02-01"
    assert caps.period_start("monthly", at, "America/New_York").isoformat() == "2026-01-01"
    assert caps.period_start("total", at, "UTC") == caps.TOTAL_PERIOD_START


def test_a_campaign_time_zone_must_be_an_iana_name(campaign):
    campaign.time_zone = "Mars/Olympus"
    with pytest.raises(Exception, match="IANA"):
        campaign.full_clean()


# --- Concurrency: no overshoot ---------------------------------------------------------------


CONCURRENT = 12
CAP = 5


def _race(calls: list) -> list:
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as exc:
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def claims_meet():
    """Every conversion reaches the cap check at once: without the counter lock, each would
    read the same count and all would pass."""
    barrier = threading.Barrier(CONCURRENT, timeout=20)
    real = caps.caps_claim

    def wait_then_claim(**kwargs):
        barrier.wait()
        return real(**kwargs)

    with mock.patch.object(caps, "caps_claim", wait_then_claim):
        yield


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("policy", list(Campaign.CapPolicy))
def test_concurrent_conversions_never_overshoot_a_cap(
    api_key, campaign, publisher, link, claims_meet, policy, settings
):
    # Every request at once from one key: no per-key admission limit in the way.
    settings.INTAKE_CONCURRENCY_PER_KEY = 0
    campaign.cap_policy = policy
    campaign.save()
    cap(campaign, period="daily", conversions=CAP)
    cap(campaign, publisher=publisher, period="total", budget=Decimal("100"))
    clicks = [new_click(link, f"s{i}") for i in range(CONCURRENT)]

    def sender(click_id: str):
        return lambda: post(api_key, {"click_id": click_id, "txn_id": f"T-{click_id}"})

    responses = _race([sender(c.click_id) for c in clicks])
    assert not [r for r in responses if isinstance(r, Exception)], responses
    codes = sorted(r.status_code for r in responses)
    paid = Conversion.objects.filter(payout__gt=0)
    assert paid.count() == CAP
    counter = CapCounter.objects.get(cap__period="daily")
    assert counter.conversions == CAP
    assert CapCounter.objects.get(cap__period="total").payout == CAP * Decimal("2.50")
    if policy == Campaign.CapPolicy.REJECT:
        assert codes == [201] * CAP + [422] * (CONCURRENT - CAP)
        assert Conversion.objects.count() == CAP
        assert ConversionRefusal.objects.filter(reason="cap_reached").count() == CONCURRENT - CAP
    else:
        assert codes == [201] * CONCURRENT
        unpaid = Conversion.objects.filter(reason="cap_reached", payout=0)
        assert unpaid.count() == CONCURRENT - CAP


def test_a_dashboard_cap_status_counts_only_what_concerns_the_publisher(
    advertiser, campaign, publisher, other_publisher, link
):
    mine = cap(campaign, publisher=publisher, period="daily", conversions=3)
    cap(campaign, publisher=other_publisher, period="daily", conversions=9)
    whole = cap(campaign, period="monthly", conversions=10)
    conversion_record(advertiser=advertiser, click_id=new_click(link).click_id)
    status = caps.caps_status(publisher_id=publisher.pk, campaigns=[campaign], at=timezone.now())
    assert [(s.cap.pk, s.conversions, s.full) for s in status[campaign.pk]] == [
        (mine.pk, 1, False),
        (whole.pk, 1, False),
    ]


def test_a_click_converting_later_uses_the_intake_time_not_the_click_time(
    advertiser, campaign, publisher, link
):
    """The term in force when the conversion is recorded decides, not the one at the click."""
    click = new_click(link)
    term(campaign, publisher, kind=PayoutTerm.Kind.FIXED, amount=Decimal(1), since=timezone.now())
    later = timezone.now() + timedelta(hours=1)
    term(campaign, publisher, kind=PayoutTerm.Kind.FIXED, amount=Decimal(2), since=later)
    outcome = conversion_record(
        advertiser=advertiser, click_id=click.click_id, now=later + timedelta(minutes=1)
    )
    assert outcome.conversion.payout == Decimal(2)


def test_services_refuse_over_cap_inside_the_transaction(advertiser, campaign, link):
    """A refused conversion leaves no conversion, postback or counter change behind."""
    cap(campaign, period="total", conversions=0)
    with pytest.raises(IntakeError):
        conversion_record(advertiser=advertiser, click_id=new_click(link).click_id)
    assert not Conversion.objects.exists() and not Postback.objects.exists()
    assert not CapCounter.objects.exists()


def test_a_campaign_without_terms_or_caps_costs_the_intake_no_lookup(advertiser, link):
    click = new_click(link)
    with CaptureQueriesContext(connection) as queries:
        conversion_record(advertiser=advertiser, click_id=click.click_id)
    money = [q["sql"] for q in queries if "payoutterm" in q["sql"] or "conversioncap" in q["sql"]]
    assert money == []


def test_the_campaigns_flags_follow_its_terms_and_caps(campaign, publisher):
    assert (campaign.has_payout_terms, campaign.has_caps) == (False, False)
    term(campaign, publisher, kind=PayoutTerm.Kind.FIXED, amount=Decimal(1))
    first = cap(campaign, period="daily", conversions=1)
    second = cap(campaign, period="total", conversions=9)
    campaign.refresh_from_db()
    assert (campaign.has_payout_terms, campaign.has_caps) == (True, True)
    first.delete()
    campaign.refresh_from_db()
    assert campaign.has_caps
    second.delete()
    campaign.refresh_from_db()
    assert not campaign.has_caps


def test_a_bot_click_over_a_cap_stays_held_and_is_unpaid(advertiser, campaign, link):
    campaign.cap_policy = Campaign.CapPolicy.ACCEPT_UNPAID
    campaign.save()
    cap(campaign, period="total", conversions=0)
    bot = click_stored(link=link, spid="bot", user_agent="")
    conversion = conversion_record(advertiser=advertiser, click_id=bot.click_id).conversion
    assert (conversion.status, conversion.reason, conversion.payout) == (
        "pending",
        "bot_click",
        Decimal(0),
    )
    assert "Unpaid: The campaign's total cap of 0 conversions" in conversion.reason_detail


def test_a_repeat_in_another_currency_is_still_answered_as_a_repeat(
    advertiser, campaign, publisher, link
):
    click = new_click(link)
    first = conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="T")
    term(campaign, publisher, kind=PayoutTerm.Kind.FIXED, amount=Decimal(1), since=timezone.now())
    again = conversion_record(
        advertiser=advertiser, click_id=click.click_id, txn_id="T", currency="USD"
    )
    assert (again.created, again.conversion.pk) == (False, first.conversion.pk)
    with pytest.raises(IntakeError) as refused:
        conversion_record(
            advertiser=advertiser, click_id=new_click(link, "n").click_id, currency="USD"
        )
    assert (refused.value.status, refused.value.code) == (422, "currency_mismatch")
