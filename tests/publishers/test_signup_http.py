"""Publisher sign-up over real HTTP (pytest-django's live server, committed data, a cookie jar
and CSRF tokens read from the pages, as a browser has them): sign up, verify, wait, be
approved by staff in the admin, sign in, invite a colleague."""

import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.cookiejar import CookieJar

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from config.redis import get_redis
from publishers.models import Invitation, Publisher, SignupApplication

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-Long-new-pass-42"


@pytest.fixture(autouse=True)
def throttle_fresh():
    client = get_redis()
    keys = list(client.scan_iter(match="*throttle_publisher_signup_*"))
    if keys:
        client.delete(*keys)


@dataclass
class Page:
    status: int
    path: str
    body: str

    def csrf(self) -> str:
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', self.body).group(1)


class Browser:
    """Cookies kept, redirects followed, 4xx answers read like any other page."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def open(self, path: str, data: dict | None = None) -> Page:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        # The live server: always http://localhost:port.
        request = urllib.request.Request(self.base_url + path, data=body)  # noqa: S310
        try:
            with self.opener.open(request, timeout=15) as response:
                return Page(
                    response.status,
                    urllib.parse.urlsplit(response.url).path,
                    response.read().decode(),
                )
        except urllib.error.HTTPError as error:
            return Page(error.code, urllib.parse.urlsplit(error.url).path, error.read().decode())

    def submit(self, path: str, data: dict) -> Page:
        """Open the form's page, then post it with the page's CSRF token."""
        return self.open(path, {**data, "csrfmiddlewaretoken": self.open(path).csrf()})


def last_link(pattern: str) -> str:
    url = re.search(pattern, mail.outbox[-1].body).group(0)
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_a_publisher_signs_up_is_approved_and_invites_a_colleague(live_server):
    applicant = Browser(live_server.url)
    login = applicant.open("/accounts/login/")
    assert 'href="/signup/"' in login.body

    sent = applicant.submit("/signup/", {"email": "ana@media.example", "name": "Example Media"})
    assert sent.status == 200 and sent.path == "/signup/sent/"
    assert mail.outbox[-1].to == ["ana@media.example"]
    link = last_link(r"https?://\S+/signup/verify/\S+/")

    pending = applicant.submit(
        link,
        {
            "password1": PASSWORD,
            "password2": PASSWORD,
            "website": "https://media.example",
            "about": "Newsletters",
        },
    )
    assert pending.status == 403 and pending.path == "/dashboard/"
    assert "Your application is pending" in pending.body
    assert applicant.open("/dashboard/reports/").status == 403

    get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    staff = Browser(live_server.url)
    staff.submit("/admin/login/?next=/admin/", {"username": "root", "password": "pw-root"})
    queue = "/admin/publishers/signupapplication/?status__exact=pending"
    application = SignupApplication.objects.get(email="ana@media.example")
    decided = staff.open(
        queue,
        {
            "action": "approve",
            "_selected_action": str(application.pk),
            "csrfmiddlewaretoken": staff.open(queue).csrf(),
        },
    )
    assert decided.status == 200 and "Approved 1 application(s)" in decided.body
    assert Publisher.objects.get(name="Example Media").status == Publisher.Status.ACTIVE
    approved = mail.outbox[-1]
    assert approved.to == ["ana@media.example"] and "is approved" in approved.subject

    owner = Browser(live_server.url)
    overview = owner.submit(
        "/accounts/login/", {"username": "ana@media.example", "password": PASSWORD}
    )
    assert overview.status == 200 and overview.path == "/dashboard/"
    invited = owner.open(
        "/dashboard/settings/team/invite/",
        {
            "email": "bo@media.example",
            "role": "member",
            "csrfmiddlewaretoken": owner.open("/dashboard/settings/").csrf(),
        },
    )
    assert invited.status == 200 and "Invitation sent to bo@media.example" in invited.body
    assert Invitation.objects.get(email="bo@media.example").publisher.name == "Example Media"
    assert mail.outbox[-1].to == ["bo@media.example"]
