"""Team invitations: nobody joins a team without accepting the e-mailed link; the inviting
owner can't tell whether an address has an account; an account's own events reach only the
trails of teams it accepted. Owner (publisher A's) invites, member is refused, outsider (the
owner of publisher C, an existing account) is the person invited."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client, TestCase
from django.urls import reverse
from django.utils import timezone

from publishers import services
from publishers.models import AuditEvent, Invitation, Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def invitee() -> Client:
    """The invited person's browser (the owner's is `owner_client`)."""
    return Client()


Action = AuditEvent.Action
PASSWORD = "a-Long-new-pass-42"


@pytest.fixture
def outsider(other_publisher):
    """C's owner, an existing account with a password and an address."""
    user = get_user_model().objects.get(username="owner-c")
    user.email = "carol@example.com"
    user.save()
    return user


def invite(owner_client, email: str, role: str = "member"):
    mail.outbox.clear()
    # The e-mail leaves when the invitation commits.
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = owner_client.post(
            reverse("member_invite"), {"email": email, "role": role}, follow=True
        )
    assert response.status_code == 200
    [message] = mail.outbox
    link = re.search(r"https?://\S+/invitations/\S+/", message.body).group(0)
    return response, message, "/" + link.split("://", 1)[1].split("/", 1)[1]


def joined(publisher, user) -> bool:
    return Membership.objects.filter(publisher=publisher, user=user).exists()


def trail(publisher, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(publisher=publisher, action=action))


def change_password(client, user) -> None:
    client.force_login(user)
    client.post(reverse("password_reset"), {"email": user.email})
    link = next(line for line in mail.outbox[-1].body.splitlines() if "/accounts/reset/" in line)
    form = client.get("/" + link.split("://", 1)[1].split("/", 1)[1], follow=True)
    response = client.post(
        form.redirect_chain[-1][0], {"new_password1": PASSWORD, "new_password2": PASSWORD}
    )
    assert response.status_code == 302


def test_it_answers_the_same_for_new_and_existing_addresses(owner_client, publisher, outsider):
    existing, existing_mail, _ = invite(owner_client, "carol@example.com")
    fresh, fresh_mail, _ = invite(owner_client, "nobody@example.com")

    def neutral(text: str, email: str) -> str:
        text = text.replace(email, "EMAIL")
        text = re.sub(r"/invitations/[^/]+/", "/invitations/TOKEN/", text)
        text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", text)
        return text

    assert neutral(existing_mail.body, "carol@example.com") == neutral(
        fresh_mail.body, "nobody@example.com"
    )
    assert existing_mail.subject == fresh_mail.subject
    messages = [
        neutral(str(m), e)
        for r, e in ((existing, "carol@example.com"), (fresh, "nobody@example.com"))
        for m in r.context["messages"]
    ]
    assert messages[0] == messages[1]
    # Neither address joined; the existing account's username shows nowhere.
    page = owner_client.get(reverse("settings")).content.decode()
    assert "owner-c" not in page and "owner-c" not in existing_mail.body
    assert not joined(publisher, outsider)
    assert "carol@example.com" in page and "nobody@example.com" in page  # as invitations
    for event in trail(publisher, Action.MEMBER_INVITED):
        assert set(event.details) == {"email", "role"} and event.target_type == "invitation"
    assert not get_user_model().objects.filter(email="nobody@example.com").exists()


def test_it_keeps_an_unaccepted_accounts_events_out_of_the_team_trail(
    owner_client, invitee, publisher, outsider
):
    invite(owner_client, "carol@example.com")
    change_password(invitee, outsider)
    assert trail(publisher, Action.PASSWORD_CHANGED) == []
    activity = owner_client.get(reverse("activity") + "?action=account.password_changed")
    assert activity.context["events"] == []
    assert "owner-c" not in activity.content.decode()


def test_it_joins_an_existing_account_only_when_it_accepts(
    owner_client, invitee, publisher, other_publisher, outsider
):
    _, _, link = invite(owner_client, "carol@example.com", role="owner")
    # Signed out: the page asks to sign in, and an accept is refused.
    invitee.logout()
    assert "Sign in to accept" in invitee.get(link).content.decode()
    assert invitee.post(link, {"answer": "accept"}).status_code == 400
    # Signed in as someone else (A's member): refused too.
    invitee.force_login(get_user_model().objects.get(username="member-a"))
    assert invitee.post(link, {"answer": "accept"}).status_code == 400
    assert not joined(publisher, outsider)

    invitee.force_login(outsider)
    page = invitee.get(link)
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    assert invitee.post(link, {"answer": "accept"}).status_code == 302
    assert Membership.objects.get(publisher=publisher, user=outsider).role == "owner"
    assert joined(other_publisher, outsider)  # still on its own team
    [event] = trail(publisher, Action.INVITATION_ACCEPTED)
    assert event.actor == outsider and event.ip == "127.0.0.1"
    assert Invitation.objects.get(publisher=publisher).status == Invitation.Status.ACCEPTED
    # The link is spent, and from now on the account's password changes are A's business.
    assert invitee.get(link).status_code == 410
    change_password(invitee, outsider)
    assert len(trail(publisher, Action.PASSWORD_CHANGED)) == 1


def test_it_creates_the_account_of_a_new_address_on_acceptance(invitee, owner_client, publisher):
    _, _, link = invite(owner_client, "dan@example.com")
    invitee.logout()
    weak = invitee.post(link, {"answer": "accept", "password1": "dan", "password2": "dan"})
    assert weak.status_code == 400 and not get_user_model().objects.filter(email="dan@example.com")
    response = invitee.post(
        link, {"answer": "accept", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302
    user = get_user_model().objects.get(email="dan@example.com")
    assert user.check_password(PASSWORD) and joined(publisher, user)
    assert invitee.get(reverse("dashboard")).status_code == 200  # signed in as the new account


def test_it_records_a_decline_and_joins_nobody(invitee, owner_client, publisher, outsider):
    _, _, link = invite(owner_client, "carol@example.com")
    invitee.logout()
    response = invitee.post(link, {"answer": "decline"})
    assert response.status_code == 200 and "declined" in response.content.decode()
    assert not joined(publisher, outsider)
    [event] = trail(publisher, Action.INVITATION_DECLINED)
    assert event.who == "carol@example.com"
    assert invitee.post(link, {"answer": "accept"}).status_code == 410
    invitee.force_login(outsider)
    assert invitee.post(link, {"answer": "accept"}).status_code == 410
    assert not joined(publisher, outsider)


def test_it_refuses_an_expired_invitation(invitee, owner_client, publisher, outsider):
    _, _, link = invite(owner_client, "carol@example.com")
    Invitation.objects.filter(publisher=publisher).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    invitee.force_login(outsider)
    page = invitee.get(link)
    assert page.status_code == 410 and "expired" in page.content.decode()
    assert invitee.post(link, {"answer": "accept"}).status_code == 410
    assert not joined(publisher, outsider)
    with pytest.raises(services.TeamError, match="expired"):
        services.invitation_accept(invitation=Invitation.objects.get(), user=outsider)
    # Inviting again renews it: a new link, and the old one is dead.
    _, _, fresh = invite(owner_client, "carol@example.com")
    assert fresh != link and invitee.get(link).status_code == 404
    assert invitee.post(fresh, {"answer": "accept"}).status_code == 302
    assert joined(publisher, outsider)


def test_it_lets_owners_withdraw_an_invitation(invitee, owner_client, publisher):
    _, _, link = invite(owner_client, "erin@example.com")
    revoke = reverse("member_invitation_revoke")
    invitee.force_login(get_user_model().objects.get(username="member-a"))
    assert invitee.post(revoke, {"email": "erin@example.com"}).status_code == 403
    invitee.force_login(get_user_model().objects.get(username="owner-a"))
    assert invitee.post(revoke, {"email": "erin@example.com"}).status_code == 302
    assert invitee.post(revoke, {"email": "erin@example.com"}).status_code == 404
    assert len(trail(publisher, Action.INVITATION_REVOKED)) == 1
    invitee.logout()
    assert invitee.get(link).status_code == 410


def test_it_answers_404_to_an_unknown_link(client):
    assert client.get("/invitations/not-a-token/").status_code == 404
    assert client.post("/invitations/not-a-token/", {"answer": "accept"}).status_code == 404
