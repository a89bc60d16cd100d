"""Which publisher the dashboard shows: a member of several teams switches between them (never
to a team they are not on); a staff user views any publisher's dashboard read-only, each view
recorded in that publisher's Activity, and can change nothing from it."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from publishers.models import AuditEvent, CallbackTemplate, Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(dashboard_data) -> Client:
    user = get_user_model().objects.create_user("staff-1", password="x", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


def test_a_member_of_two_teams_switches_between_them(owner_client, dashboard_data):
    owner = get_user_model().objects.get(username="owner-a")
    Membership.objects.create(
        publisher=dashboard_data.other, user=owner, role=Membership.Role.MEMBER
    )
    first = owner_client.get(reverse("dashboard"))
    assert first.context["request"].publisher == dashboard_data.publisher
    assert 'id="publisher-switch"' in first.content.decode()

    response = owner_client.post(
        reverse("publisher_switch"), {"publisher": dashboard_data.other.public_id}
    )
    assert response.status_code == 302
    conversions = owner_client.get(reverse("conversions"))
    assert conversions.context["request"].publisher == dashboard_data.other
    assert {c.click.spid for c in conversions.context["rows"]} == {dashboard_data.other_spid}
    # Off that team again: back to the first one, never the other's data.
    Membership.objects.filter(publisher=dashboard_data.other, user=owner).delete()
    after = owner_client.get(reverse("conversions"))
    assert after.context["request"].publisher == dashboard_data.publisher


def test_nobody_switches_to_a_team_they_are_not_on(outsider_client, dashboard_data):
    response = outsider_client.post(
        reverse("publisher_switch"), {"publisher": dashboard_data.publisher.public_id}
    )
    assert response.status_code == 404
    page = outsider_client.get(reverse("dashboard"))
    assert page.context["request"].publisher == dashboard_data.other
    assert 'id="publisher-switch"' not in page.content.decode()  # one team: no switcher


def test_staff_on_no_team_are_sent_to_the_publisher_list(staff_client, dashboard_data):
    response = staff_client.get(reverse("dashboard"))
    assert response.status_code == 302 and response["Location"] == reverse("staff_publishers")
    listing = staff_client.get(reverse("staff_publishers") + "?q=Publisher A")
    assert list(listing.context["publishers"]) == [dashboard_data.publisher]


def test_staff_view_a_dashboard_read_only_and_it_is_recorded(staff_client, dashboard_data):
    publisher = dashboard_data.publisher
    response = staff_client.post(reverse("staff_view_start"), {"publisher": publisher.public_id})
    assert response.status_code == 302
    event = AuditEvent.objects.get(publisher=publisher, action="staff.viewed")
    assert event.actor.username == "staff-1" and event.who == "Roundtrip staff (staff-1)"
    # Every page reads as the publisher's, with the banner.
    for name in ("dashboard", "conversions", "deliveries", "callbacks", "settings", "activity"):
        page = staff_client.get(reverse(name))
        assert page.status_code == 200, name
        assert page.context["request"].publisher == publisher
        assert 'id="staff-view"' in page.content.decode()
    activity = staff_client.get(reverse("activity")).content.decode()
    assert "Dashboard viewed by Roundtrip staff (read-only)" in activity
    # Nothing can be changed, sent or revealed.
    template = dashboard_data.good_template
    for name, args, data in [
        ("callback_toggle", [template.public_id], {}),
        ("callback_delete", [template.public_id], {}),
        ("secret_reveal", [], {}),
        ("api_key_create", [], {"name": "x"}),
        ("deliveries_retry", [], {"event_id": dashboard_data.postbacks[0].event_id}),
        ("callback_test", [], {"url_template": f"{dashboard_data.receiver_url}/x"}),
    ]:
        assert staff_client.post(reverse(name, args=args), data).status_code == 403, name
    template.refresh_from_db()
    assert template.is_active and CallbackTemplate.objects.filter(pk=template.pk).exists()
    assert not AuditEvent.objects.filter(publisher=publisher, action="secret.revealed").exists()
    # Stop viewing: back to the list, the dashboard no longer shows the publisher.
    staff_client.post(reverse("staff_view_stop"))
    assert staff_client.get(reverse("dashboard")).status_code == 302


def test_only_staff_reach_the_staff_pages(owner_client, dashboard_data):
    assert owner_client.get(reverse("staff_publishers")).status_code == 403
    response = owner_client.post(
        reverse("staff_view_start"), {"publisher": dashboard_data.other.public_id}
    )
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="staff.viewed").exists()


def test_a_former_staff_user_views_nothing(staff_client, dashboard_data):
    staff_client.post(
        reverse("staff_view_start"), {"publisher": dashboard_data.publisher.public_id}
    )
    get_user_model().objects.filter(username="staff-1").update(is_staff=False)
    assert staff_client.get(reverse("dashboard")).status_code == 404
