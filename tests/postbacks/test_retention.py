"""Retention: old history goes in bounded batches; pending and failed postbacks, converted
clicks and clicks inside their attribution window stay."""

from datetime import timedelta

import pytest
from django.utils import timezone

from postbacks.models import Postback, PostbackAttempt
from postbacks.retention import retention_prune
from publishers.models import AuditEvent
from tracking.models import Campaign, Click, Conversion, IntakeOutcome
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def days_ago(days: float):
    return NOW - timedelta(days=days)


@pytest.fixture
def retention(settings):
    settings.POSTBACKS_ATTEMPT_RETENTION_DAYS = 30
    settings.POSTBACKS_SUCCEEDED_RETENTION_DAYS = 90
    settings.CLICKS_RETENTION_DAYS = 60
    settings.AUDIT_RETENTION_DAYS = 400
    settings.INTAKE_OUTCOME_RETENTION_DAYS = 400
    settings.RETENTION_BATCH_SIZE = 2
    settings.RETENTION_MAX_BATCHES = 100
    return settings


def click(link, age_days: float, campaign: Campaign | None = None) -> Click:
    campaign = campaign or link.campaign
    return Click.objects.create(
        link=link,
        publisher=link.publisher,
        campaign=campaign,
        spid="s",
        created_at=days_ago(age_days),
    )


def postback(link, status: str, *, age_days: float, attempts: int = 1) -> Postback:
    """A postback of a fresh conversion, aged: created, attempted and (if so) delivered
    `age_days` ago."""
    conversion = conversion_record(
        advertiser=link.campaign.advertiser, click_id=click(link, 0).click_id
    ).conversion
    row = conversion.postbacks.get()
    at = days_ago(age_days)
    delivered = at if status == Postback.Status.SUCCEEDED else None
    Postback.objects.filter(pk=row.pk).update(
        status=status, created_at=at, delivered_at=delivered, attempts=attempts
    )
    for number in range(1, attempts + 1):
        PostbackAttempt.objects.create(
            postback=row, number=number, started_at=at, url=row.url, outcome="retry"
        )
    return row


def test_it_prunes_old_history_and_keeps_what_may_still_be_needed(link, template, retention):
    old_delivered = postback(link, Postback.Status.SUCCEEDED, age_days=100, attempts=2)
    delivered_40_days_ago = postback(link, Postback.Status.SUCCEEDED, age_days=40, attempts=3)
    recent = postback(link, Postback.Status.SUCCEEDED, age_days=1)
    old_pending = postback(link, Postback.Status.PENDING, age_days=200, attempts=4)
    old_failed = postback(link, Postback.Status.FAILED, age_days=200, attempts=10)

    long_window = Campaign.objects.create(
        advertiser=link.campaign.advertiser,
        name="Long window",
        landing_url="https://advertiser.example/?c=[click_id]",
        attribution_window=timedelta(days=120),
    )
    old_click = click(link, 61)
    in_long_window = click(link, 100, campaign=long_window)
    recent_click = click(link, 59)
    converted = click(link, 0)
    conversion_record(advertiser=link.campaign.advertiser, click_id=converted.click_id)
    Click.objects.filter(pk=converted.pk).update(created_at=days_ago(300))

    assert retention_prune(now=NOW) == {
        "attempts": 5,
        "postbacks": 1,
        "clicks": 1,
        "audit": 0,
        "intake_outcomes": 0,
    }

    remaining = set(Postback.objects.values_list("pk", flat=True))
    assert old_delivered.pk not in remaining
    assert {delivered_40_days_ago.pk, recent.pk, old_pending.pk, old_failed.pk} <= remaining
    # A delivered postback outlives its attempt log; waiting ones keep every attempt.
    assert not delivered_40_days_ago.attempt_log.exists()
    assert recent.attempt_log.count() == 1
    assert old_pending.attempt_log.count() == 4 and old_failed.attempt_log.count() == 10
    assert not Click.objects.filter(pk=old_click.pk).exists()
    assert (
        Click.objects.filter(pk__in=[in_long_window.pk, recent_click.pk, converted.pk]).count() == 3
    )

    assert retention_prune(now=NOW) == {
        "attempts": 0,
        "postbacks": 0,
        "clicks": 0,
        "audit": 0,
        "intake_outcomes": 0,
    }


def test_it_deletes_in_bounded_batches(link, template, retention):
    for _ in range(5):
        postback(link, Postback.Status.SUCCEEDED, age_days=100, attempts=0)
    retention.RETENTION_BATCH_SIZE = 2
    retention.RETENTION_MAX_BATCHES = 2
    assert retention_prune(now=NOW)["postbacks"] == 4  # two statements of two rows
    assert retention_prune(now=NOW)["postbacks"] == 1  # the rest on the next run
    assert retention_prune(now=NOW)["postbacks"] == 0


def test_it_keeps_everything_when_retention_is_off(link, template, retention):
    postback(link, Postback.Status.SUCCEEDED, age_days=1000, attempts=2)
    click(link, 1000)
    retention.POSTBACKS_ATTEMPT_RETENTION_DAYS = 0
    retention.POSTBACKS_SUCCEEDED_RETENTION_DAYS = 0
    retention.CLICKS_RETENTION_DAYS = 0
    retention.AUDIT_RETENTION_DAYS = 0
    retention.INTAKE_OUTCOME_RETENTION_DAYS = 0
    assert retention_prune(now=NOW) == {}
    assert PostbackAttempt.objects.count() == 2 and Click.objects.count() == 2


def test_it_prunes_activity_older_than_the_audit_retention(publisher, retention):
    for age in (401, 399, 10):
        AuditEvent.objects.create(
            publisher=publisher, action="secret.rotated", via="system", created_at=days_ago(age)
        )
    assert retention_prune(now=NOW)["audit"] == 1
    ages = sorted((NOW - e.created_at).days for e in AuditEvent.objects.all())
    assert ages == [10, 399]


def test_it_prunes_the_advertisers_log_but_never_its_conversions(advertiser, link, retention):
    fresh = click(link, 1)
    conversion_record(advertiser=advertiser, click_id=fresh.click_id, txn_id="kept")
    for age in (401, 399):
        IntakeOutcome.objects.create(
            advertiser=advertiser,
            campaign=link.campaign,
            outcome=IntakeOutcome.Outcome.DUPLICATE,
            click_id=fresh.click_id,
            event="conversion",
            created_at=days_ago(age),
        )
    assert retention_prune(now=NOW)["intake_outcomes"] == 1
    assert IntakeOutcome.objects.count() == 2  # the 399-day-old row and the accepted one
    assert not IntakeOutcome.objects.filter(created_at__lt=days_ago(400)).exists()
    assert Conversion.objects.filter(txn_id="kept").exists()
