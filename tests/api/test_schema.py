"""The OpenAPI contract: the committed docs/openapi.yaml is what the code generates, the live
schema and the browsable docs are served, and the docs' assets are local files.

After changing the API, regenerate the file with:

    python manage.py spectacular --file docs/openapi.yaml --validate --fail-on-warn
"""

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command

COMMITTED = Path(settings.BASE_DIR) / "docs" / "openapi.yaml"


def test_it_matches_the_committed_schema(tmp_path):
    generated = tmp_path / "openapi.yaml"
    call_command("spectacular", "--file", str(generated), "--validate", "--fail-on-warn")
    assert generated.read_text() == COMMITTED.read_text(), (
        "docs/openapi.yaml is stale: run "
        "`python manage.py spectacular --file docs/openapi.yaml --validate --fail-on-warn`"
    )


def test_it_describes_both_audiences_of_the_shared_path():
    schema = yaml.safe_load(COMMITTED.read_text())
    conversions = schema["paths"]["/api/v1/conversions"]
    assert conversions["get"]["security"] == [{"publisherKey": []}]
    assert conversions["post"]["security"] == [{"advertiserKey": []}]
    assert schema["paths"]["/postback"]["get"]["security"] == [{"advertiserToken": []}]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Error", (path, method, code)


@pytest.mark.django_db
def test_it_serves_the_live_schema(client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert response.json()["paths"].keys() == yaml.safe_load(COMMITTED.read_text())["paths"].keys()


@pytest.mark.django_db
def test_it_serves_the_docs_with_local_assets(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 3, html  # favicon, CSS and the two bundles
    for asset in assets:
        assert asset.startswith("/" + settings.STATIC_URL.strip("/") + "/"), asset
        assert finders.find(asset.split("/", 2)[2]), asset
    # No CDN anywhere: the page works offline.
    assert re.findall(r"https?://", html) == []


@pytest.mark.django_db
def test_it_describes_the_intake_answer_as_it_is(client, api_key, link):
    """The intake's answer is described by a serializer of its own (tracking/api.py):
    this keeps the description and the real answer in step."""
    from tests.api.conftest import browser_click

    click = browser_click(link, "123")
    response = client.post(
        "/api/v1/conversions",
        {"click_id": click.click_id},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    assert response.status_code == 201
    component = yaml.safe_load(COMMITTED.read_text())["components"]["schemas"]["IntakeConversion"]
    assert set(response.json()) == set(component["properties"])
