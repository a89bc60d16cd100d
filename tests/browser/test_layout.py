"""Every dashboard page at phone (390 px) and desktop (1280 px) width: no sideways page
scroll (wide tables scroll inside their own box), no console error, every form input
labelled."""

import pytest

from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

PAGES = [
    "/dashboard/",
    "/dashboard/?period=30d&tz=Asia/Kolkata",
    "/dashboard/reports/?group_by=placement",
    "/dashboard/reports/?group_by=day&tz=Asia/Kolkata",
    "/dashboard/conversions/",
    "/dashboard/conversions/?group_by=day&tz=Asia/Kolkata",
    "/dashboard/conversions/?group_by=spid",
    "/dashboard/conversions/?view=refused",
    "/dashboard/trace/?q=spid-a-alpha",
    "/dashboard/callbacks/",
    "/dashboard/callbacks/new/",
    "/dashboard/deliveries/",
    "/dashboard/deliveries/?state=pending",
    "/dashboard/links/",
    "/dashboard/offers/",
    "/dashboard/api-keys/",
    "/dashboard/settings/",
    "/dashboard/activity/",
]

# Inputs a person can't see or type into need no label.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => !['hidden', 'submit', 'button'].includes(el.type))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby'))
  .map(el => el.name || el.id || el.outerHTML.slice(0, 80))"""


@pytest.mark.parametrize("width", [390, 1280])
def test_every_page_fits_its_width_without_errors(browser, live_server, dashboard_data, width):
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": width, "height": 844}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, "owner-a", "pw-owner-a")
    for path in PAGES:
        page.goto(path)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} at {width}px scrolls sideways by {overflow}px"
        assert page.evaluate(UNLABELLED) == [], path
    assert errors == []
    context.close()
