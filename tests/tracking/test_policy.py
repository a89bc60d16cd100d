"""A campaign's bot and fraud policy (tracking/policy.py): the IP/CIDR block list and the
click-rate caps on the click (real Redis, the production click path), the bot action on the
conversion, each decision with its named reason."""

import doctest
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError

from postbacks.models import Postback
from publishers.models import CallbackTemplate
from tests.tracking.helpers import click_stored, isolate_tracking_state
from tracking import clickbuffer, policy
from tracking import models as tracking_models
from tracking.cache import process_caches_clear
from tracking.models import (
    CampaignPolicy,
    Click,
    ClickRejection,
    Conversion,
    normalize_ip_blocks,
    parse_ip_blocks,
)
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
CURL = "curl/8.5.0"


@pytest.fixture(autouse=True)
def isolated(settings):
    clean_up = isolate_tracking_state(settings)
    yield
    clean_up()


def set_policy(campaign, **fields) -> CampaignPolicy:
    row, _ = CampaignPolicy.objects.update_or_create(campaign=campaign, defaults=fields)
    row.full_clean()
    process_caches_clear()  # as CLICKS_LINK_CACHE_SECONDS passing would
    return row


def visit(client, link, *, ip="203.0.113.7", spid="s-1", user_agent=BROWSER):
    return client.get(
        "/click", {"ref": link.code, "spid": spid}, REMOTE_ADDR=ip, HTTP_USER_AGENT=user_agent
    )


def refusals(publisher) -> dict[str, int]:
    return dict(ClickRejection.objects.filter(publisher=publisher).values_list("reason", "count"))


# --- Block list -----------------------------------------------------------------------------


def test_it_parses_and_normalizes_block_lists():
    assert normalize_ip_blocks(" 203.0.113.7,198.51.100.7/24\n\n2001:DB8::/32, 203.0.113.7") == (
        "203.0.113.7/32\n198.51.100.0/24\n2001:db8::/32"
    )
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300'"):
        parse_ip_blocks("10.0.0.1, 10.0.0.300")


def test_it_refuses_a_block_list_entry_that_is_not_an_ip(campaign):
    row = CampaignPolicy(campaign=campaign, blocked_ips="203.0.113.0/24\nexample.com")
    with pytest.raises(ValidationError) as caught:
        row.full_clean()
    assert "blocked_ips" in caught.value.message_dict


def test_it_refuses_clicks_from_blocked_addresses_and_networks(client, link, publisher):
    set_policy(link.campaign, blocked_ips="203.0.113.7\n198.51.100.0/24\n2001:db8::/32")
    for ip in ("203.0.113.7", "198.51.100.200", "2001:db8::1", "::ffff:198.51.100.9"):
        response = visit(client, link, ip=ip)
        assert response.status_code == 403, ip
        assert response["X-Roundtrip-Refused"] == "ip_blocked"
        assert "Location" not in response  # never sent to the landing page
    # Neighbours of the blocked networks go through.
    for ip in ("203.0.113.8", "198.51.101.1", "2001:db9::1"):
        assert visit(client, link, ip=ip).status_code == 302, ip
    clickbuffer.clicks_flush_all()
    assert Click.objects.count() == 3
    assert refusals(publisher) == {"ip_blocked": 4}


def test_the_defaults_refuse_nothing(client, link, publisher):
    for _ in range(5):
        assert visit(client, link).status_code == 302
    assert refusals(publisher) == {}


# --- Rate caps (real Redis) -----------------------------------------------------------------


def test_it_caps_clicks_per_ip_per_minute(client, link, publisher):
    set_policy(link.campaign, max_clicks_per_ip_per_minute=3)
    statuses = [visit(client, link, spid=f"s{n}").status_code for n in range(5)]
    assert statuses == [302, 302, 302, 429, 429]
    over = visit(client, link)
    assert over["X-Roundtrip-Refused"] == "rate_cap_ip" and over["Retry-After"] == "60"
    # Another visitor is not held back by the first one's clicks.
    assert visit(client, link, ip="203.0.113.99").status_code == 302
    assert refusals(publisher) == {"rate_cap_ip": 3}


def test_it_caps_clicks_per_spid_per_minute(client, link, publisher):
    set_policy(link.campaign, max_clicks_per_spid_per_minute=2)
    statuses = [visit(client, link, ip=f"203.0.113.{n}", spid="same").status_code for n in range(4)]
    assert statuses == [302, 302, 429, 429]
    assert visit(client, link, spid="other").status_code == 302
    assert refusals(publisher) == {"rate_cap_spid": 2}


def test_a_refused_click_uses_up_no_cap(client, link, publisher):
    set_policy(
        link.campaign,
        blocked_ips="198.51.100.0/24",
        max_clicks_per_ip_per_minute=1,
        max_clicks_per_minute=3,
    )
    for _ in range(5):
        assert visit(client, link, ip="198.51.100.1").status_code == 403
    assert visit(client, link, ip="203.0.113.1").status_code == 302
    # Over its per-IP cap: refused, and not counted toward the campaign's minute.
    for _ in range(3):
        assert visit(client, link, ip="203.0.113.1").status_code == 429
    assert [visit(client, link, ip=f"203.0.113.{n}").status_code for n in (2, 3, 4)] == [
        302,
        302,
        429,
    ]
    assert refusals(publisher) == {"ip_blocked": 5, "rate_cap_ip": 3, "rate_cap_minute": 1}


def test_a_new_minute_opens_a_new_window(link):
    capped = policy.Policy(per_minute=2)
    args = {"campaign_id": link.campaign_id, "publisher_id": 1, "ip": "203.0.113.7", "spid": ""}
    minute = 60 * 29_000_000
    assert [policy.rate_cap_refusal(capped, **args, now=minute + 1) for _ in range(3)] == [
        None,
        None,
        "rate_cap_minute",
    ]
    assert policy.rate_cap_refusal(capped, **args, now=minute + 61) is None


def test_the_cap_holds_under_concurrent_clicks_on_redis(link):
    """48 threads, released together and each on its own connection from the pool, race for
    20 slots: the script's check-and-count is atomic, so exactly 20 get through."""
    capped = policy.Policy(per_minute=20, per_ip=1000)
    barrier = threading.Barrier(48)
    now = time.time()

    def one(n: int) -> str | None:
        barrier.wait()
        return policy.rate_cap_refusal(
            capped,
            campaign_id=link.campaign_id,
            publisher_id=link.publisher_id,
            ip=f"203.0.113.{n % 5}",
            spid="",
            now=now,
        )

    with ThreadPoolExecutor(max_workers=48) as pool:
        answers = list(pool.map(one, range(48)))
    assert answers.count(None) == 20
    assert answers.count("rate_cap_minute") == 28


def test_caps_let_clicks_through_while_redis_is_down(client, link, publisher, settings):
    set_policy(link.campaign, max_clicks_per_minute=1)
    # Nothing listens there: every Redis call fails fast (the click is written directly).
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    try:
        assert [visit(client, link).status_code for _ in range(3)] == [302, 302, 302]
    finally:
        policy._redis_down_until = 0.0
    assert refusals(publisher) == {}
    assert Click.objects.count() == 3


def test_a_policy_change_reaches_clicks_after_the_cache_time(client, link):
    assert visit(client, link).status_code == 302  # the default policy is now cached
    CampaignPolicy.objects.create(campaign=link.campaign, blocked_ips="203.0.113.7")
    assert visit(client, link).status_code == 302  # within CLICKS_LINK_CACHE_SECONDS
    process_caches_clear()
    assert visit(client, link).status_code == 403


# --- The bot action on conversions ----------------------------------------------------------


def bot_click(link) -> Click:
    return click_stored(link=link, spid="bot-1", ip="203.0.113.7", user_agent=CURL)


def convert(advertiser, click, status="approved", txn_id="order-1", now=None):
    return conversion_record(
        advertiser=advertiser,
        click_id=click.click_id,
        txn_id=txn_id,
        status=status,
        now=now or click.created_at + timedelta(minutes=5),
    ).conversion


@pytest.mark.parametrize(
    ("action", "status", "reason"),
    [
        ("hold", "pending", "bot_click"),
        ("flag", "approved", "bot_flagged"),
        ("reject", "rejected", "bot_rejected"),
        ("allow", "approved", ""),
    ],
)
def test_the_bot_action_decides_a_bot_clicks_conversion(
    link, advertiser, template, action, status, reason
):
    set_policy(link.campaign, bot_action=action)
    conversion = convert(advertiser, bot_click(link))
    assert (conversion.status, conversion.reason) == (status, reason)
    # The template fires on approved conversions: only those reach the publisher now.
    assert Postback.objects.filter(conversion=conversion).exists() == (status == "approved")
    if reason:
        assert conversion.get_reason_display() == dict(Conversion.Reason.choices)[reason]
        assert "bot" in conversion.reason_detail


def test_a_campaign_without_a_policy_holds_bot_conversions(link, advertiser):
    conversion = convert(advertiser, bot_click(link))
    assert (conversion.status, conversion.reason) == ("pending", "bot_click")


def test_a_human_click_is_not_touched_by_the_bot_action(link, advertiser):
    set_policy(link.campaign, bot_action="reject")
    click = click_stored(link=link, spid="h", ip="203.0.113.7", user_agent=BROWSER)
    conversion = convert(advertiser, click)
    assert (conversion.status, conversion.reason) == ("approved", "")


def test_a_flagged_conversion_still_follows_the_advertisers_status(link, advertiser):
    set_policy(link.campaign, bot_action="flag")
    click = bot_click(link)
    pending = convert(advertiser, click, status="pending")
    assert (pending.status, pending.reason) == ("pending", "bot_flagged")
    approved = convert(advertiser, click, status="approved")
    assert (approved.pk, approved.status, approved.reason) == (
        pending.pk,
        "approved",
        "bot_flagged",
    )
    reversed_ = convert(advertiser, click, status="reversed")
    assert reversed_.status == "reversed"


def test_a_rejected_bot_conversion_cant_be_sent_again_as_approved(link, advertiser):
    set_policy(link.campaign, bot_action="reject")
    click = bot_click(link)
    convert(advertiser, click)
    again = convert(advertiser, click, status="approved")
    assert (again.status, again.reason) == ("rejected", "bot_rejected")


def test_the_minimum_time_still_comes_first(link, advertiser):
    link.campaign.min_seconds_to_convert = 60
    link.campaign.save()
    set_policy(link.campaign, bot_action="allow")
    click = bot_click(link)
    conversion = convert(advertiser, click, now=click.created_at + timedelta(seconds=2))
    assert (conversion.status, conversion.reason) == ("rejected", "too_fast")


def test_the_reason_reaches_the_publishers_callback(link, advertiser, publisher, receiver):
    CallbackTemplate.objects.create(
        publisher=publisher,
        url_template=f"{receiver.base_url}/cb?s=[status]&r=[reason]",
        statuses=["approved", "rejected"],
    )
    set_policy(link.campaign, bot_action="reject")
    conversion = convert(advertiser, bot_click(link))
    postback = Postback.objects.get(conversion=conversion)
    assert parse_qs(urlsplit(postback.url).query) == {"s": ["rejected"], "r": ["bot_rejected"]}


def test_a_click_reads_the_policy_without_a_query(client, link, django_assert_num_queries):
    set_policy(link.campaign, blocked_ips="198.51.100.0/24", max_clicks_per_minute=100)
    assert visit(client, link).status_code == 302  # reads the link, with its policy
    with django_assert_num_queries(0):
        assert visit(client, link).status_code == 302
    assert visit(client, link, ip="198.51.100.1").status_code == 403  # creates the day's counter
    # A refusal's only query is its daily counter's.
    with django_assert_num_queries(1):
        assert visit(client, link, ip="198.51.100.1").status_code == 403


def test_the_ip_cap_counts_an_ipv6_client_by_its_64(client, link, publisher):
    set_policy(link.campaign, max_clicks_per_ip_per_minute=2)
    addresses = ["2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:2:abcd::9"]
    assert [visit(client, link, ip=ip).status_code for ip in addresses] == [302, 302, 429]
    assert visit(client, link, ip="2001:db8:1:3::1").status_code == 302  # another /64
    assert refusals(publisher) == {"rate_cap_ip": 1}


def test_the_docstring_examples_hold():
    results = doctest.testmod(policy)
    assert results.attempted > 0 and results.failed == 0
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for name in ("parse_ip_blocks",):
        for test in finder.find(getattr(tracking_models, name)):
            runner.run(test)
    assert runner.failures == 0 and runner.tries > 0
