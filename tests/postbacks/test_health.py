"""Endpoint health (postbacks/health.py): owners warned after N failures in a row, the template
paused after failing for the configured period, any success resets, and resuming sends what
waited, oldest first. Deliveries go to real receivers on 127.0.0.1 through the dispatcher."""

import math
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from postbacks import dispatch, health
from postbacks.dispatch import Lane
from postbacks.models import Postback
from publishers import services as publisher_services
from tests.postbacks.test_dispatch import BROWSER, make_postbacks, own_redis_keys
from tests.tracking.helpers import click_stored
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def redis_keys(settings, request):
    with own_redis_keys(settings, request.node.name) as prefix:
        yield prefix


@pytest.fixture
def owners(publisher):
    """Owner A gets an address; the member has one too but is not an owner."""
    users = get_user_model().objects
    users.filter(username="owner-a").update(email="owner-a@publisher.example")
    users.filter(username="member-a").update(email="member-a@publisher.example")
    return ["owner-a@publisher.example"]


def deliver(lane=Lane.FIRST, **options):
    """Dispatch until nothing of `lane` is due, running on-commit work (e-mails) as it goes."""
    options.setdefault("wait", math.inf)
    options.setdefault("kicks", False)
    return dispatch.drain(lane, **options)


def test_it_warns_the_owners_once_after_n_failures_in_a_row(
    template, link, receiver, owners, mailoutbox, settings, django_capture_on_commit_callbacks
):
    settings.POSTBACKS_HEALTH_WARN_AFTER_FAILURES = 3
    receiver.status = 500
    make_postbacks(template, link, 2)
    with django_capture_on_commit_callbacks(execute=True):
        deliver()
    template.refresh_from_db()
    assert template.consecutive_failures == 2 and template.failing_since is not None
    assert mailoutbox == []

    make_postbacks(template, link, 2)
    with django_capture_on_commit_callbacks(execute=True):
        deliver()
    template.refresh_from_db()
    assert template.consecutive_failures == 4 and template.warned_at is not None
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == owners
    assert "failing" in mail.subject and f"127.0.0.1:{receiver.port}" in mail.subject
    assert "3 days" in mail.body

    # Once per failing streak.
    make_postbacks(template, link, 3)
    with django_capture_on_commit_callbacks(execute=True):
        deliver()
    assert len(mailoutbox) == 1


def test_any_success_resets_the_streak(template, link, receiver, owners, settings, mailoutbox):
    settings.POSTBACKS_HEALTH_WARN_AFTER_FAILURES = 2
    receiver.status = 503
    make_postbacks(template, link, 3)
    deliver()
    template.refresh_from_db()
    assert (template.consecutive_failures, template.warned_at is not None) == (3, True)

    receiver.status = 200
    Postback.objects.update(next_attempt_at=timezone.now())
    deliver(Lane.RETRY, limit=1)
    template.refresh_from_db()
    assert (template.consecutive_failures, template.failing_since, template.warned_at) == (
        0,
        None,
        None,
    )


def test_it_pauses_a_template_failing_for_three_days_and_holds_its_postbacks(
    template, link, receiver, owners, mailoutbox, django_capture_on_commit_callbacks
):
    assert django_settings.POSTBACKS_HEALTH_PAUSE_AFTER_SECONDS == 3 * 24 * 3600  # the default
    receiver.status = 502
    now = timezone.now()
    # Failing for a minute less than three days: still sending.
    make_postbacks(template, link, 1)
    type(template).objects.filter(pk=template.pk).update(
        failing_since=now - timedelta(days=3) + timedelta(minutes=1),
        consecutive_failures=40,
        warned_at=now - timedelta(days=2),
    )
    with django_capture_on_commit_callbacks(execute=True):
        deliver()
    template.refresh_from_db()
    assert template.paused_at is None

    # Past three days: the next failure pauses it.
    type(template).objects.filter(pk=template.pk).update(
        failing_since=now - timedelta(days=3, seconds=1)
    )
    waiting = make_postbacks(template, link, 2)
    Postback.objects.filter(pk=waiting[1].pk).update(next_attempt_at=now + timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        deliver(limit=1)
    template.refresh_from_db()
    assert template.paused_reason == "failing" and template.paused_at is not None
    assert not template.is_active  # the switch shows the pause, whatever its reason
    assert [m.subject for m in mailoutbox] == [
        f"Roundtrip: callback 127.0.0.1:{receiver.port} paused"
    ]
    assert mailoutbox[0].to == owners
    # Its pending postbacks are held: nothing claims them, not even once due.
    assert set(
        Postback.objects.filter(status="pending").values_list("next_attempt_at", flat=True)
    ) == {health.HELD_UNTIL}
    assert deliver(Lane.RETRY) == 0

    # A new conversion still records its postback for the paused template, held as well.
    click = click_stored(link=link, spid="new", user_agent=BROWSER)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        outcome = conversion_record(advertiser=link.campaign.advertiser, click_id=click.click_id)
    (postback,) = outcome.postbacks
    assert postback.next_attempt_at == health.HELD_UNTIL
    assert callbacks == [], "nothing to kick for a held postback"


def test_resuming_sends_what_waited_oldest_first(template, link, receiver, settings):
    settings.POSTBACKS_HOST_MAX_IN_FLIGHT = 1
    settings.POSTBACKS_HOST_RETRY_SHARE = 1.0
    health.endpoint_pause([template.pk], reason="failing")
    now = timezone.now()
    postbacks = make_postbacks(template, link, 6)
    # Created over the last hour in a shuffled order; some had been tried already.
    ages = [30, 50, 10, 40, 60, 20]
    for postback, minutes in zip(postbacks, ages, strict=True):
        Postback.objects.filter(pk=postback.pk).update(
            created_at=now - timedelta(minutes=minutes),
            next_attempt_at=health.HELD_UNTIL,
            attempts=minutes // 30,
        )
    assert deliver(Lane.RETRY) == 0

    released = health.endpoint_resume(template.pk)
    assert released == 6
    template.refresh_from_db()
    assert (template.paused_at, template.paused_reason, template.is_active) == (None, "", True)
    deliver(Lane.RETRY)
    oldest_first = [p.event_id for _, p in sorted(zip(ages, postbacks, strict=True), reverse=True)]
    assert [r.headers["Roundtrip-Event-Id"] for r in receiver.requests] == oldest_first
    assert set(Postback.objects.values_list("status", flat=True)) == {"succeeded"}


def test_a_410_pauses_and_deactivates_and_resuming_reactivates(
    template, link, receiver, owners, mailoutbox, django_capture_on_commit_callbacks
):
    receiver.status = 410
    make_postbacks(template, link, 1)
    with django_capture_on_commit_callbacks(execute=True):
        deliver()
    template.refresh_from_db()
    assert (template.is_active, template.paused_reason) == (False, "gone")
    assert "410 Gone" in mailoutbox[0].body
    health.endpoint_resume(template.pk)
    template.refresh_from_db()
    assert template.is_active and template.paused_at is None


@pytest.mark.parametrize("kind", ["gone", "failing", "manual"])
def test_every_pause_holds_new_conversions_and_resume_sends_each_once(
    template, link, receiver, settings, django_capture_on_commit_callbacks, kind
):
    """Bug: a 410 deactivated the template, and conversions during the pause got no postback,
    not even after resume. Every kind of pause now holds them."""
    settings.POSTBACKS_HEALTH_PAUSE_AFTER_SECONDS = 0
    if kind == "manual":
        assert publisher_services.callback_template_set_active(template=template, active=False)
    else:
        receiver.status = 410 if kind == "gone" else 500
        make_postbacks(template, link, 1)
        with django_capture_on_commit_callbacks(execute=True):
            deliver()
    template.refresh_from_db()
    assert (template.paused_reason, template.is_active) == (kind, False)

    for n in range(3):
        click = click_stored(link=link, spid=f"paused-{n}", user_agent=BROWSER)
        with django_capture_on_commit_callbacks(execute=True):
            conversion_record(advertiser=link.campaign.advertiser, click_id=click.click_id)
    held = Postback.objects.filter(template=template)
    assert held.count() == (3 if kind == "manual" else 4)
    assert set(held.values_list("status", "next_attempt_at")) == {("pending", health.HELD_UNTIL)}
    assert deliver(Lane.RETRY) == 0

    receiver.status = 200
    sent_before = len(receiver.requests)
    with django_capture_on_commit_callbacks(execute=True):
        publisher_services.callback_template_set_active(template=template, active=True)
    deliver(Lane.RETRY)
    assert set(held.values_list("status", flat=True)) == {"succeeded"}
    sent = [r.headers["Roundtrip-Event-Id"] for r in receiver.requests[sent_before:]]
    assert sorted(sent) == sorted(held.values_list("event_id", flat=True))
