"""The dashboard in a real headless Chromium: sign in, callbacks with live preview and a real
test postback, the spid trace, the CSV export."""

import csv
import io
import re
import time

import pytest
from playwright.sync_api import expect

from publishers.models import CallbackTemplate
from tests.browser.conftest import sign_in
from tests.webhook_spec import spec_verify

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_it_signs_in_and_shows_the_overview(page, dashboard_data):
    page.goto("/dashboard/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/dashboard/$"))
    page.fill("#id_username", "owner-a")
    page.fill("#id_password", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator(".message.error")).to_contain_text("correct username and password")
    sign_in(page, "owner-a", "pw-owner-a")
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("[data-metric=clicks] .kpi-value")).to_have_text("4")
    expect(page.locator("svg.chart rect.bar")).to_have_count(30)


def test_it_previews_and_sends_a_test_postback_then_saves(page, publisher, receiver):
    sign_in(page, "member-a", "pw-member-a")
    page.goto("/dashboard/callbacks/new/")
    url_input = page.locator("#id_url_template")
    url_input.press_sequentially(f"{receiver.base_url}/pb?spid=[spid]&amt=", delay=5)
    expect(page.locator("#preview-url")).to_have_text(f"{receiver.base_url}/pb?spid=123456789&amt=")
    page.click("button.chip[data-insert='[payout]']")
    expect(page.locator("#preview-url")).to_have_text(
        f"{receiver.base_url}/pb?spid=123456789&amt=2.50"
    )
    url_input.press_sequentially("&x=[bogus]", delay=5)
    expect(page.locator("#preview-error")).to_contain_text("Unknown placeholder [bogus]")
    url_input.fill(f"{receiver.base_url}/pb?spid=[spid]&amt=[payout]")
    receiver.body = b"thanks-from-receiver"
    page.click("#send-test")
    expect(page.locator("#test-verdict")).to_contain_text("delivered")
    expect(page.locator("#test-response")).to_contain_text("HTTP 200")
    expect(page.locator("#test-response")).to_contain_text("thanks-from-receiver")
    expect(page.locator("#test-request")).to_contain_text("Roundtrip-Signature: v1=")
    assert [r.path for r in receiver.requests] == ["/pb?spid=123456789&amt=2.50"]
    page.click("button.primary[type=submit]")
    expect(page.locator(".message.success")).to_contain_text("Callback created")
    expect(page.locator("#callbacks-table")).to_contain_text("/pb?spid=[spid]&amt=[payout]")
    assert CallbackTemplate.objects.filter(publisher=publisher).count() == 1


def test_it_sends_a_test_json_webhook_then_reveals_the_saved_callbacks_secret(
    page, publisher, receiver
):
    sign_in(page, "owner-a", "pw-owner-a")
    page.goto("/dashboard/callbacks/new/")
    page.locator("#id_url_template").fill(f"{receiver.base_url}/hooks?s=[spid]")
    page.check("input[name=method][value=POST]")
    page.click("#send-test")
    expect(page.locator("#test-verdict")).to_contain_text("delivered")
    expect(page.locator("#test-request")).to_contain_text("POST ")
    expect(page.locator("#test-request")).to_contain_text("webhook-signature: v1,")
    expect(page.locator("#test-request")).to_contain_text('"type":"conversion.approved"')
    assert [r.method for r in receiver.requests] == ["POST"]
    page.click("button.primary[type=submit]")
    # A new JSON webhook opens on its own page, where its owner reveals the secret.
    expect(page.locator(".message.success")).to_contain_text("Callback created")
    template = CallbackTemplate.objects.get(publisher=publisher)
    assert template.method == "POST"
    page.click("#webhook-secret button:has-text('Reveal secret')")
    expect(page.locator("#webhook-secret-value")).to_have_text(template.webhook_secret)
    # The editor's test of the saved callback is signed with that secret.
    page.click("#send-test")
    expect(page.locator("#test-verdict")).to_contain_text("delivered")
    received = receiver.requests[-1]
    assert spec_verify(template.webhook_secret, received.headers, received.body, now=time.time())


def test_it_finds_a_spid_on_the_trace_page(page, dashboard_data):
    sign_in(page, "owner-a", "pw-owner-a")
    page.click("nav.side >> text=Trace a spid")
    page.fill("input[name=q]", "spid-a-alpha")
    page.click("button:has-text('Trace')")
    clicks = page.locator("#trace-clicks tbody tr")
    expect(clicks).to_have_count(2)
    expect(page.locator("#trace-clicks")).to_contain_text(dashboard_data.clicks[0].click_id)
    conversion = dashboard_data.conversions[0]
    block = page.locator(f"#conversion-{conversion.public_id}")
    expect(block.locator(".postback")).to_have_count(2)
    expect(block).to_contain_text("boom")  # the failing endpoint's answer, attempt by attempt


def test_it_exports_the_report_as_csv(page, dashboard_data):
    sign_in(page, "owner-a", "pw-owner-a")
    page.goto("/dashboard/reports/?group_by=country")
    expect(page.locator("#report-table tbody tr")).to_have_count(3)
    with page.expect_download() as download_info:
        page.click("#export-csv")
    download = download_info.value
    rows = list(csv.reader(io.StringIO(download.path().read_text(encoding="utf-8"))))
    assert rows[0][:3] == ["Country", "Impressions", "Clicks"]
    shown = page.locator("#report-table tbody tr td:first-child").all_inner_texts()
    assert [r[0] for r in rows[1:-1]] == shown
    assert rows[-1][0] == "Total"
