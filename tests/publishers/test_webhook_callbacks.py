"""JSON webhook callbacks in the dashboard and the API: the method choice, the callback's secret
(owners reveal and rotate it; members and outsiders can't; never in the API), the test
postback signed with the saved callback's secret, and Deliveries and the trace showing the
method and the body."""

import json
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from postbacks import dispatch
from postbacks.models import Postback
from publishers import services
from publishers.models import AuditEvent, CallbackTemplate
from tests.tracking.helpers import click_stored
from tests.webhook_spec import spec_verify
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


@pytest.fixture
def webhook(publisher, receiver) -> CallbackTemplate:
    return services.callback_template_create(
        publisher=publisher, url_template=f"{receiver.base_url}/hooks", method="POST"
    )


def test_it_creates_a_json_webhook_from_the_form_and_shows_its_page(owner_client, receiver):
    response = owner_client.post(
        reverse("callback_new"),
        {
            "url_template": f"{receiver.base_url}/hooks?s=[spid]",
            "method": "POST",
            "statuses": ["approved"],
            "is_active": "on",
        },
    )
    template = CallbackTemplate.objects.get()
    assert template.method == "POST"
    assert template.webhook_secret.startswith("whsec_")
    # Straight to its page, where its secret is revealed, not to the list.
    assert response.status_code == 302
    assert response["Location"] == reverse("callback_edit", args=[template.public_id])
    page = owner_client.get(response["Location"])
    assert page.context["form"].initial["method"] == "POST"
    assert template.webhook_secret not in page.content.decode()  # revealed on demand only
    listing = owner_client.get(reverse("callbacks")).content.decode()
    assert 'data-method="POST"' in listing


def test_it_refuses_an_unknown_method_in_the_form(owner_client, receiver):
    response = owner_client.post(
        reverse("callback_new"),
        {"url_template": f"{receiver.base_url}/hooks", "method": "PUT", "statuses": ["approved"]},
    )
    assert response.status_code == 200
    assert "method" in response.context["form"].errors
    assert not CallbackTemplate.objects.exists()


def test_an_owner_reveals_and_rotates_the_webhook_secret(owner_client, webhook, publisher):
    revealed = owner_client.post(reverse("callback_secret_reveal", args=[webhook.public_id]))
    assert revealed.status_code == 200
    assert revealed["Cache-Control"] == "no-store"
    assert webhook.webhook_secret in revealed.content.decode()
    assert AuditEvent.objects.filter(
        publisher=publisher, action="callback.secret_revealed", target_id=webhook.public_id
    ).exists()

    old = webhook.webhook_secret
    rotated = owner_client.post(reverse("callback_secret_rotate", args=[webhook.public_id]))
    webhook.refresh_from_db()
    assert webhook.webhook_secret != old and webhook.previous_webhook_secret == old
    page = rotated.content.decode()
    assert webhook.webhook_secret in page and old in page
    assert webhook.active_webhook_secrets() == [webhook.webhook_secret, old]
    later = timezone.now() + timedelta(hours=24, minutes=1)
    assert webhook.active_webhook_secrets(now=later) == [webhook.webhook_secret]
    event = AuditEvent.objects.get(action="callback.secret_rotated")
    assert old not in json.dumps(event.details) and webhook.webhook_secret not in str(event.details)


def test_a_member_sees_the_callback_but_not_its_secret(member_client, webhook):
    page = member_client.get(reverse("callback_edit", args=[webhook.public_id]))
    assert page.status_code == 200
    assert "Only your team's owners" in page.content.decode()
    assert webhook.webhook_secret not in page.content.decode()
    for name in ("callback_secret_reveal", "callback_secret_rotate"):
        assert member_client.post(reverse(name, args=[webhook.public_id])).status_code == 403
    webhook.refresh_from_db()
    assert webhook.previous_webhook_secret == ""


def test_revealing_and_rotating_need_the_csrf_token(webhook):
    client = Client(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.get(username="owner-a"))
    for name in ("callback_secret_reveal", "callback_secret_rotate"):
        assert client.post(reverse(name, args=[webhook.public_id])).status_code == 403
    assert not AuditEvent.objects.filter(action__startswith="callback.secret").exists()


def test_the_editor_test_is_signed_with_the_saved_callbacks_secret(owner_client, webhook, receiver):
    response = owner_client.post(
        reverse("callback_test"),
        {"url_template": webhook.url_template, "method": "POST", "callback": webhook.public_id},
        HTTP_ACCEPT="application/json",
    )
    result = response.json()
    assert result["ok"], result
    assert result["request"]["method"] == "POST"
    [received] = receiver.requests
    assert received.method == "POST"
    assert received.body.decode() == result["request"]["body"]
    assert spec_verify(webhook.webhook_secret, received.headers, received.body, now=time.time())


def test_deliveries_and_the_trace_show_the_method_and_body(
    member_client, webhook, link, advertiser, receiver
):
    receiver.status = 500  # failing: listed on Deliveries
    click = click_stored(link=link, spid="spid-json", user_agent=BROWSER)
    conversion_record(advertiser=advertiser, click_id=click.click_id)
    postback = Postback.objects.get()
    assert postback.method == "POST"
    dispatch.postbacks_dispatch(dispatch.Lane.FIRST, wait=float("inf"), kicks=False)
    deliveries = member_client.get(reverse("deliveries")).content.decode()
    assert 'data-method="POST"' in deliveries
    assert "JSON body" in deliveries and "spid-json" in deliveries
    trace = member_client.get(reverse("trace") + "?q=spid-json").content.decode()
    assert 'data-method="POST"' in trace
    escaped = postback.body.replace('"', "&quot;")
    assert escaped in trace


# --- API -------------------------------------------------------------------------------------


@pytest.fixture
def api(publisher_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {publisher_key}")
    return client


def test_the_api_creates_changes_and_lists_the_method_without_the_secret(api, receiver):
    created = api.post(
        "/api/v1/callbacks",
        {"url_template": f"{receiver.base_url}/hooks", "method": "POST"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["method"] == "POST"
    template = CallbackTemplate.objects.get(public_id=body["id"])
    assert template.webhook_secret not in json.dumps(body)
    assert not any("secret" in name for name in body)

    patched = api.patch(f"/api/v1/callbacks/{body['id']}", {"method": "GET"}, format="json")
    assert patched.status_code == 200 and patched.json()["method"] == "GET"
    # A PATCH that doesn't name the method keeps it.
    api.patch(f"/api/v1/callbacks/{body['id']}", {"method": "POST"}, format="json")
    kept = api.patch(f"/api/v1/callbacks/{body['id']}", {"name": "renamed"}, format="json")
    assert kept.json()["method"] == "POST"
    default = api.post(
        "/api/v1/callbacks", {"url_template": f"{receiver.base_url}/get"}, format="json"
    )
    assert default.json()["method"] == "GET"


@pytest.mark.parametrize("method", ["PUT", "get", "", None, 1, ["POST"]])
def test_the_api_refuses_an_unknown_method(api, receiver, method):
    response = api.post(
        "/api/v1/callbacks",
        {"url_template": f"{receiver.base_url}/hooks", "method": method},
        format="json",
    )
    assert response.status_code == 400, response.json()
    assert "method" in json.dumps(response.json())
    assert not CallbackTemplate.objects.exists()


def test_the_api_test_of_a_webhook_is_a_signed_post(api, webhook, receiver):
    response = api.post(f"/api/v1/callbacks/{webhook.public_id}/test", {}, format="json")
    result = response.json()
    assert response.status_code == 200 and result["ok"], result
    assert result["request"]["method"] == "POST"
    [received] = receiver.requests
    assert spec_verify(webhook.webhook_secret, received.headers, received.body, now=time.time())


def test_an_edit_that_does_not_send_the_method_keeps_it(owner_client, webhook):
    response = owner_client.post(
        reverse("callback_edit", args=[webhook.public_id]),
        {"url_template": webhook.url_template, "statuses": ["approved"], "is_active": "on"},
    )
    assert response.status_code == 302
    webhook.refresh_from_db()
    assert webhook.method == "POST"


def test_deleting_a_webhook_warns_that_its_undelivered_webhooks_will_fail(
    member_client, webhook, link, advertiser, receiver
):
    click = click_stored(link=link, spid="spid-del", user_agent=BROWSER)
    conversion_record(advertiser=advertiser, click_id=click.click_id)
    page = member_client.get(reverse("callback_delete", args=[webhook.public_id]))
    assert page.context["undelivered_webhooks"] == 1
    assert "fail rather than go out unsigned" in page.content.decode()


def test_staff_set_the_method_in_the_admin_and_never_see_the_secret(admin_client, webhook):
    url = f"/admin/publishers/callbacktemplate/{webhook.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="method"' in page
    assert webhook.webhook_secret not in page
    response = admin_client.post(
        url,
        {
            "publisher": webhook.publisher_id,
            "url_template": webhook.url_template,
            "method": "GET",
            "statuses": ["approved"],
            "events": "",
            "campaign": "",
        },
    )
    assert response.status_code == 302
    webhook.refresh_from_db()
    assert webhook.method == "GET"
    event = AuditEvent.objects.get(action="staff.edited")
    assert event.details["changed"]["method"] == {"from": "POST", "to": "GET"}
