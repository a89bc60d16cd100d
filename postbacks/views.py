"""The demo receiver: a pretend publisher endpoint that records and shows what it was sent."""

from urllib.parse import parse_qsl

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from postbacks import signing
from postbacks.models import DemoCallback, Postback

_SHOWN_HEADERS = ("User-Agent", "Roundtrip-Event-Id", "Roundtrip-Timestamp", "Roundtrip-Signature")


def _require_demo() -> None:
    if not settings.DEMO_RECEIVER_ENABLED:
        raise Http404("The demo receiver is off (DEMO_RECEIVER_ENABLED).")


@require_GET
def demo_receive(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Accept any GET under /demo/receiver/…, check its signature, store it, answer 200."""
    _require_demo()
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


@require_GET
def demo_inbox(request: HttpRequest) -> HttpResponse:
    """The last 50 callbacks received, decoded; `?format=json` for scripts."""
    _require_demo()
    callbacks = list(DemoCallback.objects.all()[:50])
    rows = [
        {
            "received_at": cb.received_at.isoformat(),
            "path": cb.path,
            "params": parse_qsl(cb.query_string, keep_blank_values=True),
            "event_id": cb.event_id,
            "signature_valid": cb.signature_valid,
        }
        for cb in callbacks
    ]
    if request.GET.get("format") == "json":
        return JsonResponse({"callbacks": rows})
    return render(request, "postbacks/demo_inbox.html", {"callbacks": rows})
