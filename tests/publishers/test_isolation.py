"""Tenant isolation: every dashboard URL and action, visited by the owner of publisher C with
publisher A's identifiers, answers 404 (A's objects) or shows only C's own data; none of A's
ids or values appears in any response, and nothing of A's changes."""

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from postbacks import health
from postbacks.models import Postback
from publishers.audit import AUDIT_LOG
from publishers.models import (
    AuditEvent,
    CallbackTemplate,
    Invitation,
    Membership,
    PublisherAPIKey,
)
from publishers.urls import urlpatterns
from tracking.models import AdvertiserAPIKey, Campaign, Conversion, OfferAccess, TrackingLink
from tracking.portal.urls import urlpatterns as advertiser_urlpatterns
from tracking.selectors.logs import CONVERSION_LOG

pytestmark = pytest.mark.django_db


@dataclass
class Case:
    method: str
    url: str
    data: dict | None = None
    status: tuple[int, ...] = (200,)
    # A value from A that the outsider typed in and the page may echo back in its form.
    echo: str = ""


def cursor_for(conversion) -> str:
    return CONVERSION_LOG.encode(conversion.created_at, conversion.public_id)


def a_private_offer(data) -> Campaign:
    """A private offer staff opened to A only."""
    offer, _ = Campaign.objects.get_or_create(
        advertiser=data.link.campaign.advertiser,
        name="a-private-offer",
        defaults={"landing_url": "https://advertiser.example/p", "access": "private"},
    )
    OfferAccess.objects.get_or_create(publisher=data.publisher, campaign=offer, status="approved")
    return offer


def outsider_cases(data) -> list[Case]:
    a_offer = a_private_offer(data).public_id
    a_click = data.clicks[0]
    a_conversion = data.conversions[0]
    a_postback = data.postbacks[0]
    a_template = data.good_template.public_id
    reports = reverse("reports")
    today = timezone.now().date()
    span = f"start={today - timedelta(days=30)}&end={today + timedelta(days=1)}"
    cases = [
        Case("get", reverse("dashboard")),
        Case("get", reverse("dashboard") + "?period=30d&tz=Europe/Berlin"),
        Case("get", reverse("conversions")),
        Case("get", reverse("conversions") + f"?spid={a_click.spid}", echo=a_click.spid),
        Case(
            "get", reverse("conversions") + f"?click_id={a_click.click_id}", echo=a_click.click_id
        ),
        Case("get", reverse("conversions") + f"?after={cursor_for(a_conversion)}"),
        Case(
            "get",
            reverse("conversions") + f"?txn_id={a_conversion.txn_id}",
            echo=a_conversion.txn_id,
        ),
        Case("get", reverse("conversions") + "?spid=spid-a&spid_match=prefix", echo="spid-a"),
        Case("get", reverse("conversions") + "?group_by=spid"),
        Case("get", reverse("conversions") + "?group_by=day&tz=Asia/Kolkata"),
        Case("get", reverse("conversions") + "?view=refused"),
        Case("get", reverse("conversions") + "?format=csv"),
        Case("get", reverse("trace")),
        Case("get", reverse("callbacks")),
        Case("get", reverse("callback_new")),
        Case("get", reverse("deliveries")),
        Case("get", reverse("deliveries") + "?state=pending"),
        Case("get", reverse("links")),
        Case("get", reverse("offers")),
        # A's private offer: not found, neither to ask for nor to link.
        Case("post", reverse("offer_request", args=[a_offer]), {"message": "x"}, status=(404,)),
        Case("post", reverse("offer_link_create", args=[a_offer]), {}, status=(404,)),
        Case("get", reverse("api_keys")),
        Case("get", reverse("settings")),
        Case("get", reverse("activity")),
        Case("get", reverse("activity") + "?action=api_key.created"),
        Case("get", reverse("activity") + "?action=callback.endpoint_paused"),
        # A cursor made from A's newest event only moves within C's own events.
        Case("get", reverse("activity") + f"?after={activity_cursor(data)}"),
        # A's objects by id: 404.
        Case("get", reverse("callback_edit", args=[a_template]), status=(404,)),
        Case(
            "post",
            reverse("callback_edit", args=[a_template]),
            {"url_template": "https://evil.example/x?s=[spid]", "statuses": ["approved"]},
            status=(404,),
        ),
        Case("get", reverse("callback_delete", args=[a_template]), status=(404,)),
        Case("post", reverse("callback_delete", args=[a_template]), status=(404,)),
        Case("post", reverse("callback_toggle", args=[a_template]), status=(404,)),
        Case("post", reverse("callback_secret_reveal", args=[a_template]), status=(404,)),
        Case("post", reverse("callback_secret_rotate", args=[a_template]), status=(404,)),
        # A test postback can't borrow A's callback (and its webhook secret).
        Case(
            "post",
            reverse("callback_test"),
            {
                "url_template": f"{data.receiver_url}/c-test?s=[spid]",
                "method": "POST",
                "callback": a_template,
            },
            status=(404,),
        ),
        # Switching to A's dashboard: not on A's team. The staff pages: not staff.
        Case(
            "post",
            reverse("publisher_switch"),
            {"publisher": data.publisher.public_id},
            status=(404,),
        ),
        Case("get", reverse("staff_publishers"), status=(403,)),
        Case(
            "post",
            reverse("staff_view_start"),
            {"publisher": data.publisher.public_id},
            status=(403,),
        ),
        Case("post", reverse("staff_view_stop"), status=(403,)),
        Case("post", reverse("callback_resume", args=[a_template]), status=(404,)),
        Case("post", reverse("api_key_revoke", args=[data.key_lookup]), status=(404,)),
        Case("post", reverse("member_remove"), {"username": "member-a"}, status=(404,)),
        Case(
            "post",
            reverse("member_invitation_revoke"),
            {"email": "pending-a@example.com"},
            status=(404,),
        ),
        Case("post", reverse("member_remove"), {"username": "owner-a"}, status=(404,)),
        Case(
            "post", reverse("member_role"), {"username": "member-a", "role": "owner"}, status=(404,)
        ),
        Case(
            "post",
            reverse("deliveries_retry"),
            {"event_id": [p.event_id for p in data.postbacks]},
            status=(404,),
        ),
        Case("post", reverse("deliveries_retry"), {"event_id": a_postback.event_id}, status=(404,)),
        # Actions on the outsider's own publisher: allowed, and A is untouched.
        Case(
            "post",
            reverse("deliveries_retry"),
            {
                "scope": "range",
                "start": str(today - timedelta(days=30)),
                "end": str(today + timedelta(days=1)),
                "states": ["failing", "pending"],
            },
            status=(302,),
        ),
        Case("post", reverse("callback_preview"), {"url_template": "https://c.example/?s=[spid]"}),
        Case(
            "post",
            reverse("callback_test"),
            {"url_template": f"{data.receiver_url}/c-test?s=[spid]"},
        ),
        Case("post", reverse("secret_reveal")),
        Case("post", reverse("api_key_create"), {"name": "c-key"}, status=(302,)),
        Case(
            "post",
            reverse("member_invite"),
            {"email": "new-person@example.com", "role": "member"},
            status=(302,),
        ),
        Case("post", reverse("secret_rotate")),
        # The advertiser portal: a publisher's account is refused at its door (403), and the
        # advertiser's key named in the URL is untouched.
        Case("get", reverse("advertiser_home"), status=(403,)),
        Case("get", reverse("advertiser_conversions"), status=(403,)),
        Case("get", reverse("advertiser_keys"), status=(403,)),
        Case("get", reverse("advertiser_integration"), status=(403,)),
        Case("post", reverse("advertiser_key_create"), {"kind": "api"}, status=(403,)),
        Case(
            "post",
            reverse("advertiser_key_revoke", args=[data.advertiser_key_lookup]),
            status=(403,),
        ),
        Case(
            "post",
            reverse("advertiser_test_conversion"),
            {"campaign": data.link.campaign.public_id, "event": "conversion"},
            status=(403,),
        ),
    ]
    for query in (a_click.spid, a_click.click_id, a_conversion.public_id, a_postback.event_id):
        cases.append(Case("get", reverse("trace") + f"?q={query}", echo=query))
    for group in ("day", "country", "placement", "campaign", "creative", "smart_ad", "keyword"):
        for extra in ("", "&format=csv", "&attribution=click", "&country=DE&placement=footer"):
            cases.append(Case("get", f"{reports}?group_by={group}&{span}{extra}"))
    for name, value in (
        ("placement", "a-secret-placement"),
        ("keyword", "a-secret-keyword"),
        ("smart_ad", "a-smart-77"),
    ):
        cases.append(
            Case(
                "get",
                f"{reports}?group_by={name}&{name}={value}&{span}",
                echo=value,
            )
        )
    return cases


def activity_cursor(data) -> str:
    newest = AuditEvent.objects.filter(publisher=data.publisher).order_by("-created_at").first()
    # One second later: a cursor that would list every one of A's events if it were not scoped.
    return AUDIT_LOG.encode(newest.created_at + timedelta(seconds=1), 2**62)


def text_of(response) -> str:
    """The body, whether rendered or streamed (the CSV exports)."""
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def without_echo(body: str, echo: str) -> str:
    if not echo:
        return body
    # The outsider's own query, shown back in the search box or the "nothing found" line.
    body = body.replace(f'value="{echo}"', "")
    body = body.replace(f"Nothing found for <code>{echo}</code>", "")
    return re.sub(rf"[?&;][a-z_]+={re.escape(echo)}", "", body)


def a_state(data) -> dict:
    return {
        "templates": sorted(
            CallbackTemplate.objects.filter(publisher=data.publisher).values_list(
                "public_id",
                "url_template",
                "method",
                "is_active",
                "paused_at",
                "webhook_secret",
                "previous_webhook_secret",
            )
        ),
        "postbacks": sorted(
            Postback.objects.filter(publisher=data.publisher).values_list(
                "event_id", "status", "next_attempt_at", "attempts"
            )
        ),
        "keys": sorted(
            PublisherAPIKey.objects.filter(publisher=data.publisher).values_list(
                "lookup", "revoked_at"
            )
        ),
        "members": sorted(
            Membership.objects.filter(publisher=data.publisher).values_list(
                "user__username", "role"
            )
        ),
        "invitations": sorted(
            Invitation.objects.filter(publisher=data.publisher).values_list("email", "status")
        ),
        "secret": type(data.publisher).objects.get(pk=data.publisher.pk).signing_secret,
        "advertiser_keys": sorted(
            AdvertiserAPIKey.objects.filter(lookup=data.advertiser_key_lookup).values_list(
                "lookup", "revoked_at"
            )
        ),
        "conversions": Conversion.objects.count(),
        "audit": sorted(
            AuditEvent.objects.filter(publisher=data.publisher).values_list("pk", flat=True)
        ),
        "offer_access": sorted(
            OfferAccess.objects.filter(publisher=data.publisher).values_list(
                "campaign_id", "status", "message"
            )
        ),
        "links": sorted(TrackingLink.objects.values_list("code", "publisher_id", "campaign_id")),
    }


def test_it_checks_ownership_on_every_dashboard_url(outsider_client, dashboard_data):
    # Paused by endpoint health, so that resuming it from outside would change something.
    health.endpoint_pause([dashboard_data.good_template.pk], reason="gone")
    offer = a_private_offer(dashboard_data)
    before = a_state(dashboard_data)
    a_ids = [*dashboard_data.a_ids(), offer.public_id, offer.name]
    cases = outsider_cases(dashboard_data)
    visited = set()
    for case in cases:
        response = getattr(outsider_client, case.method)(case.url, case.data or {})
        assert response.status_code in case.status, (case, response.status_code)
        if response.context and "report" in response.context:
            assert response.context["report"] is not None, case.url  # the form was valid
        body = without_echo(text_of(response), case.echo)
        leaked = [value for value in a_ids if value in body]
        assert not leaked, (case.url, leaked)
        visited.add(response.resolver_match.url_name if response.resolver_match else case.url)
    assert a_state(dashboard_data) == before
    # The table must grow with the dashboard and the advertiser portal: every route of both
    # is visited.
    dashboard_routes = {p.name for p in urlpatterns if str(p.pattern).startswith("dashboard/")}
    dashboard_routes |= {p.name for p in advertiser_urlpatterns}
    assert dashboard_routes <= visited, dashboard_routes - visited


def test_it_shows_the_outsider_its_own_data(outsider_client, dashboard_data):
    response = outsider_client.get(reverse("trace") + f"?q={dashboard_data.other_spid}")
    assert response.status_code == 200
    assert response.context["trace"].found
    assert [c.spid for c in response.context["trace"].clicks] == [dashboard_data.other_spid]


OWNER_ONLY = [
    ("api_key_create", None, {"name": "x"}),
    ("api_key_revoke", "lookup", {}),
    ("secret_reveal", None, {}),
    ("secret_rotate", None, {}),
    ("callback_secret_reveal", "template", {}),
    ("callback_secret_rotate", "template", {}),
    ("member_invite", None, {"email": "new@example.com", "role": "member"}),
    ("member_remove", None, {"username": "owner-a"}),
    ("member_invitation_revoke", None, {"email": "pending-a@example.com"}),
    ("member_role", None, {"username": "member-a", "role": "owner"}),
]


@pytest.mark.parametrize(("name", "arg", "payload"), OWNER_ONLY)
def test_it_refuses_owner_actions_to_members(member_client, dashboard_data, name, arg, payload):
    before = a_state(dashboard_data)
    args = {
        None: [],
        "lookup": [dashboard_data.key_lookup],
        "template": [dashboard_data.good_template.public_id],
    }[arg]
    response = member_client.post(reverse(name, args=args), payload)
    assert response.status_code == 403
    assert a_state(dashboard_data) == before


@pytest.mark.parametrize(
    "name",
    [
        "dashboard",
        "reports",
        "conversions",
        "trace",
        "callbacks",
        "settings",
        "api_keys",
        "activity",
    ],
)
def test_it_sends_anonymous_visitors_to_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_answers_404_to_a_user_without_a_publisher(client, db):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_user("loner", password="pw"))
    assert client.get(reverse("dashboard")).status_code == 404


def test_it_would_notice_a_leak(owner_client, dashboard_data):
    """The same visits as A's owner find A's ids: the check above can fail."""
    seen = ""
    for case in outsider_cases(dashboard_data):
        if case.method == "get" and case.status == (200,):
            seen += text_of(owner_client.get(case.url))
    seen += owner_client.post(reverse("secret_reveal")).content.decode()
    for template in (dashboard_data.good_template, dashboard_data.bad_template):
        reveal = reverse("callback_secret_reveal", args=[template.public_id])
        seen += owner_client.post(reveal).content.decode()
    for click in dashboard_data.clicks:
        seen += owner_client.get(reverse("trace") + f"?q={click.spid}").content.decode()
    missing = [value for value in dashboard_data.a_ids() if value not in seen]
    assert not missing
