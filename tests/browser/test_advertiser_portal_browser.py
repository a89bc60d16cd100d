"""The advertiser portal in a real browser: an advertiser signs in on the one login page,
lands in its own area, sends a test conversion and sees its outcome, creates a key that is
shown once; every page fits a phone and a desktop without errors or unlabelled inputs."""

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.browser.test_layout import UNLABELLED
from tests.tracking.helpers import click_stored
from tracking.models import AdvertiserAPIKey, AdvertiserUser, Click, IntakeOutcome
from tracking.services import IntakeError, conversion_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
PAGES = [
    "/advertiser/",
    "/advertiser/conversions/",
    "/advertiser/conversions/?tz=Asia/Kolkata",
    "/advertiser/keys/",
    "/advertiser/integration/",
]


@pytest.fixture
def advertiser_account(advertiser, campaign, link):
    """An owner of the advertiser, whose log holds an accepted conversion, a duplicate and a
    refusal (long ids and reasons: the widest rows the pages show)."""
    click = click_stored(link=link, spid="s", user_agent=BROWSER)
    for _ in range(2):
        conversion_record(advertiser=advertiser, click_id=click.click_id, txn_id="order-" * 20)
    old = Click.objects.create(
        link=link,
        publisher=link.publisher,
        campaign=campaign,
        created_at=timezone.now() - timedelta(days=30),
    )
    with pytest.raises(IntakeError):
        conversion_record(advertiser=advertiser, click_id=old.click_id, txn_id="late-order")
    account = get_user_model().objects.create_user("adv-owner", password="pw-adv-owner")
    AdvertiserUser.objects.create(
        advertiser=advertiser, user=account, role=AdvertiserUser.Role.OWNER
    )
    return account


def sign_in_as_advertiser(page) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", "adv-owner")
    page.fill("#id_password", "pw-adv-owner")
    page.click("button[type=submit]")
    page.wait_for_url("**/advertiser/")


def test_an_advertiser_tests_its_integration_in_the_portal(
    browser, live_server, advertiser_account, advertiser, tmp_path
):
    # A desktop browser's user agent (headless Chromium's own is flagged as a bot's, which
    # holds a conversion as pending: the guard the other tests show).
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1360, "height": 900}, user_agent=BROWSER
    )
    page = context.new_page()
    sign_in_as_advertiser(page)
    assert page.locator("h1").inner_text() == "Your campaigns"
    page.click("#test-conversion button[type=submit]")
    page.wait_for_url("**/advertiser/conversions/?campaign=*")
    row = page.locator("#outcomes-table tbody tr").first
    assert "Accepted" in row.inner_text() and "approved" in row.inner_text()
    assert row.locator(".pill-test").count() == 1
    assert IntakeOutcome.objects.filter(advertiser=advertiser, is_test=True).count() == 1
    # `make screenshots` keeps it in docs/screenshots; the normal suite in a temporary folder.
    folder = Path(os.environ.get("ROUNDTRIP_SCREENSHOTS") or tmp_path)
    page.screenshot(path=str(folder / "15-advertiser-conversions.png"), full_page=True)

    page.goto("/advertiser/keys/")
    page.select_option("#id_kind", "token")
    page.fill("#id_name", "pixel")
    page.click("form[action$='/keys/new/'] button[type=submit]")
    page.wait_for_url("**/advertiser/keys/")
    shown = page.locator("#new-key").inner_text()
    key = AdvertiserAPIKey.objects.get(advertiser=advertiser, name="pixel")
    assert shown.startswith(f"rt_tok_{key.lookup}_")
    page.reload()
    assert page.locator("#new-key").count() == 0
    context.close()


@pytest.mark.parametrize("width", [390, 1280])
def test_every_portal_page_fits_its_width_without_errors(
    browser, live_server, advertiser_account, width
):
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": width, "height": 844}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in_as_advertiser(page)
    for path in PAGES:
        page.goto(path)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} at {width}px scrolls sideways by {overflow}px"
        assert page.evaluate(UNLABELLED) == [], path
    assert errors == []
    context.close()
