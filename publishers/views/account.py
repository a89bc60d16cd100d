"""Settings: the signing secret (reveal, rotate with overlap), the team, and the password."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from publishers import selectors, services
from publishers.audit import Actor
from publishers.forms import InviteForm
from publishers.models import Membership
from publishers.views.common import is_owner, member_view, owner_view

ROTATION_OVERLAP_HOURS = 24


def _page(
    request: HttpRequest, *, reveal: bool = False, invite_form: InviteForm | None = None
) -> HttpResponse:
    publisher = request.publisher
    secrets = publisher.active_signing_secrets()
    reveal = reveal and is_owner(request)
    response = render(
        request,
        "publishers/settings.html",
        {
            "nav": "settings",
            "publisher": publisher,
            "reveal": reveal,
            "rotating": len(secrets) > 1,
            "members": selectors.members_for_publisher(publisher),
            "invitations": selectors.invitations_for_publisher(publisher),
            "roles": Membership.Role.choices,
            "invite_form": invite_form or InviteForm(),
            "can_manage": is_owner(request),
            "overlap_hours": ROTATION_OVERLAP_HOURS,
            "invitation_days": settings.TEAM_INVITATION_DAYS,
        },
    )
    if reveal:
        response["Cache-Control"] = "no-store"
    return response


@member_view
def settings_page(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@owner_view
def secret_reveal(request: HttpRequest) -> HttpResponse:
    services.publisher_secret_reveal(publisher=request.publisher, actor=Actor.dashboard(request))
    return _page(request, reveal=True)


@require_POST
@owner_view
def secret_rotate(request: HttpRequest) -> HttpResponse:
    from datetime import timedelta

    services.publisher_secret_rotate(
        publisher=request.publisher,
        overlap=timedelta(hours=ROTATION_OVERLAP_HOURS),
        actor=Actor.dashboard(request),
    )
    messages.success(
        request,
        f"New signing secret issued. The old one keeps signing for {ROTATION_OVERLAP_HOURS} "
        "hours: switch your verifier before then.",
    )
    return _page(request, reveal=True)


@require_POST
@owner_view
def member_invite(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            invitation = services.member_invite(
                publisher=request.publisher,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                actor=Actor.dashboard(request),
            )
        except services.TeamError as exc:
            form.add_error("email", str(exc))
        else:
            # The same words whether the address has an account or not.
            messages.success(
                request,
                f"Invitation sent to {invitation.email}. They join the team when they accept it.",
            )
            return redirect("settings")
    return _page(request, invite_form=form)


@require_POST
@owner_view
def member_invitation_revoke(request: HttpRequest) -> HttpResponse:
    email = request.POST.get("email", "")
    if not services.invitation_revoke(
        publisher=request.publisher, email=email, actor=Actor.dashboard(request)
    ):
        raise Http404("No open invitation to this address.")
    messages.success(request, f"Invitation to {email} withdrawn.")
    return redirect("settings")


@require_POST
@owner_view
def member_remove(request: HttpRequest) -> HttpResponse:
    membership = selectors.member_for_publisher(request.publisher, request.POST.get("username", ""))
    try:
        services.member_remove(
            publisher=request.publisher, membership=membership, actor=Actor.dashboard(request)
        )
    except services.TeamError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{membership.user.username} removed from the team.")
    return redirect("settings")


@require_POST
@owner_view
def member_role(request: HttpRequest) -> HttpResponse:
    membership = selectors.member_for_publisher(request.publisher, request.POST.get("username", ""))
    role = request.POST.get("role", "")
    try:
        changed = services.member_role_change(
            publisher=request.publisher,
            membership=membership,
            role=role,
            actor=Actor.dashboard(request),
        )
    except services.TeamError as exc:
        messages.error(request, str(exc))
    else:
        if changed:
            messages.success(request, f"{membership.user.get_username()} is now {role}.")
    return redirect("settings")


class PasswordResetConfirm(auth_views.PasswordResetConfirmView):
    """Django's "choose a new password" page, recording the change in the activity log of
    each publisher the person belongs to."""

    def form_valid(self, form):
        with transaction.atomic():
            response = super().form_valid(form)
            services.password_change_record(
                user=form.user, actor=Actor.dashboard(self.request, user=form.user)
            )
        return response
