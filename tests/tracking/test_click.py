from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking import clickbuffer, selectors
from tracking.models import Click, ClickRejection

pytestmark = pytest.mark.django_db

# Any printable text: the spid is the publisher's, we keep it exactly.
spids = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=255)


def click_url(code: str, spid: str, **extra: str) -> str:
    query = f"ref={code}&spid={quote(spid, safe='')}"
    for name, value in extra.items():
        query += f"&{name}={quote(value, safe='')}"
    return f"/click?{query}"


def test_it_records_the_click_and_redirects_with_click_id(client, link):
    response = client.get(
        click_url(link.code, "123456789"),
        HTTP_USER_AGENT="UA/1.0",
        HTTP_REFERER="https://pub.example/page",
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 302
    clickbuffer.clicks_flush_all()
    click = Click.objects.get()
    landing = urlsplit(response["Location"])
    assert landing.netloc == "advertiser.example"
    assert parse_qs(landing.query) == {"click_id": [click.click_id], "s": ["123456789"]}
    assert (click.spid, click.placement, click.user_agent) == ("123456789", "sidebar", "UA/1.0")
    assert click.referer == "https://pub.example/page"
    assert click.ip == "203.0.113.9"
    assert click.publisher_id == link.publisher_id and click.campaign_id == link.campaign_id
    assert len(click.click_id) == 26 and click.click_id.isalnum()


def test_it_preserves_the_briefs_tricky_spid(client, link):
    spid = 'a b&c/d?e#f%g"ü'
    response = client.get(click_url(link.code, spid))
    assert response.status_code == 302
    clickbuffer.clicks_flush_all()
    assert Click.objects.get().spid == spid
    assert parse_qs(urlsplit(response["Location"]).query)["s"] == [spid]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spid=spids)
def test_it_preserves_any_spid_exactly(client, link, spid):
    response = client.get(click_url(link.code, spid))
    assert response.status_code == 302
    click_id = parse_qs(urlsplit(response["Location"]).query)["click_id"][0]
    clickbuffer.clicks_flush_all()
    assert Click.objects.get(click_id=click_id).spid == spid


def test_it_accepts_a_click_without_spid(client, link):
    assert client.get(f"/click?ref={link.code}").status_code == 302
    clickbuffer.clicks_flush_all()
    assert Click.objects.get().spid == ""


def assert_refused_but_redirected(response) -> None:
    """A refused click still sends the visitor to the landing page, without a click id (and
    without the spid that was refused)."""
    assert response.status_code == 302
    landing = parse_qs(urlsplit(response["Location"]).query, keep_blank_values=True)
    assert landing == {"click_id": [""], "s": [""]}
    clickbuffer.clicks_flush_all()
    assert not Click.objects.exists()


def test_it_refuses_a_spid_over_255_characters_and_counts_it(client, link):
    assert_refused_but_redirected(client.get(click_url(link.code, "x" * 256)))
    rejection = ClickRejection.objects.get()
    assert (rejection.publisher_id, rejection.reason, rejection.count) == (
        link.publisher_id,
        "spid_too_long",
        1,
    )
    client.get(click_url(link.code, "y" * 300))
    assert ClickRejection.objects.get().count == 2


def test_it_accepts_exactly_255_characters(client, link):
    assert client.get(click_url(link.code, "é" * 255)).status_code == 302


@pytest.mark.parametrize("spid", ["a\nb", "tab\there", "nul\x00", "del\x7f", "c1\x85"])
def test_it_refuses_control_characters(client, link, spid):
    assert_refused_but_redirected(client.get(click_url(link.code, spid)))
    assert ClickRejection.objects.get().reason == "spid_control_chars"


@pytest.mark.parametrize("raw", ["%FF", "ok%C3", "%ED%A0%80", "%C0%AF"])
def test_it_refuses_a_spid_that_is_not_utf8_instead_of_altering_it(client, link, raw):
    """Django would hand the view U+FFFD for these bytes: stored, that is another spid."""
    assert_refused_but_redirected(client.get(f"/click?ref={link.code}&spid={raw}"))
    assert ClickRejection.objects.get().reason == "spid_invalid_utf8"


def test_it_answers_404_for_an_unknown_ref(client, link):
    response = client.get(click_url("nope", "1"))
    assert response.status_code == 404
    assert b"unknown or no longer active" in response.content
    clickbuffer.clicks_flush_all()
    assert not Click.objects.exists()


@pytest.mark.parametrize("what", ["link", "publisher", "campaign"])
def test_it_answers_404_when_something_is_paused(client, link, what):
    if what == "link":
        link.is_active = False
        link.save()
    elif what == "publisher":
        link.publisher.status = "paused"
        link.publisher.save()
    else:
        link.campaign.status = "paused"
        link.campaign.save()
    assert client.get(click_url(link.code, "1")).status_code == 404
    clickbuffer.clicks_flush_all()
    assert not Click.objects.exists()


def test_it_records_placement_and_creative(client, link, creative):
    client.get(click_url(link.code, "1", placement="  Header   Top ", creative=creative.public_id))
    clickbuffer.clicks_flush_all()
    click = Click.objects.get()
    assert (click.placement, click.creative_id) == ("Header Top", creative.pk)


def test_it_ignores_a_creative_of_another_campaign(client, link, advertiser):
    from tracking.models import Campaign, Creative

    other = Campaign.objects.create(
        advertiser=advertiser, name="Other", landing_url="https://x.example/"
    )
    foreign = Creative.objects.create(campaign=other, name="Foreign")
    assert client.get(click_url(link.code, "1", creative=foreign.public_id)).status_code == 302
    clickbuffer.clicks_flush_all()
    assert Click.objects.get().creative_id is None


def test_it_bounds_placement_length(client, link):
    client.get(click_url(link.code, "1", placement="p" * 500))
    clickbuffer.clicks_flush_all()
    assert Click.objects.get().placement == "p" * 100


def test_it_only_trusts_forwarded_for_from_configured_proxies(client, link, settings):
    client.get(
        click_url(link.code, "1"), REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="1.2.3.4"
    )
    clickbuffer.clicks_flush_all()
    assert Click.objects.latest("pk").ip == "198.51.100.7"
    import ipaddress

    settings.TRUSTED_PROXY_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    client.get(
        click_url(link.code, "2"),
        REMOTE_ADDR="10.1.1.1",
        HTTP_X_FORWARDED_FOR="9.9.9.9, 1.2.3.4, 10.2.2.2",
    )
    clickbuffer.clicks_flush_all()
    assert Click.objects.latest("pk").ip == "1.2.3.4"


def test_it_rejects_methods_other_than_get(client, link):
    assert client.post(click_url(link.code, "1")).status_code == 405


def test_it_reuses_a_looked_up_link_for_a_few_seconds(
    client, link, settings, django_assert_num_queries
):
    settings.CLICKS_LINK_CACHE_SECONDS = 60
    assert selectors.link_for_click(link.code) == link
    assert selectors.link_for_click("nope") is None
    with django_assert_num_queries(0):  # both answers, the miss too, come from the cache
        assert selectors.link_for_click(link.code) == link
        assert selectors.link_for_click("nope") is None
    link.is_active = False
    link.save()
    # Still served from the cache until it expires (the documented price of the cache).
    assert selectors.link_for_click(link.code) == link
    settings.CLICKS_LINK_CACHE_SECONDS = 0
    assert selectors.link_for_click(link.code) is None
