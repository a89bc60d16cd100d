"""The page an invitation's link opens: accept (signed in as the invited address, or choosing
a password when the address has no account yet) or decline. Used without a publisher of
one's own, so it is not a `member_view`."""

from django.contrib import messages
from django.contrib.auth import login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from publishers import services
from publishers.audit import Actor
from publishers.forms import InvitationSignupForm
from publishers.models import Invitation


def invitation(request: HttpRequest, token: str) -> HttpResponse:
    found = services.invitation_for_token(token)
    if found is None:
        raise Http404("No such invitation.")
    if not found.is_open():
        return _render(request, found, status=410)
    account = services.invitation_account(found)
    user = request.user if request.user.is_authenticated else None
    form = InvitationSignupForm(email=found.email) if account is None else None
    if request.method == "POST":
        actor = Actor.invitee(request, email=found.email)
        try:
            if request.POST.get("answer") == "decline":
                services.invitation_decline(invitation=found, actor=actor)
                return _render(request, found, declined=True)
            if account is None:
                form = InvitationSignupForm(request.POST, email=found.email)
                if not form.is_valid():
                    return _render(request, found, form=form, status=400)
                membership = services.invitation_accept(
                    invitation=found, password=form.cleaned_data["password1"], actor=actor
                )
                login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
            else:
                services.invitation_accept(invitation=found, user=user, actor=actor)
        except services.TeamError as exc:
            messages.error(request, str(exc))
            return _render(request, found, account=account, form=form, status=400)
        messages.success(request, f"You joined {found.publisher.name}.")
        return redirect("dashboard")
    return _render(request, found, account=account, form=form)


def _render(
    request: HttpRequest,
    found: Invitation,
    *,
    account=None,
    form: InvitationSignupForm | None = None,
    declined: bool = False,
    status: int = 200,
) -> HttpResponse:
    user = request.user if request.user.is_authenticated else None
    response = render(
        request,
        "registration/invitation.html",
        {
            "invitation": found,
            "open": found.is_open() and not declined,
            "declined": declined,
            "has_account": account is not None,
            "signed_in_as_invitee": bool(
                user and account and (user.email or "").lower() == found.email.lower()
            ),
            "form": form,
        },
        status=status,
    )
    # The link's token is a credential: keep it out of caches and Referer headers.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
