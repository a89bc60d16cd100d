"""Runs the curl examples of docs/api.md ("Publisher API") against a live server.

Each ```sh block is run by bash, in document order, in one working directory (a block may use
a file the previous one saved), with `set -euo pipefail` and these variables: ROUNDTRIP, KEY,
SPID, CLICK_ID, EVENT_ID (a failed postback), CALLBACK_ID, CURSOR, DAY (today, UTC), SECRET
(the signing secret). `https://publisher.example` is replaced by a local receiver's address so
the test postback really goes somewhere. A ```json block right after a ```sh block is the
documented answer: the real one must have the same shape (the same keys, recursively; values
differ).
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from tests.api.conftest import client_for

DOC = Path(settings.BASE_DIR) / "docs" / "api.md"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)


def publisher_examples() -> list[tuple[str, dict | None]]:
    text = DOC.read_text()
    section = text[text.index("## Publisher API") :]
    blocks = list(FENCE.finditer(section))
    examples = []
    for i, block in enumerate(blocks):
        if block.group(1) != "sh":
            continue
        expected = None
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        if (
            following is not None
            and following.group(1) == "json"
            and not section[block.end() : following.start()].strip()
        ):
            expected = json.loads(following.group(2))
        examples.append((block.group(2), expected))
    return examples


def shape_differences(documented, actual, where: str = "$") -> list[str]:
    """Where the documented JSON and the real answer differ in keys (lists: first items)."""
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{where}: documented an object"]
        problems = []
        if set(documented) != set(actual):
            problems.append(f"{where}: keys {sorted(documented)} != {sorted(actual)}")
        for key in set(documented) & set(actual):
            problems += shape_differences(documented[key], actual[key], f"{where}.{key}")
        return problems
    if isinstance(documented, list) and isinstance(actual, list) and documented and actual:
        return shape_differences(documented[0], actual[0], f"{where}[0]")
    return []


def test_the_doc_has_examples_for_every_route():
    commands = "\n".join(command for command, _ in publisher_examples())
    for route in (
        "conversions",
        "clicks/",
        "trace",
        "postbacks",
        "postbacks/replay",
        "/retry",
        "callbacks",
        "/test",
        "/resume",
        "-X PATCH",
        "-X DELETE",
        "stats",
        "payouts",
        "reconciliation",
    ):
        assert route in commands, route


@pytest.mark.django_db(transaction=True)
def test_the_curl_examples_work_as_documented(
    live_server, world, publisher_key, receiver, tmp_path
):
    first_page = client_for(publisher_key).get("/api/v1/conversions").json()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "ROUNDTRIP": live_server.url,
        "KEY": publisher_key,
        "SPID": world.click.spid,
        "CLICK_ID": world.click.click_id,
        "EVENT_ID": world.failed.event_id,
        "CALLBACK_ID": world.template.public_id,
        "CURSOR": first_page["next_cursor"],
        "DAY": timezone.now().date().isoformat(),
        "SECRET": world.publisher.signing_secret,
    }
    examples = publisher_examples()
    assert len(examples) >= 15
    for command, expected in examples:
        command = command.replace("https://publisher.example", receiver.base_url)
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (
            f"{command}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
        if expected is not None:
            assert shape_differences(expected, json.loads(done.stdout)) == [], command
    # The examples did what they say: the test postback arrived, the callback is gone.
    assert any(r.headers.get("Roundtrip-Test") == "1" for r in receiver.requests)
    assert not type(world.template).objects.filter(pk=world.template.pk).exists()
