"""API keys: shown once when created, named, revocable; only owners manage them."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from publishers import selectors, services
from publishers.audit import Actor
from publishers.forms import ApiKeyForm
from publishers.views.common import is_owner, member_view, owner_view


def _page(request: HttpRequest, form: ApiKeyForm, new_key: str = "") -> HttpResponse:
    return render(
        request,
        "publishers/api_keys.html",
        {
            "nav": "api_keys",
            "keys": selectors.api_keys_for_publisher(request.publisher),
            "form": form,
            "new_key": new_key,
            "can_manage": is_owner(request),
        },
    )


# Session key holding a just-created key's plaintext until the page after the redirect shows
# it (and forgets it): Post/Redirect/Get, so a refresh never creates a second key.
NEW_KEY_SESSION = "publishers.new_api_key"


@member_view
def api_keys(request: HttpRequest) -> HttpResponse:
    new_key = request.session.pop(NEW_KEY_SESSION, "")
    response = _page(request, ApiKeyForm(), new_key=new_key)
    if new_key:
        # The only response that carries the plaintext: never cached, never shown again.
        response["Cache-Control"] = "no-store"
    return response


@require_POST
@owner_view
def api_key_create(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _page(request, form)
    _, plaintext = services.api_key_create(
        publisher=request.publisher, name=form.cleaned_data["name"], actor=Actor.dashboard(request)
    )
    request.session[NEW_KEY_SESSION] = plaintext
    return redirect("api_keys")


@require_POST
@owner_view
def api_key_revoke(request: HttpRequest, lookup: str) -> HttpResponse:
    key = selectors.api_key_for_publisher(request.publisher, lookup)
    if services.api_key_revoke(key=key, actor=Actor.dashboard(request)):
        messages.success(request, f"Key {key.name or key.lookup} revoked.")
    return redirect("api_keys")
