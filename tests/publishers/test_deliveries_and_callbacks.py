"""Deliveries name the callback and the exact URL of each postback and say what it is doing
(retrying, held with the reason, failed, waiting); a callback is deleted after a confirmation
page, by POST with the CSRF token, audited, and its delivery history stays."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from postbacks.models import Postback
from publishers.models import AuditEvent, CallbackTemplate
from publishers.services import callback_template_set_active
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db


def _states(response) -> dict[str, str]:
    return {p.event_id: p.state for p in response.context["rows"]}


def test_a_failing_row_names_its_callback_and_url(member_client, dashboard_data):
    response = member_client.get(reverse("deliveries"))
    rows = response.context["rows"]
    assert rows and {p.state for p in rows} == {"retrying"}
    content = response.content.decode()
    for postback in rows:
        assert postback.url.startswith(f"{dashboard_data.receiver_url}/fail?id=")
        assert f'title="{postback.url}"' in content
    assert "(unnamed callback)" in content
    assert reverse("callback_edit", args=[dashboard_data.bad_template.public_id]) in content
    # Never a bare "pending" pill under Failing.
    assert "pill-pending" not in content


def test_postbacks_of_a_paused_callback_show_held_with_the_reason(
    member_client, dashboard_data, advertiser
):
    callback_template_set_active(template=dashboard_data.bad_template, active=False)
    failing = member_client.get(reverse("deliveries"))
    assert set(_states(failing).values()) == {"held"}
    assert "Paused by the publisher" in failing.content.decode()
    # A new conversion: the paused callback's postback waits in Pending, held.
    conversion_record(
        advertiser=advertiser, click_id=dashboard_data.clicks[3].click_id, txn_id="t-held"
    )
    pending = member_client.get(reverse("deliveries") + "?state=pending")
    held = [p for p in pending.context["rows"] if p.template_id == dashboard_data.bad_template.pk]
    assert [p.state for p in held] == ["held"]


def test_a_given_up_postback_shows_failed(member_client, dashboard_data):
    Postback.objects.filter(template=dashboard_data.bad_template).update(status="failed")
    assert set(_states(member_client.get(reverse("deliveries"))).values()) == {"failed"}


def test_deleting_a_callback_asks_first_then_keeps_its_history(
    member_client, dashboard_data, publisher
):
    template = dashboard_data.bad_template
    kept = set(Postback.objects.filter(template=template).values_list("event_id", flat=True))
    confirm = member_client.get(reverse("callback_delete", args=[template.public_id]))
    assert confirm.status_code == 200
    text = confirm.content.decode()
    assert f"{len(kept)} postback(s) remain" in text and 'name="csrfmiddlewaretoken"' in text
    assert CallbackTemplate.objects.filter(pk=template.pk).exists()  # a GET deletes nothing

    response = member_client.post(reverse("callback_delete", args=[template.public_id]))
    assert response.status_code == 302 and response["Location"] == reverse("callbacks")
    assert not CallbackTemplate.objects.filter(pk=template.pk).exists()
    # The history stays, shown as a deleted callback with the URL each postback froze.
    assert (
        set(
            Postback.objects.filter(event_id__in=kept, template=None).values_list(
                "event_id", flat=True
            )
        )
        == kept
    )
    deliveries = member_client.get(reverse("deliveries")).content.decode()
    assert "(deleted callback)" in deliveries
    event = AuditEvent.objects.get(publisher=publisher, action="callback.deleted")
    assert event.target_id == template.public_id
    assert event.details["settings"]["url_template"] == template.url_template


def test_deleting_a_callback_needs_the_csrf_token(dashboard_data):
    client = Client(enforce_csrf_checks=True)
    client.force_login(dashboard_data.publisher.memberships.get(role="member").user)
    template = dashboard_data.good_template
    response = client.post(reverse("callback_delete", args=[template.public_id]))
    assert response.status_code == 403
    assert CallbackTemplate.objects.filter(pk=template.pk).exists()


EMPTY = re.compile(r'class="(?:empty|panel empty-state)"[^>]*>(.*?)</(?:td|div)>', re.S)


@pytest.mark.parametrize(
    "page",
    ["conversions", "callbacks", "deliveries", "api_keys", "activity", "reports", "links"],
)
def test_every_empty_table_says_what_to_do_next(owner_client, publisher, page):
    response = owner_client.get(reverse(page))
    assert response.status_code == 200
    empties = EMPTY.findall(response.content.decode())
    assert empties, page
    for text in empties:
        # A next step: a link to follow or someone to ask, never a bare "nothing here".
        assert "<a " in text or "account manager" in text, (page, text)
