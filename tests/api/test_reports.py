"""`GET /api/v1/stats` and the signed reconciliation file."""

import csv
import io
import json
import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from postbacks import signing
from publishers.services import publisher_secret_rotate

pytestmark = pytest.mark.django_db


def test_it_reports_stats_grouped_by_day_and_by_placement(api, world):
    today = timezone.localdate().isoformat()
    by_day = api.get("/api/v1/stats", {"from": today, "to": today}).json()
    assert [(r["key"], r["clicks"], r["conversions"], r["payouts"]) for r in by_day["rows"]] == [
        (today, 2, 1, [{"currency": "EUR", "amount": "2.50"}])
    ]
    assert by_day["totals"]["clicks"] == 2
    by_placement = api.get(
        "/api/v1/stats", {"from": today, "to": today, "group_by": "placement"}
    ).json()
    assert {r["key"]: r["clicks"] for r in by_placement["rows"]} == {"footer": 1, "sidebar": 1}


def test_it_reports_smart_ad_impressions_and_ctr(api, world, publisher, creative):
    from tracking.models import SmartAd, SmartAdImpression

    unit = SmartAd.objects.create(name="Unit")
    today = timezone.localdate()
    SmartAdImpression.objects.create(
        publisher=publisher, day=today, smart_ad=unit, creative=creative, country="", impressions=40
    )
    window = {"from": today.isoformat(), "to": today.isoformat()}
    by_unit = api.get("/api/v1/stats", {**window, "group_by": "smart_ad"}).json()
    rows = {r["key"]: (r["impressions"], r["clicks"], r["ctr"]) for r in by_unit["rows"]}
    # The world's clicks came from a plain link: no smart ad, no impressions.
    assert rows == {"": (0, 2, None), str(unit.pk): (40, 0, 0.0)}
    assert (by_unit["totals"]["impressions"], by_unit["totals"]["ctr"]) == (40, 0.0)
    by_day = api.get("/api/v1/stats", window).json()
    # Impressions per day, but the day's clicks aren't all smart-ad clicks: no CTR.
    assert [(r["impressions"], r["ctr"]) for r in by_day["rows"]] == [(40, None)]
    by_placement = api.get("/api/v1/stats", {**window, "group_by": "placement"}).json()
    assert {r["impressions"] for r in by_placement["rows"]} == {None}


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-01-02", "to": "2026-01-01"},
        {"from": "2026-01-01", "to": "2026-01-01", "group_by": "os"},
        {"from": "2026-01-01", "to": "2026-01-01", "tz": "Mars/Olympus_Mons"},
        {"from": "2024-01-01", "to": "2026-01-01"},
        {"to": "2026-01-01"},
    ],
)
def test_it_rejects_bad_stats_parameters(api, world, params):
    response = api.get("/api/v1/stats", params)
    assert response.status_code == 400
    assert response.json()["error"]["fields"]


def fetch(api, **params):
    day = timezone.localdate().isoformat()
    return api.get("/api/v1/reconciliation", {"date": day, **params})


def assert_signed(response, publisher, day: str) -> None:
    digest = response["Roundtrip-Content-SHA256"]
    assert digest == signing.content_sha256(response.content)
    assert signing.verify_file(
        publisher.active_signing_secrets(),
        response["Roundtrip-Timestamp"],
        day,
        response.content,
        response["Roundtrip-Signature"],
    )


def test_it_serves_a_signed_json_reconciliation(api, world):
    response = fetch(api)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    day = body["date"]
    assert body["count"] == 2
    assert [(r["spid"], r["event_id"], r["delivery_status"]) for r in body["rows"]] == [
        (world.click.spid, world.delivered.event_id, "succeeded"),
        (world.click.spid, world.failed.event_id, "failed"),
    ]
    assert body["rows"][0]["payout"] == "2.50"
    assert_signed(response, world.publisher, day)
    # Another day, another signature: the date is part of what is signed.
    other_day = (timezone.localdate() - timedelta(days=1)).isoformat()
    assert not signing.verify_file(
        world.publisher.active_signing_secrets(),
        response["Roundtrip-Timestamp"],
        other_day,
        response.content,
        response["Roundtrip-Signature"],
    )


@pytest.mark.parametrize("how", [{"format": "csv"}, {"HTTP_ACCEPT": "text/csv"}])
def test_it_serves_a_signed_csv_reconciliation(api, world, how):
    day = timezone.localdate().isoformat()
    params = {"date": day, **{k: v for k, v in how.items() if k == "format"}}
    headers = {k: v for k, v in how.items() if k != "format"}
    response = api.get("/api/v1/reconciliation", params, **headers)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f"roundtrip-reconciliation-{day}.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["event_id"] for r in rows] == [world.delivered.event_id, world.failed.event_id]
    assert rows[0]["spid"] == world.click.spid  # exact, quoting and all
    assert_signed(response, world.publisher, day)


def test_it_lists_a_conversion_without_postback_once(api, world, advertiser):
    from tests.api.conftest import record_conversion

    world.template.delete()
    world.failed.template.delete()
    extra = record_conversion(advertiser, world.idle_click)
    rows = json.loads(fetch(api).content)["rows"]
    mine = [r for r in rows if r["conversion_id"] == extra.public_id]
    assert [(r["event_id"], r["delivery_status"]) for r in mine] == [("", "none")]


def test_it_signs_with_both_secrets_during_a_rotation(api, world):
    old = world.publisher.signing_secret
    publisher_secret_rotate(publisher=world.publisher)
    response = fetch(api)
    day = json.loads(response.content)["date"]
    assert len(response["Roundtrip-Signature"].split()) == 2
    for secret in (old, world.publisher.signing_secret):
        assert signing.verify_file(
            [secret],
            response["Roundtrip-Timestamp"],
            day,
            response.content,
            response["Roundtrip-Signature"],
        )


def test_it_can_be_verified_with_openssl_as_documented(api, world, tmp_path):
    """The shell recipe of docs/api.md: sha256sum, then openssl's HMAC, base64."""
    response = fetch(api, format="csv")
    day = timezone.localdate().isoformat()
    (tmp_path / "file.csv").write_bytes(response.content)
    script = (
        'sha=$(sha256sum file.csv | cut -d" " -f1); '
        'printf "%s.%s.%s" "$TS" "$DAY" "$sha" '
        '| openssl dgst -sha256 -hmac "$SECRET" -binary | base64'
    )
    computed = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={
            "TS": response["Roundtrip-Timestamp"],
            "DAY": day,
            "SECRET": world.publisher.signing_secret,
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert f"v1={computed}" in response["Roundtrip-Signature"].split()


@pytest.mark.parametrize(
    "params", [{}, {"date": "2026-13-01"}, {"date": "2026-01-01", "tz": "Mars/Olympus"}]
)
def test_it_answers_bad_reconciliation_requests_in_json(api, world, params):
    response = api.get("/api/v1/reconciliation", {**params, "format": "csv"})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "invalid"
