"""The demo receiver: a pretend publisher endpoint that records and shows what it was sent
(GET postbacks and JSON webhooks)."""

import json
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from postbacks import signing
from postbacks.models import DemoCallback, Postback

_SHOWN_HEADERS = (
    "User-Agent",
    "Roundtrip-Event-Id",
    "Roundtrip-Timestamp",
    "Roundtrip-Signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)
# What of a webhook's body the inbox keeps: the demo's own are a kilobyte or two.
_MAX_BODY_BYTES = 64 * 1024


def _require_demo() -> None:
    if not settings.DEMO_RECEIVER_ENABLED:
        raise Http404("The demo receiver is off (DEMO_RECEIVER_ENABLED).")


# A stand-in for a publisher's server, which our webhooks reach without a CSRF token: its
# requests are authenticated by their signature instead. Only on in local mode.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def demo_receive(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Accept any GET (a postback) or POST (a JSON webhook) under /demo/receiver/…, check its
    signature, store it, answer 200."""
    _require_demo()
    if request.method == "POST":
        return _receive_webhook(request)
    event_id = request.headers.get("Roundtrip-Event-Id", "")
    # The signature covers the request target exactly as sent; Django's path is decoded (a
    # %2F in a spid would come back as "/"), so prefer the server's raw value when it has one.
    path_qs = (
        request.META.get("RAW_URI") or request.META.get("REQUEST_URI") or request.get_full_path()
    )
    valid = False
    postback = Postback.objects.select_related("publisher").filter(event_id=event_id).first()
    if postback is not None:
        valid = signing.verify(
            postback.publisher.active_signing_secrets(),
            event_id,
            request.headers.get("Roundtrip-Timestamp", ""),
            request.headers.get("Roundtrip-Signature", ""),
            path_qs,
        )
    DemoCallback.objects.create(
        path=request.path[:2048],
        query_string=request.META.get("QUERY_STRING", ""),
        event_id=event_id[:40],
        signature_valid=valid,
        headers={name: request.headers.get(name, "") for name in _SHOWN_HEADERS},
    )
    return HttpResponse("ok\n", content_type="text/plain")


def _receive_webhook(request: HttpRequest) -> HttpResponse:
    """A JSON webhook: verified as Standard Webhooks says, with its callback's secrets."""
    event_id = request.headers.get("webhook-id", "")
    body = request.body[:_MAX_BODY_BYTES]
    postback = Postback.objects.select_related("template").filter(event_id=event_id).first()
    valid = postback is not None and postback.template is not None
    if valid:
        valid = signing.webhook_verify(
            postback.template.active_webhook_secrets(),
            event_id,
            request.headers.get("webhook-timestamp", ""),
            request.headers.get("webhook-signature", ""),
            body,
        )
    DemoCallback.objects.create(
        method="POST",
        path=request.path[:2048],
        query_string=request.META.get("QUERY_STRING", ""),
        # PostgreSQL text holds no NUL.
        body=body.decode("utf-8", "replace").replace("\x00", "\ufffd"),
        event_id=event_id[:40],
        signature_valid=valid,
        headers={name: request.headers.get(name, "") for name in _SHOWN_HEADERS},
    )
    return HttpResponse("ok\n", content_type="text/plain")


def _fields(callback: DemoCallback) -> list[tuple[str, str]]:
    """What a callback told us, decoded: a GET's query, or a JSON webhook's `data`."""
    if callback.method != "POST":
        return parse_qsl(callback.query_string, keep_blank_values=True)
    try:
        data = json.loads(callback.body).get("data", {})
    except (ValueError, AttributeError):
        return []
    if not isinstance(data, dict):
        return []
    return [(str(name), "" if value is None else str(value)) for name, value in data.items()]


@require_GET
def demo_inbox(request: HttpRequest) -> HttpResponse:
    """The last 50 callbacks received, decoded; `?format=json` for scripts."""
    _require_demo()
    callbacks = list(DemoCallback.objects.all()[:50])
    rows = [
        {
            "received_at": cb.received_at.isoformat(),
            "method": cb.method,
            "path": cb.path,
            "params": _fields(cb),
            "event_id": cb.event_id,
            "signature_valid": cb.signature_valid,
        }
        for cb in callbacks
    ]
    if request.GET.get("format") == "json":
        return JsonResponse({"callbacks": rows})
    return render(request, "postbacks/demo_inbox.html", {"callbacks": rows})
