"""A test postback (dashboard "Send test postback", API): one real, signed request now (a GET,
or a JSON webhook's POST), through the same outbound HTTP as every delivery."""

from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from postbacks import dispatch, http
from postbacks.placeholders import (
    CALLBACK_PLACEHOLDERS,
    SAMPLE_VALUES,
    TemplateError,
    expand_placeholders,
    validate_template,
    webhook_body,
)
from postbacks.values import hidden_values
from publishers.ids import new_event_id


def postback_send_test(*, template, sample_values: dict | None = None) -> dict:
    """Fire one real, signed request for a callback template now, with sample values, and
    report exactly what was sent and what came back. Nothing is stored; no conversion is
    involved.

    `template` is a `CallbackTemplate` (saved or not): a GET is signed by its `publisher`, a
    JSON webhook (`method` POST) by the template's own secret, its body built from the same
    values. Returns {"ok", "request": {method, url, headers, body}, "response": {...} | None,
    "error": {kind, message} | None}; "ok" means a 2xx answer. The request carries
    `Roundtrip-Test: 1` so a receiver can tell it from a real conversion.
    """
    now = timezone.now()
    event_id = new_event_id()
    values = {
        **SAMPLE_VALUES,
        "event_id": event_id,
        "timestamp": str(int(now.timestamp())),
        "publisher_id": template.publisher.public_id,
        **hidden_values(template.publisher),
        **(sample_values or {}),
    }
    try:
        validate_template(template.url_template, CALLBACK_PLACEHOLDERS)
        url = expand_placeholders(template.url_template, values)
    except TemplateError as exc:
        return {
            "ok": False,
            "request": None,
            "response": None,
            "error": {"kind": "invalid_template", "message": str(exc)},
        }
    parts = urlsplit(url)
    body = None
    if template.method == "POST":
        body = webhook_body(values, status=str(values["status"]), occurred_at=now)
        signed = dispatch.webhook_headers(
            event_id=event_id,
            body=body.encode(),
            secrets=template.active_webhook_secrets(),
            timestamp=int(now.timestamp()),
        )
    else:
        signed = dispatch.signed_headers(
            event_id=event_id,
            path_qs=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            secrets=template.publisher.active_signing_secrets(),
            timestamp=int(now.timestamp()),
        )
    headers = {**signed, "Roundtrip-Test": "1"}
    report: dict = {
        "ok": False,
        "request": {"method": template.method, "url": url, "headers": headers, "body": body},
        "response": None,
        "error": None,
    }
    try:
        result = http.send_now(
            url,
            method=template.method,
            body=None if body is None else body.encode(),
            headers=headers,
            allow_private=settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS,
            connect_timeout=settings.POSTBACKS_CONNECT_TIMEOUT,
            total_timeout=settings.POSTBACKS_TOTAL_TIMEOUT,
            max_bytes=settings.POSTBACKS_MAX_RESPONSE_BYTES,
            excerpt_bytes=settings.POSTBACKS_EXCERPT_BYTES,
        )
    except http.DeliveryError as exc:
        report["error"] = {"kind": exc.kind, "message": exc.message}
        return report
    report["ok"] = 200 <= result.status_code < 300
    report["response"] = {
        "status_code": result.status_code,
        "duration_ms": result.duration_ms,
        "body_excerpt": result.body_excerpt,
        "resolved_ip": result.resolved_ip,
    }
    return report
