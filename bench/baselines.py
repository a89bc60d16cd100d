"""Baselines measured next to the real endpoints, on the same server and settings.

- `plain_wsgi`: a bare WSGI callable answering 302 — the HTTP server's own ceiling.
- `bare_view`: a Django view answering the same 302 without touching the database — the
  framework's ceiling (served through bench.urls by the full middleware stack).
"""

from django.http import HttpRequest, HttpResponseRedirect

LOCATION = "https://advertiser.example/landing?click_id=01m8mkstb0svmmbmqz64b7qttt"


def plain_wsgi(environ, start_response):
    start_response("302 Found", [("Location", LOCATION), ("Content-Length", "0")])
    return [b""]


def bare_view(request: HttpRequest) -> HttpResponseRedirect:
    return HttpResponseRedirect(LOCATION)
