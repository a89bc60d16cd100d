"""Django admin: keys are generated, shown once and revocable; postbacks can be retried."""

import re

import pytest
from django.contrib.auth import get_user_model

from postbacks.models import Postback
from publishers.keys import verify_key
from publishers.models import AuditEvent, Invitation, Membership, Publisher, PublisherAPIKey
from tests.postbacks.test_dispatch import make_postbacks
from tests.publishers.test_audit import change_form
from tracking.models import AdvertiserAPIKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    client.force_login(staff)
    return client


def shown_key(response, prefix: str) -> str:
    text = " ".join(str(m) for m in response.context["messages"])
    match = re.search(rf"{prefix}_[0-9a-f]{{12}}_\S+", text)
    assert match, text
    return match.group(0)


def test_it_creates_a_publisher_key_and_shows_it_once(admin_client, publisher):
    response = admin_client.post(
        "/admin/publishers/publisherapikey/add/",
        {"publisher": publisher.pk, "name": "ops"},
        follow=True,
    )
    plaintext = shown_key(response, "rt_pub")
    key = PublisherAPIKey.objects.get(name="ops")
    assert verify_key(plaintext, key.digest) and plaintext not in key.digest
    assert (
        plaintext
        not in admin_client.get(
            f"/admin/publishers/publisherapikey/{key.pk}/change/"
        ).content.decode()
    )


def test_it_creates_an_advertiser_token(admin_client, advertiser):
    response = admin_client.post(
        "/admin/tracking/advertiserapikey/add/",
        {"advertiser": advertiser.pk, "kind": "token", "name": "pixel"},
        follow=True,
    )
    plaintext = shown_key(response, "rt_tok")
    assert verify_key(plaintext, AdvertiserAPIKey.objects.get(name="pixel").digest)


def test_it_revokes_selected_keys(admin_client, advertiser, api_key):
    key = AdvertiserAPIKey.objects.get()
    admin_client.post(
        "/admin/tracking/advertiserapikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
        follow=True,
    )
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_one_form_creates_a_publisher_and_invites_its_owner(
    admin_client, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/publishers/publisher/add/",
            {"name": "Acme Media", "status": "active", "owner_email": "Owner@Acme.example"},
            follow=True,
        )
    assert response.status_code == 200
    publisher = Publisher.objects.get(name="Acme Media")
    invitation = Invitation.objects.get(publisher=publisher)
    assert (invitation.email, invitation.role, invitation.status) == (
        "Owner@acme.example",
        Membership.Role.OWNER,
        Invitation.Status.PENDING,
    )
    assert not publisher.memberships.exists()  # the owner joins by accepting the link
    [mail] = mailoutbox
    assert mail.to == ["Owner@acme.example"] and "/invitations/" in mail.body
    shown = [str(m) for m in response.context["messages"]]
    assert "Invitation to own Acme Media sent to Owner@acme.example." in shown, shown
    actions = set(AuditEvent.objects.filter(publisher=publisher).values_list("action", flat=True))
    assert AuditEvent.Action.MEMBER_INVITED in actions


def test_the_onboarding_form_needs_the_owner(admin_client, mailoutbox):
    response = admin_client.post(
        "/admin/publishers/publisher/add/", {"name": "Acme Media", "status": "active"}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["owner_email"]
    assert not Publisher.objects.exists() and not mailoutbox


def test_callback_statuses_are_checkboxes_and_events_a_line(admin_client, template):
    url = f"/admin/publishers/callbacktemplate/{template.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'type="checkbox" name="statuses" value="approved"' in page
    response = admin_client.post(
        url,
        {
            "publisher": template.publisher_id,
            "name": "Sales",
            "url_template": template.url_template,
            "statuses": ["approved", "rejected"],
            "events": "Sale, lead,",
            "campaign": "",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    template.refresh_from_db()
    assert template.statuses == ["approved", "rejected"]
    assert template.events == ["lead", "sale"]
    assert 'value="lead, sale"' in admin_client.get(url).content.decode()


def test_an_unknown_status_is_a_form_error(admin_client, template):
    response = admin_client.post(
        f"/admin/publishers/callbacktemplate/{template.pk}/change/",
        {
            "publisher": template.publisher_id,
            "url_template": template.url_template,
            "statuses": ["shipped"],
            "events": "",
        },
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["statuses"]


def test_postback_rows_are_read_only_in_the_admin(admin_client, template, link):
    make_postbacks(template, link, 1)
    postback = Postback.objects.get()
    url = f"/admin/postbacks/postback/{postback.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="status"' not in page and 'name="next_attempt_at_0"' not in page
    admin_client.post(url, {"status": "succeeded", "attempts": "9"})
    postback.refresh_from_db()
    assert (postback.status, postback.attempts) == (Postback.Status.PENDING, 0)
    assert admin_client.get(f"/admin/postbacks/postback/{postback.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/postbacks/postback/add/").status_code == 403
    changelist = admin_client.get("/admin/postbacks/postback/").content.decode()
    assert "delete_selected" not in changelist and "retry_selected" in changelist


def test_staff_turn_on_revenue_sharing_in_the_change_form(admin_client, publisher):
    page = f"/admin/publishers/publisher/{publisher.pk}/change/"
    form = change_form(admin_client.get(page).content.decode())
    assert "share_revenue" not in form  # off, an unchecked box
    form["share_revenue"] = "on"
    response = admin_client.post(page, form)
    assert response.status_code == 302
    publisher.refresh_from_db()
    assert publisher.share_revenue
    event = AuditEvent.objects.get(publisher=publisher, action="staff.edited")
    assert event.details["changed"] == {"share_revenue": {"from": False, "to": True}}
