"""`GET /api/v1/clicks/{click_id}` and `GET /api/v1/trace?spid=…`: the dashboard's trace."""

import pytest

from tests.api.conftest import SPID, browser_click

pytestmark = pytest.mark.django_db


def test_it_shows_one_clicks_journey_down_to_each_attempt(api, world):
    response = api.get(f"/api/v1/clicks/{world.click.click_id}")
    assert response.status_code == 200
    body = response.json()
    assert (body["click_id"], body["spid"], body["placement"]) == (
        world.click.click_id,
        SPID,
        "footer",
    )
    [conversion] = body["conversions"]
    assert conversion["id"] == world.conversion.public_id
    delivered, failed = conversion["postbacks"]
    assert [a["status_code"] for a in delivered["attempt_log"]] == [200]
    assert [a["number"] for a in failed["attempt_log"]] == [1, 2]
    assert failed["status"] == "failed"


def test_it_answers_404_for_an_unknown_click(api, world):
    response = api.get("/api/v1/clicks/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_it_traces_every_click_of_a_spid(api, world, link):
    browser_click(link, SPID + "-other")
    response = api.get("/api/v1/trace", {"spid": SPID})
    assert response.status_code == 200
    body = response.json()
    assert body["spid"] == SPID
    assert body["truncated"] is False
    by_id = {click["click_id"]: click for click in body["clicks"]}
    assert set(by_id) == {world.click.click_id, world.idle_click.click_id}
    assert by_id[world.idle_click.click_id]["conversions"] == []
    assert by_id[world.click.click_id]["conversions"][0]["postback_status"] == "failed"


def test_it_does_not_match_a_click_id_given_as_spid(api, world):
    """The dashboard search box also finds click ids; `spid=` means a spid only."""
    body = api.get("/api/v1/trace", {"spid": world.click.click_id}).json()
    assert body["clicks"] == []


def test_it_requires_the_spid(api, world):
    response = api.get("/api/v1/trace")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"spid"}
