"""Django admin: keys are generated, shown once and revocable; postbacks can be retried."""

import re

import pytest
from django.contrib.auth import get_user_model

from publishers.keys import verify_key
from publishers.models import PublisherAPIKey
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
