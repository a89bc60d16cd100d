"""Dashboard pages and actions, as publisher A's owner and member."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from postbacks import signing
from postbacks.models import Postback
from publishers.keys import hash_key
from publishers.models import AuditEvent, CallbackTemplate, Membership, PublisherAPIKey
from tests.tracking.helpers import click_stored

pytestmark = pytest.mark.django_db


def _wide() -> str:
    today = timezone.now().date()
    return f"start={today - timedelta(days=60)}&end={today + timedelta(days=1)}"


WIDE = _wide()


def test_it_shows_the_period_against_the_previous_one(owner_client, dashboard_data):
    response = owner_client.get(reverse("dashboard") + "?period=7d")
    assert response.status_code == 200
    metrics = {m["key"]: m for m in response.context["metrics"]}
    assert metrics["clicks"]["value"] == 4
    assert metrics["conversions"]["value"] == 2
    assert metrics["conversion_rate"]["value"] == 50.0
    assert str(metrics["payout_EUR"]["value"]) == "6.500000"
    # One delivered postback per conversion; the other template's got a 500 and is retrying.
    assert metrics["postback_success_rate"]["value"] == 50.0
    assert metrics["clicks"]["previous"] == 0 and metrics["clicks"]["change"] is None
    content = response.content.decode()
    assert "<svg" in content and "<polyline" in content
    assert len(response.context["chart"]["bars"]) == 30


def test_it_reports_every_grouping_from_the_rollup(owner_client, dashboard_data):
    expected = {
        "country": {"DE": (2, 1), "FR": (1, 1), "US": (1, 0)},
        "placement": {"a-secret-placement": (2, 1), "footer": (2, 1)},
        "keyword": {"(none)": (3, 1), "a-secret-keyword": (1, 1)},
        "smart_ad": {"(none)": (3, 1), "a-smart-77": (1, 1)},
        "creative": {"Banner": (2, 2), "(none)": (2, 0)},
        "campaign": {"Campaign": (4, 2)},
    }
    for group, rows in expected.items():
        response = owner_client.get(reverse("reports") + f"?group_by={group}&{WIDE}")
        report = response.context["report"]
        assert report.source == "rollup"
        assert {r.label: (r.clicks, r.conversions) for r in report.rows} == rows, group
        assert (report.totals.clicks, report.totals.conversions) == (4, 2)


def test_it_agrees_between_rollup_and_raw_rows(owner_client, dashboard_data):
    # Two dimensions at once can't come from the hourly rollup: the pair path (no pair rows
    # built here, so raw clicks throughout) must give the same rows.
    raw = owner_client.get(reverse("reports") + f"?group_by=country&placement=footer&{WIDE}")
    assert raw.context["report"].source == "pairs"
    assert {r.label: (r.clicks, r.conversions) for r in raw.context["report"].rows} == {
        "FR": (1, 1),
        "US": (1, 0),
    }
    rolled = owner_client.get(reverse("reports") + f"?group_by=placement&placement=footer&{WIDE}")
    assert rolled.context["report"].source == "rollup"
    assert rolled.context["report"].totals.clicks == raw.context["report"].totals.clicks
    assert rolled.context["report"].totals.payouts == raw.context["report"].totals.payouts


def test_it_counts_conversions_by_click_or_conversion_time(owner_client, dashboard_data):
    # The first click was 3 hours ago and converted now: with a range ending before the
    # conversion's day both attributions differ once the click is on another day.
    click = dashboard_data.clicks[0]
    click.created_at = timezone.now() - timedelta(days=3)
    click.save(update_fields=["created_at"])
    # Its conversion's copy of the click time too (clicks never move in production).
    click.conversions.update(click_created_at=click.created_at)
    from tracking.rollups import stats_rebuild

    stats_rebuild(
        publisher_id=dashboard_data.publisher.pk,
        start=timezone.now() - timedelta(days=5),
        end=timezone.now(),
    )
    day = (timezone.now() - timedelta(days=3)).date().isoformat()
    url = reverse("reports") + f"?group_by=day&start={day}&end={day}&tz=UTC"
    by_click = owner_client.get(url + "&attribution=click").context["report"]
    by_conversion = owner_client.get(url + "&attribution=conversion").context["report"]
    assert (by_click.totals.clicks, by_click.totals.conversions) == (1, 1)
    assert (by_conversion.totals.clicks, by_conversion.totals.conversions) == (1, 0)


def test_it_exports_exactly_the_rows_shown(owner_client, dashboard_data):
    url = reverse("reports") + f"?group_by=country&{WIDE}&sort=clicks&dir=desc"
    page = owner_client.get(url)
    shown = [(item["row"].label, *item["cells"]) for item in page.context["table"]]
    export = owner_client.get(url + "&format=csv")
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert rows[0] == [
        "Country",
        "Impressions",
        "Clicks",
        "CTR %",
        "Unique clicks",
        "Bot clicks",
        "Conversions",
        "Conv. rate %",
        "Payout EUR",
    ]
    assert [tuple(r) for r in rows[1:-1]] == shown
    assert rows[-1][:4] == ["Total", "0", "4", ""]
    assert [r[0] for r in rows[1:-1]] == ["DE", "FR", "US"]


def test_it_shows_impressions_and_ctr_where_the_counters_have_them(
    owner_client, dashboard_data, campaign, creative, link
):
    from tracking.models import Click, SmartAd, SmartAdImpression
    from tracking.rollups import stats_rebuild

    unit = SmartAd.objects.create(name="Unit", width=300, height=250)
    today = timezone.now().date()
    for publisher, country, count in (
        (dashboard_data.publisher, "FR", 50),
        (dashboard_data.publisher, "DE", 30),
        (dashboard_data.other, "FR", 999),  # another tenant's: never counted
    ):
        SmartAdImpression.objects.create(
            publisher=publisher, day=today, smart_ad=unit, creative=creative,
            country=country, impressions=count,
        )  # fmt: skip
    Click.objects.create(
        link=link, publisher=dashboard_data.publisher, campaign=campaign, creative=creative,
        spid="smart", country="FR", placement="footer", smart_ad_id=str(unit.pk),
    )  # fmt: skip
    stats_rebuild(
        publisher_id=dashboard_data.publisher.pk,
        start=timezone.now() - timedelta(days=1),
        end=timezone.now() + timedelta(hours=1),
    )
    # From yesterday: the fixture's clicks (up to 3 hours old) are in whatever the hour.
    day = f"start={today - timedelta(days=1)}&end={today}&tz=UTC"

    def table(query: str) -> dict:
        page = owner_client.get(reverse("reports") + f"?{query}&{day}")
        # label -> (impressions, clicks, CTR %)
        return {item["row"].label: tuple(item["cells"][:3]) for item in page.context["table"]}

    by_unit = table("group_by=smart_ad")
    assert by_unit[str(unit.pk)] == ("80", "1", "1.25")
    assert by_unit["a-smart-77"] == ("0", "1", "")  # a smart ad without impressions: blank
    assert by_unit["(none)"][0] == "0"
    # Countries mix smart-ad clicks with other clicks: impressions yes, CTR unknown.
    assert table("group_by=country")["FR"] == ("50", "2", "–")
    assert table(f"group_by=country&smart_ad={unit.pk}") == {
        "FR": ("50", "1", "2.00"),
        "DE": ("30", "0", "0.00"),  # shown but never clicked: a row of its own
    }
    # Impressions don't record placements, and are counted in UTC days.
    assert set(table("group_by=placement")["footer"][::2]) == {"–"}
    berlin = owner_client.get(
        reverse("reports") + f"?group_by=smart_ad&{day.replace('UTC', 'Europe/Berlin')}"
    )
    assert {item["cells"][0] for item in berlin.context["table"]} == {"–"}
    export = owner_client.get(reverse("reports") + f"?group_by=smart_ad&{day}&format=csv")
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert [str(unit.pk), "80", "1", "1.25"] in [r[:4] for r in rows]
    assert rows[-1][:4] == ["Total", "80", "5", "2.50"]  # 2 of the 5 clicks were smart ads


def test_it_lists_conversions_with_keyset_pages(owner_client, dashboard_data):
    from tracking.selectors import conversion_log

    first, cursor = conversion_log(dashboard_data.publisher, limit=1)
    second, end = conversion_log(dashboard_data.publisher, limit=1, cursor=cursor)
    assert cursor and not end
    assert {first[0].pk, second[0].pk} == {c.pk for c in dashboard_data.conversions}
    response = owner_client.get(reverse("conversions") + "?spid=spid-a-beta")
    assert [c.click.spid for c in response.context["rows"]] == ["spid-a-beta"]
    assert response.context["rows"][0].postback_state == "pending"  # the /fail template retries
    assert owner_client.get(reverse("conversions") + "?status=rejected").context["rows"] == []


def test_it_traces_a_spid_through_every_attempt(owner_client, dashboard_data):
    response = owner_client.get(reverse("trace") + "?q=spid-a-alpha")
    trace = response.context["trace"]
    assert len(trace.clicks) == 2 and len(trace.conversions) == 1
    content = response.content.decode()
    for postback in Postback.objects.filter(conversion=trace.conversions[0]):
        assert postback.event_id in content
        assert postback.url.replace("&", "&amp;") in content
    assert "HTTP 500" in content or "500" in content
    assert "boom" in content  # the failing receiver's response excerpt
    for key in ("click_id", "spid"):
        again = owner_client.get(reverse("trace") + f"?q={getattr(dashboard_data.clicks[2], key)}")
        assert [c.pk for c in again.context["trace"].clicks][:1] == [dashboard_data.clicks[2].pk]
    by_event = owner_client.get(reverse("trace") + f"?q={dashboard_data.postbacks[0].event_id}")
    assert by_event.context["trace"].found


@pytest.mark.parametrize("spid", ["cnv_mine", "evt_42"])
def test_it_traces_a_spid_that_looks_like_an_id(owner_client, link, spid):
    """Publishers choose their spids: one that starts like our ids is still found as a spid."""
    click = click_stored(link=link, spid=spid, user_agent="Mozilla/5.0")
    trace = owner_client.get(reverse("trace") + f"?q={spid}").context["trace"]
    assert [c.pk for c in trace.clicks] == [click.pk]


def test_it_creates_edits_and_pauses_a_callback(member_client, publisher, receiver):
    url = f"{receiver.base_url}/postback?s=[spid]&amt={{payout}}"
    response = member_client.post(
        reverse("callback_new"),
        {
            "name": "main",
            "url_template": url,
            "statuses": ["approved", "pending"],
            "events": "Sale, lead",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    template = CallbackTemplate.objects.get(publisher=publisher)
    assert (template.events, template.statuses) == (["lead", "sale"], ["approved", "pending"])
    bad = member_client.post(
        reverse("callback_edit", args=[template.public_id]),
        {"url_template": "https://[spid].example/x", "statuses": ["approved"]},
    )
    assert bad.status_code == 200 and "host" in bad.context["form"].errors["url_template"][0]
    member_client.post(
        reverse("callback_edit", args=[template.public_id]),
        {"url_template": url + "&v=2", "statuses": ["approved"], "is_active": "on"},
    )
    template.refresh_from_db()
    assert template.url_template.endswith("&v=2") and template.is_active
    member_client.post(reverse("callback_toggle", args=[template.public_id]))
    template.refresh_from_db()
    assert not template.is_active


def test_it_previews_a_template_with_sample_values(member_client, publisher):
    ok = member_client.post(
        reverse("callback_preview"), {"url_template": "https://pub.example/cb?s=[spid]&k={keyword}"}
    ).json()
    assert ok == {
        "ok": True,
        "url": "https://pub.example/cb?s=123456789&k=running%20shoes",
        "error": "",
        "placeholders": ["spid", "keyword"],
    }
    bad = member_client.post(
        reverse("callback_preview"), {"url_template": "https://x.example/[nope]"}
    )
    assert not bad.json()["ok"] and "Unknown placeholder [nope]" in bad.json()["error"]


def test_it_sends_a_real_signed_test_postback(member_client, publisher, receiver):
    response = member_client.post(
        reverse("callback_test"),
        {"url_template": f"{receiver.base_url}/cb?s=[spid]&e=[event_id]"},
        HTTP_ACCEPT="application/json",
    )
    result = response.json()
    assert result["ok"] and result["response"]["status_code"] == 200
    assert result["response"]["body_excerpt"] == "ok"
    [received] = receiver.requests
    assert received.path == result["request"]["url"].removeprefix(receiver.base_url)
    headers = received.headers
    assert headers["Roundtrip-Test"] == "1"
    assert signing.verify(
        publisher.active_signing_secrets(),
        headers["Roundtrip-Event-Id"],
        headers["Roundtrip-Timestamp"],
        headers["Roundtrip-Signature"],
        received.path,
    )
    # Without JavaScript the same button renders a page.
    page = member_client.post(reverse("callback_test"), {"url_template": f"{receiver.base_url}/x"})
    assert page.status_code == 200 and b"HTTP 200" in page.content


def test_it_reports_a_test_postback_that_fails(member_client, publisher, receiver):
    receiver.status, receiver.body = 503, b"maintenance"
    result = member_client.post(
        reverse("callback_test"),
        {"url_template": f"{receiver.base_url}/cb"},
        HTTP_ACCEPT="application/json",
    ).json()
    assert not result["ok"] and result["response"]["status_code"] == 503
    invalid = member_client.post(
        reverse("callback_test"), {"url_template": "ftp://x"}, HTTP_ACCEPT="application/json"
    ).json()
    assert invalid["error"]["kind"] == "invalid_template" and invalid["request"] is None


def test_it_lists_and_retries_deliveries(
    member_client, dashboard_data, django_capture_on_commit_callbacks
):
    failing = member_client.get(reverse("deliveries"))
    rows = failing.context["rows"]
    assert {p.template_id for p in rows} == {dashboard_data.bad_template.pk}
    assert failing.context["counts"] == {"failing": 2, "pending": 0}
    one = rows[0]
    with django_capture_on_commit_callbacks() as callbacks:
        response = member_client.post(reverse("deliveries_retry"), {"event_id": one.event_id})
    assert response.status_code == 302 and len(callbacks) == 1
    one.refresh_from_db()
    assert one.status == "pending" and one.next_attempt_at <= timezone.now()
    Postback.objects.filter(pk__in=[p.pk for p in rows]).update(status="failed")
    today = timezone.now().date().isoformat()
    member_client.post(
        reverse("deliveries_retry"),
        {"scope": "range", "start": today, "end": today, "states": ["failing"]},
    )
    assert set(
        Postback.objects.filter(pk__in=[p.pk for p in rows]).values_list("status", flat=True)
    ) == {"pending"}


def test_a_range_retry_has_the_apis_cap_and_says_what_remains(
    member_client, dashboard_data, settings
):
    """One cap for both range replays (POSTBACKS_REPLAY_MAX), oldest first."""
    settings.POSTBACKS_REPLAY_MAX = 1
    rows = member_client.get(reverse("deliveries")).context["rows"]
    assert len(rows) == 2
    today = timezone.now().date().isoformat()
    response = member_client.post(
        reverse("deliveries_retry"),
        {"scope": "range", "start": today, "end": today, "states": ["failing"]},
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    assert shown[0] == "1 postback(s) queued for immediate delivery."
    assert shown[1].startswith("1 more matched but were not queued (at most 1 per replay")
    oldest = min(rows, key=lambda p: p.pk)
    assert Postback.objects.get(pk=oldest.pk).next_attempt_at <= timezone.now()


def test_a_retry_answer_says_what_happened(member_client, dashboard_data):
    """A 100,000-character `state` used to queue the retry, write the audit row and then answer
    400 (the redirect back was too long): now the answer matches what was done."""
    one = member_client.get(reverse("deliveries")).context["rows"][0]
    audited = AuditEvent.objects.count()
    response = member_client.post(
        reverse("deliveries_retry"), {"event_id": one.event_id, "state": "x" * 100_000}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("deliveries") + "?state=failing"
    assert AuditEvent.objects.count() == audited + 1
    one.refresh_from_db()
    assert one.status == "pending"
    # Refused as a whole, before anything is queued or audited.
    for bad in ([f"evt_{n}" for n in range(101)], ["evt\x00"]):
        response = member_client.post(reverse("deliveries_retry"), {"event_id": bad})
        assert response.status_code == 400
    assert AuditEvent.objects.count() == audited + 1


def test_it_shows_copyable_links_and_embed_codes(member_client, dashboard_data, settings):
    response = member_client.get(
        reverse("links") + "?smart_ad_id=1491&keyword=blue+shoes&width=300&height=250"
    )
    content = response.content.decode()
    assert f"{settings.SITE_URL}/click?ref=linka&amp;spid=YOUR_SPID" in content
    assert (
        f"&lt;iframe src=&quot;{settings.SITE_URL}/smart?ref=linka&amp;q=blue%20shoes&amp;smart_ad_id=1491&amp;spid=YOUR_SPID&quot; "
        "width=&quot;300&quot; height=&quot;250&quot;"
    ) in content
    assert "spid" in content and "callback" in content.lower()


def test_it_creates_a_key_shown_once_and_revokes_it(owner_client, publisher):
    # Post/Redirect/Get: the POST answers a redirect, the page it leads to shows the key once.
    posted = owner_client.post(reverse("api_key_create"), {"name": "reconcile"})
    assert posted.status_code == 302 and posted["Location"] == reverse("api_keys")
    response = owner_client.get(posted["Location"])
    plaintext = response.context["new_key"]
    assert response["Cache-Control"] == "no-store"
    key = PublisherAPIKey.objects.get(publisher=publisher)
    assert key.name == "reconcile" and key.digest == hash_key(plaintext)
    assert plaintext in response.content.decode()
    # A refresh is a GET: no second key, and the plaintext is gone.
    again = owner_client.get(reverse("api_keys"))
    assert plaintext not in again.content.decode() and again.context["new_key"] == ""
    assert PublisherAPIKey.objects.filter(publisher=publisher).count() == 1
    owner_client.post(reverse("api_key_revoke", args=[key.lookup]))
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_it_lets_members_see_keys_but_not_manage_them(member_client, dashboard_data):
    response = member_client.get(reverse("api_keys"))
    assert response.status_code == 200 and not response.context["can_manage"]
    assert dashboard_data.key_lookup in response.content.decode()


def test_it_reveals_and_rotates_the_secret_with_overlap(owner_client, publisher):
    page = owner_client.get(reverse("settings")).content.decode()
    assert publisher.signing_secret not in page
    assert publisher.signing_secret in owner_client.post(reverse("secret_reveal")).content.decode()
    old = publisher.signing_secret
    owner_client.post(reverse("secret_rotate"))
    publisher.refresh_from_db()
    assert publisher.signing_secret != old and publisher.previous_signing_secret == old
    assert publisher.active_signing_secrets() == [publisher.signing_secret, old]
    later = timezone.now() + timedelta(hours=24, minutes=1)
    assert publisher.active_signing_secrets(now=later) == [publisher.signing_secret]


def test_it_invites_and_removes_team_members(
    owner_client, publisher, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(
            reverse("member_invite"), {"email": "Ana@Example.com", "role": "member"}
        )
    assert response.status_code == 302
    # Nobody joins before accepting; a new address gets no account until then either.
    assert not get_user_model().objects.filter(email__iexact="ana@example.com").exists()
    [message] = mail.outbox
    assert message.to == ["Ana@example.com"] and "/invitations/" in message.body
    link = next(line for line in message.body.splitlines() if "/invitations/" in line)
    path = "/" + link.split("://", 1)[1].split("/", 1)[1]
    owner_client.logout()
    password = "a-Long-new-pass-42"
    joined = owner_client.post(
        path, {"answer": "accept", "password1": password, "password2": password}
    )
    assert joined.status_code == 302
    user = get_user_model().objects.get(email="Ana@example.com")
    assert user.check_password(password) and user.username == "Ana@example.com"
    assert Membership.objects.get(publisher=publisher, user=user).role == "member"
    owner_client.force_login(get_user_model().objects.get(username="owner-a"))
    again = owner_client.post(
        reverse("member_invite"), {"email": "ana@example.com", "role": "member"}
    )
    assert "already on the team" in again.content.decode()
    owner_client.post(reverse("member_remove"), {"username": user.username})
    assert not Membership.objects.filter(publisher=publisher, user=user).exists()


def test_it_never_removes_the_last_owner(owner_client, publisher):
    owner_client.post(reverse("member_remove"), {"username": "member-a"})
    Membership.objects.filter(publisher=publisher, user__username="member-a").delete()
    from publishers.services import TeamError, member_remove

    with pytest.raises(TeamError):
        member_remove(
            publisher=publisher, membership=Membership.objects.get(user__username="owner-a")
        )


def test_it_throttles_failed_sign_ins_per_account_and_per_ip(client, publisher, settings):
    login = reverse("login")
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post(
            login, {"username": "owner-a", "password": "wrong"}, REMOTE_ADDR=f"198.51.100.{i}"
        )
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    last = client.post(
        login, {"username": "owner-a", "password": "wrong"}, REMOTE_ADDR="198.51.100.50"
    )
    assert last.status_code == 429
    # Locked per account, even from a fresh address and with the right password.
    locked = client.post(
        login, {"username": "owner-a", "password": "pw-owner-a"}, REMOTE_ADDR="198.51.100.99"
    )
    assert locked.status_code == 429 and "Too many sign-in attempts" in locked.content.decode()
    # Locked per address, whatever the account.
    for i in range(settings.AXES_FAILURE_LIMIT):
        client.post(login, {"username": f"nobody-{i}", "password": "x"}, REMOTE_ADDR="203.0.113.7")
    by_ip = client.post(
        login, {"username": "member-a", "password": "pw-member-a"}, REMOTE_ADDR="203.0.113.7"
    )
    assert by_ip.status_code == 429
    ok = client.post(
        login, {"username": "member-a", "password": "pw-member-a"}, REMOTE_ADDR="192.0.2.1"
    )
    assert ok.status_code == 302 and ok["Location"] == "/dashboard/"


def test_it_resets_a_password_by_email(client, publisher):
    user = get_user_model().objects.get(username="owner-a")
    user.email = "owner@example.com"
    user.save()
    response = client.post(reverse("password_reset"), {"email": "owner@example.com"})
    assert response.status_code == 302
    [message] = mail.outbox
    link = next(line for line in message.body.splitlines() if "/accounts/reset/" in line)
    path = link.split("://", 1)[1].split("/", 1)[1]
    form = client.get("/" + path, follow=True)
    assert form.context["validlink"]
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a-Long-new-pass-42", "new_password2": "a-Long-new-pass-42"},
    )
    assert done.status_code == 302
    user.refresh_from_db()
    assert user.check_password("a-Long-new-pass-42")


def test_it_offers_the_smart_ads_carrying_its_campaigns(member_client, dashboard_data, campaign):
    from tracking.models import SmartAd

    unit = SmartAd.objects.create(name="Sidebar unit", width=300, height=250)
    unit.campaigns.add(campaign)
    SmartAd.objects.create(name="Not mine", width=100, height=100)
    response = member_client.get(reverse("links"))
    assert [ad.pk for ad in response.context["smart_ads"]] == [unit.pk]
    content = response.content.decode()
    assert f"smart_ad_id={unit.pk}&amp;spid=YOUR_SPID&quot; width=&quot;300&quot;" in content


def test_it_filters_conversions_by_local_dates(owner_client, dashboard_data):
    today = timezone.now().date()
    url = reverse("conversions")
    assert len(owner_client.get(f"{url}?end={today + timedelta(days=1)}").context["rows"]) == 2
    assert owner_client.get(f"{url}?start={today + timedelta(days=2)}").context["rows"] == []
    assert (
        owner_client.get(f"{url}?end={today - timedelta(days=2)}&tz=Asia/Tokyo").context["rows"]
        == []
    )
