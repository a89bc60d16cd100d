"""The audit trail: every recorded action, from the dashboard, the API and the admin, with who,
what and from where; no secret in it; the Activity page; the same transaction as the change."""

import json
import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from postbacks import health
from postbacks.models import Postback
from publishers import services
from publishers.models import AuditEvent, CallbackTemplate, Membership, PublisherAPIKey

pytestmark = pytest.mark.django_db

Action = AuditEvent.Action


def events(publisher, action: str | None = None) -> list[AuditEvent]:
    rows = AuditEvent.objects.filter(publisher=publisher).order_by("created_at", "pk")
    return list(rows.filter(action=action) if action else rows)


def only(publisher, action: str) -> AuditEvent:
    [event] = events(publisher, action)
    return event


def everything_recorded(publisher) -> str:
    """Every column of every event, as one string: what a secret must not be found in."""
    return json.dumps(list(AuditEvent.objects.filter(publisher=publisher).values()), default=str)


def assert_by_owner(event: AuditEvent) -> None:
    assert event.via == AuditEvent.Via.DASHBOARD
    assert event.actor.username == "owner-a" and event.actor_name == "owner-a"
    assert event.ip == "127.0.0.1"


def api_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def held(dashboard_data) -> CallbackTemplate:
    """A's failing template, paused by endpoint health: its retrying postback is held."""
    template = dashboard_data.bad_template
    Postback.objects.filter(template=template).update(status=Postback.Status.PENDING)
    health.endpoint_pause([template.pk], reason=CallbackTemplate.PausedReason.GONE)
    template.refresh_from_db()
    return template


# --- API keys and the signing secret -----------------------------------------------------------


def test_it_records_a_key_created_without_its_plaintext(owner_client, publisher):
    response = owner_client.post(reverse("api_key_create"), {"name": "reconciliation"}, follow=True)
    plaintext = response.context["new_key"]
    event = only(publisher, Action.API_KEY_CREATED)
    key = PublisherAPIKey.objects.get(name="reconciliation")
    assert_by_owner(event)
    assert (event.target_type, event.target_id) == ("api_key", key.lookup)
    assert event.details == {"name": "reconciliation"}
    # The secret part follows the lookup; it may itself contain "_" (URL-safe base64).
    secret = plaintext[plaintext.index(key.lookup) + len(key.lookup) + 1 :]
    assert len(secret) >= 32 and secret not in everything_recorded(publisher)


def test_it_records_a_revocation_once(owner_client, publisher):
    key, _ = services.api_key_create(publisher=publisher, name="old")
    for _ in range(2):
        owner_client.post(reverse("api_key_revoke", args=[key.lookup]))
    event = only(publisher, Action.API_KEY_REVOKED)
    assert_by_owner(event)
    assert event.target_id == key.lookup and "old" in event.target_repr


def test_it_records_reveals_and_rotations_but_never_the_secret(owner_client, publisher):
    old_secret = publisher.signing_secret
    owner_client.post(reverse("secret_reveal"))
    assert_by_owner(only(publisher, Action.SECRET_REVEALED))
    owner_client.post(reverse("secret_rotate"))
    publisher.refresh_from_db()
    rotated = only(publisher, Action.SECRET_ROTATED)
    assert_by_owner(rotated)
    assert rotated.details["old_secret_signs_until"] == (
        publisher.previous_secret_expires_at.isoformat()
    )
    # The rotation shows the new secret, but that is the rotation, not a second reveal.
    assert len(events(publisher, Action.SECRET_REVEALED)) == 1
    recorded = everything_recorded(publisher)
    assert old_secret not in recorded and publisher.signing_secret not in recorded


# --- Callbacks ------------------------------------------------------------------------------


def callback_form(receiver, **changes) -> dict:
    return {
        "name": "Sales",
        "url_template": f"{receiver.base_url}/cb?s=[spid]",
        "statuses": ["approved"],
        "events": "",
        "campaign": "",
        "is_active": "on",
        **changes,
    }


def test_it_records_a_callback_created_and_the_fields_an_edit_changed(
    member_client, publisher, receiver
):
    member_client.post(reverse("callback_new"), callback_form(receiver))
    template = CallbackTemplate.objects.get(publisher=publisher)
    created = only(publisher, Action.CALLBACK_CREATED)
    assert (created.target_id, created.actor.username) == (template.public_id, "member-a")
    assert created.details["settings"]["url_template"] == template.url_template

    edit = reverse("callback_edit", args=[template.public_id])
    new_url = f"{receiver.base_url}/v2?s=[spid]"
    member_client.post(
        edit, callback_form(receiver, url_template=new_url, statuses=["approved", "rejected"])
    )
    edited = only(publisher, Action.CALLBACK_UPDATED)
    assert edited.details == {
        "changed": {
            "url_template": {"from": template.url_template, "to": new_url},
            "statuses": {"from": ["approved"], "to": ["approved", "rejected"]},
        }
    }
    # Saving without a change records nothing.
    member_client.post(
        edit, callback_form(receiver, url_template=new_url, statuses=["approved", "rejected"])
    )
    assert len(events(publisher, Action.CALLBACK_UPDATED)) == 1
    page = member_client.get(reverse("activity")).content.decode()
    assert f"{template.url_template} → {new_url}" in page


def test_it_records_pause_and_resume(member_client, publisher, template):
    toggle = reverse("callback_toggle", args=[template.public_id])
    member_client.post(toggle)
    member_client.post(toggle)
    actions = [e.action for e in events(publisher)]
    assert actions == [Action.CALLBACK_PAUSED, Action.CALLBACK_RESUMED]
    # A pause that changes nothing (already paused) is not recorded.
    assert services.callback_template_set_active(template=template, active=True) is False
    assert len(events(publisher)) == 2


def test_it_records_a_test_postback_and_its_answer(member_client, publisher, receiver):
    member_client.post(
        reverse("callback_test"), {"url_template": f"{receiver.base_url}/t?s=[spid]"}
    )
    event = only(publisher, Action.CALLBACK_TESTED)
    assert event.details["ok"] is True and event.details["status_code"] == 200
    assert event.details["url"] == f"{receiver.base_url}/t?s=123456789"
    # The editor tests what is typed, saved or not: no callback id.
    assert event.target_id == ""


# --- Replays --------------------------------------------------------------------------------


def test_it_records_dashboard_replays_with_their_count(member_client, dashboard_data):
    publisher = dashboard_data.publisher
    failing = list(Postback.objects.filter(template=dashboard_data.bad_template))
    Postback.objects.filter(pk__in=[p.pk for p in failing]).update(status="failed")
    member_client.post(reverse("deliveries_retry"), {"event_id": failing[0].event_id})
    Postback.objects.filter(pk__in=[p.pk for p in failing]).update(status="failed")
    member_client.post(reverse("deliveries_retry"), {"event_id": [p.event_id for p in failing]})
    Postback.objects.filter(pk__in=[p.pk for p in failing]).update(status="failed")
    today = timezone.now().date().isoformat()
    member_client.post(
        reverse("deliveries_retry"),
        {"scope": "range", "start": today, "end": today, "states": ["failing"]},
    )
    one, selection, range_ = events(publisher, Action.POSTBACKS_RETRIED)
    assert (one.details["scope"], one.details["queued"]) == ("one", 1)
    assert one.details["event_ids"] == [failing[0].event_id]
    assert (selection.details["scope"], selection.details["queued"]) == ("selection", 2)
    assert range_.details | {"tz": "UTC"} == {
        "scope": "range",
        "requested": 2,
        "matched": 2,
        "queued": 2,
        "from": today,
        "to": today,
        "states": ["failing"],
        "tz": "UTC",
    }
    assert {e.actor.username for e in (one, selection, range_)} == {"member-a"}


def test_it_records_nothing_for_a_replay_that_queued_nothing(member_client, dashboard_data):
    # In flight: a worker holds it, so nothing is queued.
    busy = Postback.objects.filter(template=dashboard_data.good_template).first()
    Postback.objects.filter(pk=busy.pk).update(leased_until=timezone.now() + timedelta(minutes=1))
    member_client.post(reverse("deliveries_retry"), {"event_id": busy.event_id})
    assert events(dashboard_data.publisher, Action.POSTBACKS_RETRIED) == []


def test_it_records_api_replays_with_the_key_that_asked(dashboard_data):
    publisher = dashboard_data.publisher
    key, plaintext = services.api_key_create(publisher=publisher, name="ops-script")
    api = api_client(plaintext)
    failing = list(Postback.objects.filter(template=dashboard_data.bad_template))
    Postback.objects.filter(pk__in=[p.pk for p in failing]).update(status="failed")
    assert api.post(f"/api/v1/postbacks/{failing[0].event_id}/retry").status_code == 202
    response = api.post(
        "/api/v1/postbacks/replay",
        {"from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z", "status": ["failed"]},
        format="json",
    )
    assert response.json()["queued"] == 1
    one, range_ = events(publisher, Action.POSTBACKS_RETRIED)
    for event in (one, range_):
        assert event.via == AuditEvent.Via.API and event.actor is None
        assert event.api_key_label == f"ops-script (rt_pub_{key.lookup}_…)"
        assert event.who == f"API key ops-script (rt_pub_{key.lookup}_…)"
    assert (one.details["scope"], one.details["event_ids"]) == ("one", [failing[0].event_id])
    assert (range_.details["scope"], range_.details["matched"], range_.details["queued"]) == (
        "range",
        1,
        1,
    )
    # The secret part follows the lookup; it may itself contain "_" (URL-safe base64).
    secret = plaintext[plaintext.index(key.lookup) + len(key.lookup) + 1 :]
    assert len(secret) >= 32 and secret not in everything_recorded(publisher)


# --- Endpoint health: pause and resume ----------------------------------------------------------


def test_it_records_the_automatic_pause(held):
    event = only(held.publisher, Action.ENDPOINT_PAUSED)
    assert event.via == AuditEvent.Via.SYSTEM and event.actor is None
    assert event.who == "Roundtrip (automatic)"
    assert (event.target_id, event.details["reason"], event.details["held"]) == (
        held.public_id,
        "gone",
        2,
    )


def test_it_resumes_deliveries_from_the_dashboard(
    member_client, held, django_capture_on_commit_callbacks
):
    # A paused callback offers "Resume deliveries" instead of the plain toggle.
    listing = member_client.get(reverse("callbacks")).content.decode()
    assert reverse("callback_resume", args=[held.public_id]) in listing
    editor = member_client.get(reverse("callback_edit", args=[held.public_id])).content.decode()
    assert "410 Gone" in editor and "2 postback(s) are held" in editor

    with django_capture_on_commit_callbacks(execute=False):
        response = member_client.post(
            reverse("callback_resume", args=[held.public_id]), {"back": "edit"}
        )
    assert response["Location"] == reverse("callback_edit", args=[held.public_id])
    held.refresh_from_db()
    assert (held.paused_at, held.is_active) == (None, True)
    assert not Postback.objects.filter(template=held, next_attempt_at=health.HELD_UNTIL).exists()
    event = only(held.publisher, Action.ENDPOINT_RESUMED)
    assert event.actor.username == "member-a"
    assert (event.details["paused_reason"], event.details["released"]) == ("gone", 2)
    # Resuming again changes nothing and records nothing.
    member_client.post(reverse("callback_resume", args=[held.public_id]))
    assert len(events(held.publisher, Action.ENDPOINT_RESUMED)) == 1


def test_it_shows_held_postbacks_as_held(member_client, held):
    page = member_client.get(reverse("deliveries")).content.decode()
    assert 'data-state="held"' in page and "The endpoint answered 410 Gone" in page
    assert "9999" not in page
    assert 'id="paused-callbacks"' in page


def test_it_leaves_held_postbacks_to_the_resume(member_client, held):
    """A retry can't send what a paused endpoint holds (no worker would claim it)."""
    before = list(Postback.objects.filter(template=held).values_list("next_attempt_at", flat=True))
    event_ids = list(Postback.objects.filter(template=held).values_list("event_id", flat=True))
    member_client.post(reverse("deliveries_retry"), {"event_id": event_ids})
    after = list(Postback.objects.filter(template=held).values_list("next_attempt_at", flat=True))
    assert after == before == [health.HELD_UNTIL] * 2
    assert events(held.publisher, Action.POSTBACKS_RETRIED) == []


# --- The team and the password -----------------------------------------------------------------


def test_it_records_invitations_removals_and_role_changes(owner_client, publisher):
    owner_client.post(reverse("member_invite"), {"email": "new@example.com", "role": "member"})
    invited = only(publisher, Action.MEMBER_INVITED)
    assert_by_owner(invited)
    # Nothing says whether the address had an account.
    assert invited.details == {"email": "new@example.com", "role": "member"}
    [invitation] = publisher.invitations.all()
    services.invitation_accept(invitation=invitation, password="a-Long-new-pass-42")
    joined = only(publisher, Action.INVITATION_ACCEPTED)
    assert (joined.target_id, joined.details) == (
        "new@example.com",
        {"email": "new@example.com", "role": "member"},
    )

    owner_client.post(reverse("member_role"), {"username": "new@example.com", "role": "owner"})
    changed = only(publisher, Action.MEMBER_ROLE_CHANGED)
    assert (changed.target_id, changed.details) == (
        "new@example.com",
        {"from": "member", "to": "owner"},
    )
    assert Membership.objects.get(user__username="new@example.com").role == "owner"

    owner_client.post(reverse("member_remove"), {"username": "new@example.com"})
    removed = only(publisher, Action.MEMBER_REMOVED)
    assert (removed.target_id, removed.details) == ("new@example.com", {"role": "owner"})


def test_it_never_demotes_the_last_owner_and_records_nothing(owner_client, publisher):
    response = owner_client.post(
        reverse("member_role"), {"username": "owner-a", "role": "member"}, follow=True
    )
    assert "last owner" in response.content.decode()
    assert Membership.objects.get(user__username="owner-a").role == "owner"
    assert events(publisher, Action.MEMBER_ROLE_CHANGED) == []


def test_it_records_a_password_change_for_each_publisher(client, publisher, other_publisher):
    user = get_user_model().objects.get(username="owner-a")
    user.email = "owner@example.com"
    user.save()
    Membership.objects.create(publisher=other_publisher, user=user)
    client.post(reverse("password_reset"), {"email": "owner@example.com"})
    [message] = mail.outbox
    link = next(line for line in message.body.splitlines() if "/accounts/reset/" in line)
    form = client.get("/" + link.split("://", 1)[1].split("/", 1)[1], follow=True)
    new_password = "a-Long-new-pass-42"
    client.post(
        form.redirect_chain[-1][0], {"new_password1": new_password, "new_password2": new_password}
    )
    for pub in (publisher, other_publisher):
        event = only(pub, Action.PASSWORD_CHANGED)
        assert event.actor == user and event.ip == "127.0.0.1"
        assert new_password not in everything_recorded(pub)


# --- API callbacks ------------------------------------------------------------------------------


def test_it_records_callback_changes_made_through_the_api(publisher, receiver):
    key, plaintext = services.api_key_create(publisher=publisher, name="terraform")
    api = api_client(plaintext)
    created = api.post(
        "/api/v1/callbacks", {"url_template": f"{receiver.base_url}/a?s=[spid]"}, format="json"
    ).json()
    url = f"/api/v1/callbacks/{created['id']}"
    api.patch(url, {"name": "Renamed", "is_active": False}, format="json")
    api.post(f"{url}/test")
    api.delete(url)
    recorded = events(publisher)[1:]  # after the key's own creation
    assert [e.action for e in recorded] == [
        Action.CALLBACK_CREATED,
        Action.CALLBACK_UPDATED,
        Action.CALLBACK_TESTED,
        Action.CALLBACK_DELETED,
    ]
    assert {e.target_id for e in recorded} == {created["id"]}
    assert {e.api_key_label for e in recorded} == {f"terraform (rt_pub_{key.lookup}_…)"}
    assert recorded[1].details["changed"] == {
        "name": {"from": "", "to": "Renamed"},
        "is_active": {"from": True, "to": False},
    }
    assert recorded[3].target_repr == "Renamed"


# --- The same transaction -----------------------------------------------------------------------


def test_it_keeps_no_change_whose_event_could_not_be_recorded(owner_client, publisher, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr(services, "audit_record", broken)
    with pytest.raises(RuntimeError):
        services.api_key_create(publisher=publisher, name="never")
    with pytest.raises(RuntimeError):
        services.publisher_secret_rotate(publisher=publisher)
    assert not PublisherAPIKey.objects.filter(name="never").exists()
    publisher.refresh_from_db()
    assert publisher.previous_signing_secret == ""


# --- The Activity page --------------------------------------------------------------------------


def test_it_pages_the_activity_newest_first_and_filters_by_action(member_client, publisher):
    now = timezone.now()
    AuditEvent.objects.bulk_create(
        AuditEvent(
            publisher=publisher,
            action=Action.CALLBACK_PAUSED if i % 2 else Action.CALLBACK_RESUMED,
            via=AuditEvent.Via.SYSTEM,
            target_repr=f"cb-{i:03}",
            # Pairs share a timestamp: the keyset must break ties by id.
            created_at=now - timedelta(minutes=i // 2),
        )
        for i in range(70)
    )
    first = member_client.get(reverse("activity"))
    assert first.status_code == 200
    shown = [row["event"] for row in first.context["events"]]
    assert len(shown) == 50
    second = member_client.get(reverse("activity") + first.context["next_url"])
    shown += [row["event"] for row in second.context["events"]]
    assert second.context["next_url"] == ""
    assert [e.pk for e in shown] == [
        e.pk for e in AuditEvent.objects.filter(publisher=publisher).order_by("-created_at", "-pk")
    ]
    paused = member_client.get(reverse("activity") + "?action=callback.paused")
    assert {row["event"].action for row in paused.context["events"]} == {Action.CALLBACK_PAUSED}
    assert len(paused.context["events"]) == 35
    assert "Callback paused" in paused.content.decode()
    # Linked from the navigation and from Settings.
    assert (
        f'href="{reverse("activity")}"' in member_client.get(reverse("settings")).content.decode()
    )


# --- Admin ------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client):
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    client.force_login(staff)
    return client


def test_it_lists_events_read_only_for_staff(admin_client, publisher):
    services.api_key_create(publisher=publisher, name="k")
    event = AuditEvent.objects.get()
    assert admin_client.get("/admin/publishers/auditevent/").status_code == 200
    assert admin_client.get(f"/admin/publishers/auditevent/{event.pk}/change/").status_code == 200
    assert admin_client.get("/admin/publishers/auditevent/add/").status_code == 403
    assert admin_client.post(f"/admin/publishers/auditevent/{event.pk}/delete/").status_code == 403


def test_it_records_staff_actions_as_staff(admin_client, dashboard_data, held):
    publisher = dashboard_data.publisher
    key = PublisherAPIKey.objects.get(publisher=publisher)
    admin_client.post(
        "/admin/publishers/publisherapikey/", {"action": "revoke", "_selected_action": [key.pk]}
    )
    admin_client.post(
        "/admin/publishers/callbacktemplate/",
        {"action": "resume_deliveries", "_selected_action": [held.pk]},
    )
    failed = Postback.objects.filter(template=held).first()
    Postback.objects.filter(pk=failed.pk).update(status="failed")
    admin_client.post(
        "/admin/postbacks/postback/", {"action": "retry_selected", "_selected_action": [failed.pk]}
    )
    held.refresh_from_db()
    assert held.paused_at is None
    for action in (Action.API_KEY_REVOKED, Action.ENDPOINT_RESUMED, Action.POSTBACKS_RETRIED):
        event = only(publisher, action)
        assert event.via == AuditEvent.Via.ADMIN and event.who == "Roundtrip staff (root)"


def test_it_records_staff_edits_in_change_forms(admin_client, dashboard_data):
    publisher = dashboard_data.publisher
    template = dashboard_data.good_template
    change_page = f"/admin/publishers/callbacktemplate/{template.pk}/change/"
    edited = {
        "publisher": publisher.pk,
        "name": "renamed-by-staff",
        "url_template": template.url_template,
        "events": "",
        "statuses": ["approved", "pending"],
        "is_active": "on",
    }
    response = admin_client.post(change_page, edited)
    assert response.status_code == 302, response.content[:2000]
    event = only(publisher, Action.STAFF_EDITED)
    assert event.via == AuditEvent.Via.ADMIN and event.who == "Roundtrip staff (root)"
    assert (event.target_type, event.target_id) == ("callback", template.public_id)
    assert event.details["operation"] == "changed"
    assert event.details["changed"]["name"] == {"from": "a-only-callback", "to": "renamed-by-staff"}
    assert event.details["changed"]["statuses"]["to"] == ["approved", "pending"]
    assert set(event.details["changed"]) == {"name", "statuses"}
    # Shown on the publisher's Activity page, with who and when.
    owner = Client()
    owner.force_login(get_user_model().objects.get(username="owner-a"))
    page = owner.get(reverse("activity") + "?action=staff.edited").content.decode()
    assert "Edited by Roundtrip staff" in page and "Roundtrip staff (root)" in page
    assert "a-only-callback → renamed-by-staff" in page

    # Saving without a change records nothing more.
    admin_client.post(change_page, edited)
    assert len(events(publisher, Action.STAFF_EDITED)) == 1


def change_form(html: str) -> dict[str, str | list[str]]:
    """What a browser would post back from an admin change page, unchanged (a group of
    checkboxes posts the list of the checked ones)."""
    data: dict[str, str | list[str]] = {}
    for tag in re.findall(r"<input[^>]*>", html):
        name, value = re.search(r'\sname="([^"]*)"', tag), re.search(r'\svalue="([^"]*)"', tag)
        kind = re.search(r'type="([^"]*)"', tag)
        if not name or "__prefix__" in name.group(1) or (kind and kind.group(1) == "submit"):
            continue
        text = unescape(value.group(1)) if value else ""
        if kind and kind.group(1) == "checkbox":
            if "checked" in tag:
                data.setdefault(name.group(1), []).append(text)  # type: ignore[union-attr]
            continue
        data[name.group(1)] = text
    for name, body in re.findall(r'<select[^>]*?\sname="([^"]*)"[^>]*>(.*?)</select>', html, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', body)
        if "__prefix__" not in name:
            data[name] = chosen.group(1) if chosen else ""
    for name, body in re.findall(
        r'<textarea[^>]*?\sname="([^"]*)"[^>]*>(.*?)</textarea>', html, re.S
    ):
        if "__prefix__" not in name:
            data[name] = unescape(body.strip())
    return data


def test_it_records_staff_edits_of_inlines_and_deletions(admin_client, publisher):
    member = Membership.objects.get(publisher=publisher, user__username="member-a")
    page = f"/admin/publishers/publisher/{publisher.pk}/change/"
    form = change_form(admin_client.get(page).content.decode())
    [role] = [k for k, v in form.items() if k.endswith("-id") and v == str(member.pk)]
    form[role.replace("-id", "-role")] = "owner"
    response = admin_client.post(page, form)
    assert response.status_code == 302, re.findall(
        r"errorlist[^>]*>(.*?)</ul>", response.content.decode(), re.S
    )
    event = only(publisher, Action.STAFF_EDITED)
    assert (event.target_type, event.target_id) == ("member", "member-a")
    assert event.details["changed"] == {"role": {"from": "member", "to": "owner"}}

    admin_client.post(f"/admin/publishers/membership/{member.pk}/delete/", {"post": "yes"})
    assert not Membership.objects.filter(pk=member.pk).exists()
    deleted = events(publisher, Action.STAFF_EDITED)[-1]
    assert deleted.details == {"operation": "deleted", "model": "membership", "changed": {}}
