"""Publisher sign-up: form → e-mailed link → pending publisher → staff approve or reject in
the admin → the applicant is e-mailed → the owner signs in and invites the team. The form
never tells whether an address has an account; links are signed and expire; requests are
throttled per IP address and per e-mail address; CSRF is on."""

import io
import re
import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.core import mail, signing
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.test import Client, TestCase, override_settings
from django.urls import reverse

from config.redis import get_redis
from publishers import signup
from publishers.models import AuditEvent, Invitation, Membership, Publisher, SignupApplication
from publishers.services import api_key_create
from tracking.cache import process_caches_clear
from tracking.models import TrackingLink

pytestmark = pytest.mark.django_db

PASSWORD = "a-Long-new-pass-42"
Action = AuditEvent.Action


@pytest.fixture(autouse=True)
def throttle_fresh():
    """Each test starts with no sign-up counted (the counters live in Redis)."""
    client = get_redis()
    keys = list(client.scan_iter(match="*throttle_publisher_signup_*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def staff_client() -> Client:
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    client = Client()
    client.force_login(staff)
    return client


def request_signup(client: Client, email: str, name: str = "Example Media", **extra):
    mail.outbox.clear()
    return client.post(reverse("signup"), {"email": email, "name": name}, **extra)


def link_in(message) -> str:
    url = re.search(r"https?://\S+/signup/verify/\S+/", message.body).group(0)
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def verify(client: Client, link: str, **overrides):
    data = {
        "password1": PASSWORD,
        "password2": PASSWORD,
        "website": "https://media.example",
        "about": "Newsletters in FR and DE",
        **overrides,
    }
    return client.post(link, data)


def decide(staff_client: Client, action: str, *applications: SignupApplication):
    mail.outbox.clear()
    with TestCase.captureOnCommitCallbacks(execute=True):
        return staff_client.post(
            reverse("admin:publishers_signupapplication_changelist"),
            {"action": action, "_selected_action": [a.pk for a in applications]},
            follow=True,
        )


def signed_up(email: str = "ana@media.example", name: str = "Example Media") -> Client:
    """An applicant who signed up and verified (signed in, publisher pending)."""
    applicant = Client()
    assert request_signup(applicant, email, name).status_code == 302
    [message] = mail.outbox
    assert verify(applicant, link_in(message)).status_code == 302
    return applicant


def test_it_signs_up_waits_for_approval_then_the_owner_invites_the_team(client, staff_client):
    login_page = client.get(reverse("login")).content.decode()
    assert f'href="{reverse("signup")}"' in login_page

    response = request_signup(client, "Ana@Media.example", "Example Media")
    assert response.status_code == 302 and response["Location"] == reverse("signup_sent")
    assert "Check your inbox" in client.get(response["Location"]).content.decode()
    [message] = mail.outbox
    assert message.to == ["Ana@media.example"]
    link = link_in(message)
    # Nothing is stored for an address nobody verified.
    assert not Publisher.objects.filter(name="Example Media").exists()

    page = client.get(link)
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    assert "Ana@media.example" in page.content.decode()
    response = verify(client, link)
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")

    publisher = Publisher.objects.get(name="Example Media")
    application = publisher.signup_application
    assert publisher.status == Publisher.Status.PENDING
    assert application.status == SignupApplication.Status.PENDING
    assert application.website == "https://media.example"
    owner = Membership.objects.get(publisher=publisher)
    assert owner.role == Membership.Role.OWNER and owner.user.username == "Ana@media.example"
    [event] = AuditEvent.objects.filter(publisher=publisher, action=Action.SIGNED_UP)
    assert event.actor == owner.user and event.ip == "127.0.0.1"

    # Pending: signed in, but every dashboard page shows only the status.
    for name in ("dashboard", "reports", "links", "api_keys", "settings"):
        gated = client.get(reverse(name))
        assert gated.status_code == 403, name
        assert "Your application is pending" in gated.content.decode()
    assert client.post(reverse("api_key_create"), {"name": "k"}).status_code == 403
    assert not publisher.api_keys.exists()

    changelist = staff_client.get(
        reverse("admin:publishers_signupapplication_changelist") + "?status__exact=pending"
    ).content.decode()
    assert "Example Media" in changelist and "https://media.example" in changelist
    done = decide(staff_client, "approve", application)
    assert "Approved 1 application(s)" in done.content.decode()
    [approved] = mail.outbox
    assert approved.to == ["Ana@media.example"]
    assert "is approved" in approved.subject and "/accounts/login/" in approved.body
    publisher.refresh_from_db()
    application.refresh_from_db()
    assert publisher.status == Publisher.Status.ACTIVE
    assert application.status == SignupApplication.Status.APPROVED
    assert application.decided_by.username == "root" and application.decided_at
    [event] = AuditEvent.objects.filter(publisher=publisher, action=Action.SIGNUP_APPROVED)
    assert event.via == AuditEvent.Via.ADMIN

    # The owner signs in with the address and the password chosen, and invites a colleague.
    owner_browser = Client()
    signed_in = owner_browser.post(
        reverse("login"), {"username": "Ana@media.example", "password": PASSWORD}
    )
    assert signed_in.status_code == 302 and signed_in["Location"] == "/dashboard/"
    assert owner_browser.get(reverse("dashboard")).status_code == 200
    mail.outbox.clear()
    with TestCase.captureOnCommitCallbacks(execute=True):
        invited = owner_browser.post(
            reverse("member_invite"), {"email": "bo@media.example", "role": "member"}
        )
    assert invited.status_code == 302
    assert Invitation.objects.get(publisher=publisher).email == "bo@media.example"
    [invitation] = mail.outbox
    assert invitation.to == ["bo@media.example"] and "/invitations/" in invitation.body


def test_a_rejected_applicant_is_told_and_stays_shut_out(staff_client):
    applicant = signed_up()
    application = SignupApplication.objects.get(email="ana@media.example")
    publisher = application.publisher
    # A key staff made by mistake does not open the API either.
    _, key = api_key_create(publisher=publisher)
    reason = "We only work with sites that have their own traffic."
    change = reverse("admin:publishers_signupapplication_change", args=[application.pk])
    assert staff_client.post(change, {"reason": reason}).status_code == 302
    application.refresh_from_db()
    assert application.reason == reason
    [edit] = AuditEvent.objects.filter(publisher=publisher, action=Action.STAFF_EDITED)
    assert edit.details["changed"] == {"reason": {"from": "", "to": reason}}

    decide(staff_client, "reject", application)
    [message] = mail.outbox
    assert message.to == ["ana@media.example"]
    assert "could not approve" in message.body and application.reason in message.body
    publisher.refresh_from_db()
    assert publisher.status == Publisher.Status.REJECTED
    page = applicant.get(reverse("dashboard"))
    assert page.status_code == 403
    assert "was not approved" in page.content.decode()
    assert application.reason in page.content.decode()
    api = Client().get("/api/v1/postbacks", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.status_code == 401
    [event] = AuditEvent.objects.filter(publisher=publisher, action=Action.SIGNUP_REJECTED)
    assert event.details["reason"] == application.reason

    # A decision is taken once: rejecting again e-mails nobody; staff may still approve.
    assert (
        "Rejected 0 application(s)" in decide(staff_client, "reject", application).content.decode()
    )
    assert mail.outbox == []
    decide(staff_client, "approve", application)
    assert len(mail.outbox) == 1
    assert applicant.get(reverse("dashboard")).status_code == 200
    assert "Approved 0" in decide(staff_client, "approve", application).content.decode()
    assert mail.outbox == []


def test_the_answer_never_tells_whether_an_address_has_an_account(client, publisher):
    owner = get_user_model().objects.get(username="owner-a")
    owner.email = "owner@a.example"
    owner.save()
    get_user_model().objects.create_user(username="named@a.example", password="x")
    signed_up("waiting@a.example")  # a pending application for this address

    answers = {}
    for email in ("fresh@a.example", "OWNER@a.example", "named@a.example", "waiting@A.example"):
        response = request_signup(client, email)
        page = client.get(response["Location"])
        answers[email] = (response.status_code, response["Location"], page.content)
        [message] = mail.outbox
        answers[email + " mail"] = message
    first = answers["fresh@a.example"]
    assert all(
        answers[email] == first
        for email in ("OWNER@a.example", "named@a.example", "waiting@A.example")
    )
    assert "/signup/verify/" in answers["fresh@a.example mail"].body
    for email in ("OWNER@a.example", "named@a.example", "waiting@A.example"):
        message = answers[email + " mail"]
        assert "already has an account" in message.body and "/signup/verify/" not in message.body
    # Nothing was made for the taken addresses.
    assert SignupApplication.objects.count() == 1
    assert Publisher.objects.filter(name="Example Media").count() == 1


def test_a_link_makes_one_account_and_a_second_use_is_refused(client):
    request_signup(client, "ana@media.example")
    [first] = mail.outbox
    request_signup(client, "ana@media.example", "Another name")
    [second] = mail.outbox
    assert verify(Client(), link_in(first)).status_code == 302
    for link in (link_in(first), link_in(second)):
        again = Client()
        for refused in (again.get(link), verify(again, link)):
            assert refused.status_code == 410
            assert "This link was already used" in refused.content.decode()
    assert SignupApplication.objects.count() == 1
    assert get_user_model().objects.filter(email__iexact="ana@media.example").count() == 1


def test_expired_and_tampered_links_get_a_clear_4xx_page(client, settings):
    request_signup(client, "ana@media.example")
    [message] = mail.outbox
    link = link_in(message)
    token = link.rstrip("/").rsplit("/", 1)[1]

    class Yesterday(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - 25 * 3600)

    old = Yesterday(salt=signup.LINK_SALT).sign_object(
        {"e": "ana@media.example", "n": "Example Media"}, compress=True
    )
    expired = client.get(reverse("signup_verify", kwargs={"token": old}))
    assert expired.status_code == 410
    assert "This link has expired" in expired.content.decode()
    assert verify(client, reverse("signup_verify", kwargs={"token": old})).status_code == 410

    payload, rest = token.split(":", 1)
    edited = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + ":" + rest
    other_salt = signing.dumps({"e": "ana@media.example", "n": "x"}, salt="another.purpose")
    for bad in (edited, other_salt, "x1", token[:-3], "a" * 2000):
        response = client.get(reverse("signup_verify", kwargs={"token": bad}))
        assert response.status_code == 400, bad
        assert "This link is not valid" in response.content.decode()
        assert verify(client, reverse("signup_verify", kwargs={"token": bad})).status_code == 400
    settings.PUBLISHER_SIGNUP_LINK_HOURS = 0
    time.sleep(1.1)
    assert client.get(link).status_code == 410
    assert not get_user_model().objects.filter(email__iexact="ana@media.example").exists()


def test_it_throttles_sign_up_requests_per_ip_and_per_address(client, settings):
    settings.PUBLISHER_SIGNUP_RATE_LIMIT = "3/hour"
    for i in range(3):
        response = request_signup(client, f"a{i}@media.example", REMOTE_ADDR="198.51.100.1")
        assert response.status_code == 302
    refused = request_signup(client, "a9@media.example", REMOTE_ADDR="198.51.100.1")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 3000
    assert "Too many sign-up requests" in refused.content.decode()
    assert mail.outbox == []
    # Per address, whatever the client's address.
    for i in range(3):
        response = request_signup(client, "target@media.example", REMOTE_ADDR=f"203.0.113.{i}")
        assert response.status_code == 302
    by_address = request_signup(client, "Target@media.example", REMOTE_ADDR="203.0.113.50")
    assert by_address.status_code == 429 and mail.outbox == []
    # Another client and another address still pass.
    assert request_signup(client, "b@media.example", REMOTE_ADDR="192.0.2.1").status_code == 302


def test_csrf_protects_the_form_and_the_link(settings):
    browser = Client(enforce_csrf_checks=True)
    data = {"email": "ana@media.example", "name": "Example Media"}
    assert browser.post(reverse("signup"), data).status_code == 403
    assert mail.outbox == []
    page = browser.get(reverse("signup")).content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert browser.post(reverse("signup"), {**data, "csrfmiddlewaretoken": csrf}).status_code == 302
    link = link_in(mail.outbox[0])
    form = {"password1": PASSWORD, "password2": PASSWORD, "website": "https://media.example"}
    assert browser.post(link, form).status_code == 403
    assert not Publisher.objects.filter(name="Example Media").exists()
    page = browser.get(link).content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert browser.post(link, {**form, "csrfmiddlewaretoken": csrf}).status_code == 302


def test_bad_input_is_a_form_error_and_makes_nothing(client):
    response = client.post(reverse("signup"), {"email": "not-an-address", "name": ""})
    assert response.status_code == 400 and mail.outbox == []
    assert "Enter a valid email address" in response.content.decode()
    # The name goes into e-mail subjects: one line only.
    response = request_signup(client, "ana@media.example", "Media\nBcc: all@example.com")
    assert response.status_code == 400 and mail.outbox == []
    assert "without control characters" in response.content.decode()
    request_signup(client, "ana@media.example")
    link = link_in(mail.outbox[0])
    for overrides in (
        {"password2": "something-else-42"},
        {"password1": "123", "password2": "123"},
        {"website": "not a url"},
        {"website": ""},
        {"about": "x" * 1001},
    ):
        assert verify(client, link, **overrides).status_code == 400, overrides
    assert not SignupApplication.objects.exists()
    assert not get_user_model().objects.filter(email="ana@media.example").exists()


def test_sign_up_can_be_closed(client, settings):
    request_signup(client, "ana@media.example")
    link = link_in(mail.outbox[0])
    settings.PUBLISHER_SIGNUP_OPEN = False
    assert 'id="signup-link"' not in client.get(reverse("login")).content.decode()
    for path in (reverse("signup"), reverse("signup_sent"), link):
        assert client.get(path).status_code == 404, path
    assert request_signup(client, "bo@media.example").status_code == 404
    assert mail.outbox == []
    assert verify(client, link).status_code == 404
    assert not SignupApplication.objects.exists()


def test_staff_may_view_a_pending_publisher_read_only(staff_client):
    signed_up()
    publisher = Publisher.objects.get(name="Example Media")
    staff_client.post(reverse("staff_view_start"), {"publisher": publisher.public_id})
    assert staff_client.get(reverse("dashboard")).status_code == 200


def test_a_member_of_another_team_still_uses_that_one(publisher):
    """The gate is per publisher: an approved team's dashboard is not closed by a pending one."""
    applicant = signed_up()
    user = get_user_model().objects.get(username="ana@media.example")
    Membership.objects.create(publisher=publisher, user=user, role=Membership.Role.MEMBER)
    applicant.post(reverse("publisher_switch"), {"publisher": publisher.public_id})
    assert applicant.get(reverse("dashboard")).status_code == 200
    pending = Publisher.objects.get(name="Example Media")
    applicant.post(reverse("publisher_switch"), {"publisher": pending.public_id})
    assert applicant.get(reverse("dashboard")).status_code == 403


def test_the_demo_seed_leaves_one_application_for_staff_to_approve(staff_client):
    call_command("seed_demo", "--json", stdout=io.StringIO())
    [application] = SignupApplication.objects.all()
    assert application.status == SignupApplication.Status.PENDING
    assert application.publisher.status == Publisher.Status.PENDING
    decide(staff_client, "approve", application)
    # A second run neither fails nor reopens what staff decided.
    out = io.StringIO()
    call_command("seed_demo", "--json", stdout=out)
    assert "/admin/publishers/signupapplication/" in out.getvalue()
    [application] = SignupApplication.objects.all()
    assert application.status == SignupApplication.Status.APPROVED
    applicant = Client()
    signed_in = applicant.post(
        reverse("login"), {"username": "applicant@example.com", "password": "roundtrip-applicant"}
    )
    assert signed_in.status_code == 302
    assert applicant.get(reverse("dashboard")).status_code == 200


def test_sign_up_still_works_unthrottled_when_redis_is_down(client):
    unreachable = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        }
    }
    with override_settings(CACHES=unreachable, PUBLISHER_SIGNUP_RATE_LIMIT="1/hour"):
        caches._settings = None  # make the cache handler re-read CACHES
        try:
            for i in range(3):
                assert request_signup(client, f"a{i}@media.example").status_code == 302
                assert len(mail.outbox) == 1
        finally:
            caches._settings = None


def test_a_pending_publishers_link_and_key_do_not_work_until_approved(campaign, staff_client):
    signed_up()
    application = SignupApplication.objects.get()
    publisher = application.publisher
    link = TrackingLink.objects.create(publisher=publisher, campaign=campaign, code="pending-1")
    _, key = api_key_create(publisher=publisher)
    visitor = Client()
    assert visitor.get("/click?ref=pending-1&spid=1").status_code == 404
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get("/api/v1/postbacks").status_code == 401
    decide(staff_client, "approve", application)
    process_caches_clear()  # the click endpoint caches each link's read for a few seconds
    assert visitor.get(f"/click?ref={link.code}&spid=1").status_code == 302
    assert api.get("/api/v1/postbacks").status_code == 200


def test_the_service_makes_one_account_per_address():
    claim = signup.SignupClaim(email="ana@media.example", name="Example Media")
    signup.signup_complete(claim=claim, password=PASSWORD, website="https://media.example")
    with pytest.raises(signup.SignupError) as refused:
        signup.signup_complete(
            claim=signup.SignupClaim(email="ANA@media.example", name="Again"),
            password=PASSWORD,
            website="https://media.example",
        )
    assert refused.value.code == "taken"
    assert Publisher.objects.filter(status=Publisher.Status.PENDING).count() == 1


@pytest.mark.django_db(transaction=True)
def test_one_link_opened_twice_at_once_makes_one_account():
    """Both requests may pass the "address taken" check before either commits: the unique
    username then refuses the second, which answers "taken" (never a 500)."""
    claim = signup.SignupClaim(email="ana@media.example", name="Example Media")
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def complete() -> None:
        start.wait()
        try:
            signup.signup_complete(claim=claim, password=PASSWORD, website="https://m.example")
            outcomes.append("made")
        except signup.SignupError as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=complete) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["made", "taken", "taken", "taken"]
    assert get_user_model().objects.filter(username="ana@media.example").count() == 1
    assert SignupApplication.objects.count() == 1
    assert Publisher.objects.filter(name="Example Media").count() == 1
