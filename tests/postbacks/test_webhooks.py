"""JSON webhooks (a callback template set to POST) through the delivery engine, against a real
HTTP receiver on 127.0.0.1: the body the catalog gives, the Standard Webhooks signature checked
by a verifier written here from the spec (never our signer), retries, re-sends, rotation, the
test postback, and the JSON body's documented fields."""

import base64
import json
import math
import re
import shutil
import subprocess
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from postbacks import dispatch
from postbacks.dispatch import Lane
from postbacks.models import Postback, PostbackAttempt
from postbacks.placeholders import CATALOG, JSON_TYPES
from postbacks.sample import postback_send_test
from postbacks.services import postbacks_retry
from publishers import services
from publishers.models import CallbackTemplate
from tests.tracking.helpers import click_stored
from tests.webhook_spec import spec_verify
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

SPID = 'a b&c/d?e#f%g"ü😀'
BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)


def test_the_independent_verifier_accepts_the_spec_example():
    """The verifier above against the example in the Standard Webhooks repository."""
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert spec_verify(secret, headers, b'{"test": 2432232314}', now=1614265330)
    assert not spec_verify(secret, headers, b'{"test": 2432232315}', now=1614265330)
    assert not spec_verify(secret, headers, b'{"test": 2432232314}', now=1614265330 + 301)


@pytest.fixture(autouse=True)
def no_kicks():
    """Nothing reaches a broker: the tests run the dispatcher themselves."""
    with mock.patch.object(dispatch, "kick", return_value=True) as kick:
        yield kick


@pytest.fixture
def webhook(publisher, receiver) -> CallbackTemplate:
    return services.callback_template_create(
        publisher=publisher,
        url_template=f"{receiver.base_url}/hooks/roundtrip?src=[publisher_id]",
        method=CallbackTemplate.Method.POST,
    )


@pytest.fixture
def make_postback(link, advertiser, webhook):
    def make(spid: str = SPID, **conversion) -> Postback:
        click = click_stored(link=link, spid=spid, user_agent=BROWSER)
        [postback] = conversion_record(
            advertiser=advertiser, click_id=click.click_id, **conversion
        ).postbacks
        return Postback.objects.get(pk=postback.pk)

    return make


def deliver() -> None:
    dispatch.postbacks_dispatch(Lane.RETRY, wait=math.inf, kicks=False)


def test_it_posts_a_json_webhook_that_a_spec_verifier_accepts(
    receiver, make_postback, webhook, publisher, link
):
    postback = make_postback(txn_id="order-7", revenue=Decimal("4.125"))
    assert postback.method == "POST"
    deliver()

    [received] = receiver.requests
    assert received.method == "POST"
    assert received.path == f"/hooks/roundtrip?src={publisher.public_id}"
    assert received.body == postback.body.encode()
    headers = received.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-id"] == headers["Roundtrip-Event-Id"] == postback.event_id
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
    assert spec_verify(webhook.webhook_secret, headers, received.body, now=time.time())
    # Signed over exactly these bytes, with this callback's secret only.
    assert not spec_verify(webhook.webhook_secret, headers, received.body + b" ", now=time.time())
    other = services.callback_template_create(
        publisher=publisher, url_template="https://cb.example/", method="POST"
    )
    assert not spec_verify(other.webhook_secret, headers, received.body, now=time.time())

    payload = json.loads(received.body)
    assert payload["type"] == "conversion.approved"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", payload["timestamp"])
    data = payload["data"]
    assert list(data) == [p.name for p in CATALOG]
    assert data["spid"] == SPID
    assert data["event_id"] == postback.event_id
    assert data["conversion_id"] == postback.conversion.public_id
    assert data["click_id"] == postback.conversion.click.click_id
    assert (data["payout"], data["currency"], data["txn_id"]) == ("2.50", "EUR", "order-7")
    assert data["publisher_id"] == publisher.public_id
    assert data["campaign_id"] == link.campaign.public_id
    assert data["status"] == "approved"
    assert isinstance(data["click_time"], int) and isinstance(data["conversion_time"], int)
    # The network doesn't share revenue with this publisher: null, as [revenue] is empty.
    assert data["revenue"] is None

    postback.refresh_from_db()
    assert postback.status == Postback.Status.SUCCEEDED
    [attempt] = postback.attempt_log.all()
    assert (attempt.status_code, attempt.outcome) == (200, "success")


def test_its_body_carries_revenue_only_when_the_publisher_opted_in(make_postback, publisher):
    publisher.share_revenue = True
    publisher.save()
    postback = make_postback(revenue=Decimal("4.125"))
    assert json.loads(postback.body)["data"]["revenue"] == "4.125"


def test_every_field_has_its_documented_type(make_postback):
    data = json.loads(make_postback().body)["data"]
    for name, kind in JSON_TYPES.items():
        value = data[name]
        if kind == "integer":
            assert isinstance(value, int), name
        elif kind == "decimal":
            assert value is None or re.fullmatch(r"-?\d+\.\d{2,}", value), (name, value)
        else:
            assert isinstance(value, str), name


def test_the_docs_list_every_field_with_its_type():
    text = (Path(django_settings.BASE_DIR) / "docs" / "delivery.md").read_text()
    section = text.split("### The JSON body", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (\w+)", section, re.MULTILINE))
    assert rows == JSON_TYPES


def test_a_retry_sends_the_same_id_and_body_with_a_fresh_signature(
    receiver, make_postback, webhook
):
    receiver.status = 503
    postback = make_postback()
    deliver()
    assert PostbackAttempt.objects.get().outcome == "retry"
    time.sleep(1.1)  # the next attempt's timestamp is another second
    receiver.status = 200
    Postback.objects.filter(pk=postback.pk).update(next_attempt_at=timezone.now())
    deliver()

    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == postback.event_id
    assert first.body == second.body
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    for request in (first, second):
        assert spec_verify(webhook.webhook_secret, request.headers, request.body, now=time.time())


def test_a_delivered_webhook_is_resent_exactly_with_a_fresh_signature(
    receiver, make_postback, webhook
):
    postback = make_postback()
    deliver()
    # The template changes afterwards: the re-send still sends what the postback froze.
    services.callback_template_update(
        template=webhook, url_template=webhook.url_template, method="GET"
    )
    time.sleep(1.1)
    assert postbacks_retry([postback.pk]) == 1
    deliver()

    first, again = receiver.requests
    assert again.method == "POST"
    assert (again.path, again.body) == (first.path, first.body)
    assert again.headers["webhook-id"] == first.headers["webhook-id"] == postback.event_id
    assert int(again.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert spec_verify(webhook.webhook_secret, again.headers, again.body, now=time.time())


def test_it_signs_with_both_secrets_while_a_rotation_overlaps(receiver, make_postback, webhook):
    old = webhook.webhook_secret
    services.callback_template_secret_rotate(template=webhook, overlap=timedelta(hours=1))
    assert webhook.webhook_secret != old
    make_postback()
    deliver()
    [received] = receiver.requests
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, webhook.webhook_secret):
        assert spec_verify(secret, received.headers, received.body, now=time.time())


def test_after_the_overlap_only_the_new_secret_signs(receiver, make_postback, webhook):
    old = webhook.webhook_secret
    services.callback_template_secret_rotate(
        template=webhook, overlap=timedelta(hours=1), now=timezone.now() - timedelta(hours=2)
    )
    make_postback()
    deliver()
    [received] = receiver.requests
    assert spec_verify(webhook.webhook_secret, received.headers, received.body, now=time.time())
    assert not spec_verify(old, received.headers, received.body, now=time.time())


def test_a_webhook_whose_callback_was_deleted_fails_instead_of_going_unsigned(
    receiver, make_postback, webhook
):
    postback = make_postback()
    services.callback_template_delete(template=webhook)
    deliver()
    assert receiver.requests == []
    postback.refresh_from_db()
    assert postback.status == Postback.Status.FAILED
    [attempt] = postback.attempt_log.all()
    assert attempt.error_kind == "no_secret"


def test_get_and_post_callbacks_of_one_conversion_each_go_their_way(
    receiver, link, advertiser, publisher, webhook
):
    services.callback_template_create(
        publisher=publisher, url_template=f"{receiver.base_url}/get?s=[spid]"
    )
    click = click_stored(link=link, spid="abc", user_agent=BROWSER)
    conversion_record(advertiser=advertiser, click_id=click.click_id)
    deliver()
    by_method = {request.method: request for request in receiver.requests}
    assert set(by_method) == {"GET", "POST"}
    assert by_method["GET"].path == "/get?s=abc" and by_method["GET"].body == b""
    assert "webhook-signature" not in by_method["GET"].headers
    assert "Roundtrip-Signature" not in by_method["POST"].headers


def test_the_test_postback_of_a_webhook_is_a_signed_post(receiver, webhook):
    result = postback_send_test(template=webhook, sample_values={"spid": "xyz"})
    assert result["ok"], result
    [received] = receiver.requests
    assert received.method == "POST"
    assert received.headers["Roundtrip-Test"] == "1"
    assert received.body.decode() == result["request"]["body"]
    assert json.loads(received.body)["data"]["spid"] == "xyz"
    assert spec_verify(webhook.webhook_secret, received.headers, received.body, now=time.time())


def test_a_test_postback_with_a_sample_that_is_no_number_still_answers(receiver, webhook):
    result = postback_send_test(template=webhook, sample_values={"click_time": "soon"})
    assert result["ok"], result
    assert json.loads(result["request"]["body"])["data"]["click_time"] is None


# --- The verifier snippets of docs/delivery.md, against a delivered webhook ----------------------


def _snippet(language: str) -> str:
    text = (Path(django_settings.BASE_DIR) / "docs" / "delivery.md").read_text()
    section = text.split("## JSON webhooks (POST)", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture
def delivered(receiver, make_postback):
    make_postback()
    deliver()
    [received] = receiver.requests
    return received


class _Headers(dict):
    """Case-insensitive, as frameworks hand headers to a view."""

    def get(self, name, default=None):
        return super().get(name.lower(), default)


def test_the_documented_python_verifier_accepts_a_delivered_webhook(delivered, webhook):
    namespace: dict = {}
    exec(_snippet("python"), namespace)  # noqa: S102 - our own documentation's code
    verify = namespace["roundtrip_webhook_ok"]
    headers = _Headers({name.lower(): value for name, value in delivered.headers.items()})
    assert verify([webhook.webhook_secret], headers, delivered.body)
    assert not verify([webhook.webhook_secret], headers, delivered.body + b" ")
    assert not verify(["whsec_" + "A" * 32], headers, delivered.body)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_documented_node_verifier_accepts_a_delivered_webhook(delivered, webhook, tmp_path):
    function = _snippet("js").split("\napp.post(", 1)[0]
    script = tmp_path / "verify.js"
    script.write_text(
        function
        + "\nconst input = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        + "const body = Buffer.from(input.body, 'base64');\n"
        + "console.log(JSON.stringify([\n"
        + "  roundtripWebhookOk(input.secrets, input.headers, body),\n"
        + "  roundtripWebhookOk(input.secrets, input.headers, Buffer.concat([body, Buffer.from(' ')])),\n"
        + "]));\n"
    )
    headers = {name.lower(): value for name, value in delivered.headers.items()}
    answer = subprocess.run(
        ["node", str(script)],
        input=json.dumps(
            {
                "secrets": [webhook.webhook_secret],
                "headers": headers,
                "body": base64.b64encode(delivered.body).decode(),
            }
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(answer.stdout) == [True, False]
