"""Screenshots of every main dashboard page, on a month of generated traffic.

`make screenshots` runs this with ROUNDTRIP_SCREENSHOTS=docs/screenshots; in the normal suite
the images go to a temporary folder, and the test still checks that every page renders."""

import os
import random
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tracking.models import Click, Conversion
from tracking.rollups import stats_rebuild

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def add_month_of_traffic(data, campaign, creative, advertiser) -> None:
    """About 6,000 clicks over 30 days with a weekly rhythm, 3 % converting."""
    rng = random.Random(7)
    now = timezone.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    countries = ["US", "DE", "GB", "FR", "IN", "BR", "CA", "IT"]
    placements = ["sidebar", "header", "in-article", "footer"]
    clicks = []
    for day in range(30):
        volume = int(160 + 60 * ((day % 7) in (1, 2, 3)) + day * 3)
        # Today only up to now.
        seconds = 86400 if day else max(1, int((now - midnight).total_seconds()))
        for _ in range(volume):
            smart = rng.random() < 0.35
            clicks.append(
                Click(
                    link=data.link,
                    publisher=data.publisher,
                    campaign=campaign,
                    creative=creative if rng.random() < 0.7 else None,
                    spid=f"u{rng.randrange(10**8):08d}",
                    country=rng.choices(countries, [30, 15, 12, 10, 9, 8, 8, 8])[0],
                    placement=rng.choice(placements),
                    smart_ad_id="1491" if smart else "",
                    keyword=rng.choice(["running shoes", "hotels", "vpn"]) if smart else "",
                    device=rng.choice(["mobile", "desktop"]),
                    created_at=midnight
                    - timedelta(days=day)
                    + timedelta(seconds=rng.randrange(seconds)),
                )
            )
    Click.objects.bulk_create(clicks, batch_size=2000)
    conversions = [
        Conversion(
            click=click,
            publisher=data.publisher,
            advertiser=advertiser,
            campaign=campaign,
            status=rng.choices(["approved", "pending"], [9, 1])[0],
            payout=Decimal("2.50"),
            currency="EUR",
            created_at=min(click.created_at + timedelta(hours=2), now),
            updated_at=now,
            **Conversion.click_dimensions(click),
        )
        for click in clicks
        if rng.random() < 0.03
    ]
    Conversion.objects.bulk_create(conversions, batch_size=2000)
    stats_rebuild(publisher_id=data.publisher.pk, start=now - timedelta(days=31), end=now)


def test_it_renders_every_main_page_for_screenshots(
    page, dashboard_data, campaign, creative, advertiser, receiver, tmp_path
):
    add_month_of_traffic(dashboard_data, campaign, creative, advertiser)
    folder = Path(os.environ.get("ROUNDTRIP_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def shot(name: str, heading: str, *, full_page: bool = True) -> None:
        expect(page.locator("main h1")).to_have_text(heading)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 10_000, name

    page.goto("/accounts/login/")
    shot("01-sign-in", "Sign in")
    sign_in(page, "owner-a", "pw-owner-a")
    page.goto("/dashboard/?period=30d")
    shot("02-overview", "Overview")
    page.goto("/dashboard/reports/?group_by=country&sort=clicks&dir=desc")
    shot("03-reports", "Reports")
    page.goto("/dashboard/conversions/")
    shot("04-conversions", "Conversions")
    page.goto("/dashboard/trace/?q=spid-a-alpha")
    shot("05-trace", "Trace a spid")
    page.goto("/dashboard/callbacks/")
    shot("06-callbacks", "Callbacks")
    page.goto(f"/dashboard/callbacks/{dashboard_data.good_template.public_id}/")
    expect(page.locator("#preview-url")).to_contain_text("123456789")
    page.click("#send-test")
    expect(page.locator("#test-response")).to_contain_text("HTTP 200")
    shot("07-callback-editor", "Edit callback")
    page.goto("/dashboard/deliveries/")
    shot("08-deliveries", "Deliveries")
    page.goto("/dashboard/links/")
    shot("09-links", "Links & ads")
    page.goto("/dashboard/api-keys/")
    page.fill("#id_name", "reconciliation job")
    page.click("button:has-text('Create key')")
    expect(page.locator("#new-key")).to_contain_text("rt_pub_")
    shot("10-api-keys", "API keys")
    page.goto("/dashboard/settings/")
    shot("11-settings", "Settings")
    page.goto("/dashboard/activity/")
    expect(page.locator("#activity-table")).to_contain_text("API key created")
    shot("12-activity", "Activity")
    page.goto("/dashboard/conversions/?group_by=day")
    expect(page.locator("#conversion-groups")).to_be_visible()
    shot("13-conversions-by-day", "Conversions")
    page.goto(
        "/dashboard/reports/?group_by=day&start=" + str(timezone.now().date() - timedelta(days=29))
    )
    expect(page.locator("#report-chart svg")).to_be_visible()
    shot("14-reports-chart", "Reports")

    # The same pages on a phone (390 px), the first screen of each: tables scroll inside their
    # own box.
    page.set_viewport_size({"width": 390, "height": 844})
    for name, path, heading in [
        ("phone-02-overview", "/dashboard/?period=30d", "Overview"),
        ("phone-04-conversions", "/dashboard/conversions/", "Conversions"),
        ("phone-08-deliveries", "/dashboard/deliveries/", "Deliveries"),
    ]:
        page.goto(path)
        shot(name, heading, full_page=False)
