"""Writes for the tenant: API keys, callback templates, the signing secret and the team.

Every change a person (or an API key) makes is recorded in the publisher's audit trail, in the
same transaction: the callers pass `actor` (publishers/audit.py), None meaning the system.
"""

import secrets
from dataclasses import replace
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from postbacks import dispatch, health
from postbacks.models import Postback
from postbacks.services import postbacks_retry
from postbacks.signing import new_webhook_secret
from publishers.audit import Action, Actor, audit_record
from publishers.keys import generate_key, hash_key
from publishers.models import (
    CallbackTemplate,
    Invitation,
    Membership,
    Publisher,
    PublisherAPIKey,
    new_signing_secret,
)
from tracking.models import AdvertiserUser


def api_key_create(
    *, publisher: Publisher, name: str = "", actor: Actor | None = None
) -> tuple[PublisherAPIKey, str]:
    """Create a publisher API key. Returns the row and the plaintext, which is never stored."""
    generated = generate_key(PublisherAPIKey.PREFIX)
    with transaction.atomic():
        key = PublisherAPIKey.objects.create(
            publisher=publisher, name=name, lookup=generated.lookup, digest=generated.digest
        )
        audit_record(
            publisher=publisher,
            actor=actor,
            action=Action.API_KEY_CREATED,
            target=key,
            details={"name": name},
        )
    return key, generated.plaintext


def callback_template_create(
    *,
    publisher: Publisher,
    url_template: str,
    name: str = "",
    events: list[str] | None = None,
    statuses: list[str] | None = None,
    campaign=None,
    is_active: bool = True,
    method: str | None = CallbackTemplate.Method.GET,
    actor: Actor | None = None,
) -> CallbackTemplate:
    """Validate and save a callback template (raises ValidationError with per-field messages).
    `method` POST makes it a JSON webhook, signed with the template's own secret (generated
    here; owners reveal it with `callback_template_secret_reveal`)."""
    template = CallbackTemplate(
        publisher=publisher,
        url_template=url_template,
        method=method or CallbackTemplate.Method.GET,
        name=name,
        events=events or [],
        statuses=statuses or ["approved"],
        campaign=campaign,
        is_active=is_active,
        # Created switched off: paused by the publisher from the start (postbacks are held).
        paused_at=None if is_active else timezone.now(),
        paused_reason="" if is_active else CallbackTemplate.PausedReason.MANUAL,
    )
    template.full_clean()
    with transaction.atomic():
        template.save()
        audit_record(
            publisher=publisher,
            actor=actor,
            action=Action.CALLBACK_CREATED,
            target=template,
            details={"settings": _template_settings(template)},
        )
    return template


# What an edit can change, as the audit trail shows it.
TEMPLATE_SETTINGS = (
    "name",
    "url_template",
    "method",
    "events",
    "statuses",
    "campaign",
    "is_active",
)


def _template_settings(template: CallbackTemplate) -> dict:
    values = {name: getattr(template, name) for name in TEMPLATE_SETTINGS if name != "campaign"}
    values["campaign"] = template.campaign.public_id if template.campaign_id else None
    return values


def callback_template_update(
    *,
    template: CallbackTemplate,
    url_template: str,
    name: str = "",
    events: list[str] | None = None,
    statuses: list[str] | None = None,
    campaign=None,
    is_active: bool = True,
    method: str | None = None,
    actor: Actor | None = None,
) -> CallbackTemplate:
    """Validate and save new settings (`method` None keeps the current one). Postbacks
    already created keep the URL (and JSON body) they froze, so they go out as they were made.
    The audit event lists the fields that changed (from, to); an edit that changes nothing
    records nothing. Switching `is_active` pauses or resumes the template (its postbacks are
    held, or released oldest first)."""
    before = _template_settings(template)
    template.url_template = url_template
    if method is not None:
        template.method = method
    template.name = name
    template.events = events or []
    template.statuses = statuses or ["approved"]
    template.campaign = campaign
    template.full_clean()
    after = {**_template_settings(template), "is_active": is_active}
    changed = {
        name: {"from": before[name], "to": after[name]}
        for name in TEMPLATE_SETTINGS
        if before[name] != after[name]
    }
    with transaction.atomic():
        # The pause state is written by health.endpoint_pause/endpoint_resume alone.
        fields = [name for name in TEMPLATE_SETTINGS if name != "is_active"]
        template.save(update_fields=[*fields, "updated_at"])
        if is_active != template.is_active:
            _pause_switch(template, active=is_active)
        if changed:
            audit_record(
                publisher=template.publisher,
                actor=actor,
                action=Action.CALLBACK_UPDATED,
                target=template,
                details={"changed": changed},
            )
    return template


def _pause_switch(template: CallbackTemplate, *, active: bool) -> int | None:
    """Pause (reason "manual") or resume the template; returns how many postbacks were held or
    released, or None when it already was in that state. Call inside a transaction."""
    locked = CallbackTemplate.objects.select_for_update().get(pk=template.pk)
    if (locked.paused_at is None) == active:
        count = None
    elif active:
        count = health.endpoint_resume(template.pk)
        if count:
            transaction.on_commit(lambda: dispatch.kick(dispatch.Lane.RETRY))
    else:
        health.endpoint_pause([template.pk], reason=CallbackTemplate.PausedReason.MANUAL)
        count = Postback.objects.filter(template=template, status=Postback.Status.PENDING).count()
    template.refresh_from_db(fields=["is_active", "paused_at", "paused_reason"])
    return count


def callback_template_set_active(
    *, template: CallbackTemplate, active: bool, actor: Actor | None = None
) -> bool:
    """Pause a template (its postbacks, and those new conversions create, are held) or resume
    it, whatever paused it (everything it held is sent, oldest first). Returns whether the
    state changed (only a change is recorded)."""
    if active:
        return callback_template_resume_deliveries(template=template, actor=actor) is not None
    with transaction.atomic():
        held = _pause_switch(template, active=False)
        if held is not None:
            audit_record(
                publisher=template.publisher,
                actor=actor,
                action=Action.CALLBACK_PAUSED,
                target=template,
                details={"held": held},
            )
    return held is not None


def callback_template_resume_deliveries(
    *, template: CallbackTemplate, actor: Actor | None = None
) -> int | None:
    """Resume a paused template (by endpoint health or its publisher): it is active again and
    every postback it held is sent, oldest first. Returns how many postbacks were released,
    or None when the template was not paused (two clicks resume once)."""
    with transaction.atomic():
        locked = CallbackTemplate.objects.select_for_update().filter(pk=template.pk).first()
        if locked is None or locked.paused_at is None:
            return None
        paused_at, reason = locked.paused_at, locked.paused_reason
        released = _pause_switch(template, active=True) or 0
        audit_record(
            publisher=template.publisher,
            actor=actor,
            action=Action.CALLBACK_RESUMED
            if reason == CallbackTemplate.PausedReason.MANUAL
            else Action.ENDPOINT_RESUMED,
            target=locked,
            details={
                "paused_at": paused_at.isoformat(),
                "paused_reason": reason,
                "released": released,
            },
        )
    return released


def api_key_revoke(
    *, key: PublisherAPIKey, now: datetime | None = None, actor: Actor | None = None
) -> bool:
    """Revoke a key (idempotent). Returns whether this call revoked it (and recorded it)."""
    with transaction.atomic():
        revoked = PublisherAPIKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=now or timezone.now()
        )
        if revoked:
            audit_record(
                publisher=key.publisher,
                actor=actor,
                action=Action.API_KEY_REVOKED,
                target=key,
                details={"name": key.name},
            )
    return bool(revoked)


def callback_template_secret_reveal(
    *, template: CallbackTemplate, actor: Actor | None = None
) -> str:
    """A callback's webhook secret, for showing it to an owner; every reveal is recorded."""
    audit_record(
        publisher=template.publisher,
        actor=actor,
        action=Action.WEBHOOK_SECRET_REVEALED,
        target=template,
    )
    return template.webhook_secret


def callback_template_secret_rotate(
    *,
    template: CallbackTemplate,
    overlap: timedelta = timedelta(hours=24),
    now: datetime | None = None,
    actor: Actor | None = None,
) -> CallbackTemplate:
    """Issue a new webhook secret for a callback. The old one keeps signing (each webhook
    carries both signatures) until `overlap` has passed, so the publisher can switch without
    a gap; a second rotation within it drops the oldest."""
    now = now or timezone.now()
    fields = ["webhook_secret", "previous_webhook_secret", "previous_webhook_secret_expires_at"]
    with transaction.atomic():
        locked = CallbackTemplate.objects.select_for_update().get(pk=template.pk)
        locked.previous_webhook_secret = locked.webhook_secret
        locked.previous_webhook_secret_expires_at = now + overlap
        locked.webhook_secret = new_webhook_secret()
        locked.save(update_fields=[*fields, "updated_at"])
        audit_record(
            publisher=template.publisher,
            actor=actor,
            action=Action.WEBHOOK_SECRET_ROTATED,
            target=locked,
            details={
                "old_secret_signs_until": locked.previous_webhook_secret_expires_at.isoformat()
            },
        )
    template.refresh_from_db(fields=[*fields, "updated_at"])
    return template


def publisher_secret_reveal(*, publisher: Publisher, actor: Actor | None = None) -> str:
    """The signing secret, for showing it to an owner; every reveal is recorded."""
    audit_record(publisher=publisher, actor=actor, action=Action.SECRET_REVEALED, target=publisher)
    return publisher.signing_secret


def publisher_secret_rotate(
    *,
    publisher: Publisher,
    overlap: timedelta = timedelta(hours=24),
    now: datetime | None = None,
    actor: Actor | None = None,
) -> Publisher:
    """Issue a new signing secret. The old one keeps signing (postbacks carry both
    signatures) until `overlap` has passed, so the publisher can switch without a gap."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = Publisher.objects.select_for_update().get(pk=publisher.pk)
        locked.previous_signing_secret = locked.signing_secret
        locked.previous_secret_expires_at = now + overlap
        locked.signing_secret = new_signing_secret()
        locked.save(
            update_fields=[
                "signing_secret",
                "previous_signing_secret",
                "previous_secret_expires_at",
            ]
        )
        audit_record(
            publisher=locked,
            actor=actor,
            action=Action.SECRET_ROTATED,
            target=locked,
            details={"old_secret_signs_until": locked.previous_secret_expires_at.isoformat()},
        )
    publisher.refresh_from_db(
        fields=["signing_secret", "previous_signing_secret", "previous_secret_expires_at"]
    )
    return publisher


class TeamError(ValueError):
    """A team change that can't be made; the message is for the form."""


def member_invite(
    *,
    publisher: Publisher,
    email: str,
    role: str = Membership.Role.MEMBER,
    actor: Actor | None = None,
    now: datetime | None = None,
) -> Invitation:
    """Invite a person to the publisher's team by e-mail: they join only when they accept the
    link we send (`invitation_accept`). Inviting an address again renews its open invitation
    (a new link, a new expiry). Nothing here depends on whether the address has an account,
    so the inviting team can't tell. Raises TeamError for someone already on the team."""
    now = now or timezone.now()
    email = get_user_model().objects.normalize_email(email.strip())
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        if Membership.objects.filter(publisher=publisher, user__email__iexact=email).exists():
            raise TeamError(f"{email} is already on the team.")
        expires_at = now + timedelta(days=settings.TEAM_INVITATION_DAYS)
        invitation = (
            Invitation.objects.select_for_update()
            .filter(publisher=publisher, email__iexact=email, status=Invitation.Status.PENDING)
            .first()
        )
        if invitation is None:
            invitation = Invitation(publisher=publisher, email=email)
        invitation.role = role
        invitation.digest = hash_key(token)
        invitation.created_at = now
        invitation.expires_at = expires_at
        invitation.invited_by = actor.user if actor and actor.user else None
        invitation.save()
        audit_record(
            publisher=publisher,
            actor=actor,
            action=Action.MEMBER_INVITED,
            target=invitation,
            details={"email": email, "role": role},
        )
        transaction.on_commit(lambda: _send_invitation_email(invitation, token))
    return invitation


def _send_invitation_email(invitation: Invitation, token: str) -> None:
    path = reverse("invitation", kwargs={"token": token})
    context = {
        "invitation": invitation,
        "publisher": invitation.publisher,
        "url": f"{settings.SITE_URL}{path}",
    }
    send_mail(
        subject=f"You've been invited to {invitation.publisher.name} on Roundtrip",
        message=render_to_string("registration/invitation_email.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )


def invitation_for_token(token: str) -> Invitation | None:
    """The invitation a link's token names (answered and expired ones included), else None."""
    if not token or len(token) > 100:
        return None
    return Invitation.objects.select_related("publisher").filter(digest=hash_key(token)).first()


def invitation_account(invitation: Invitation):
    """The account the invitation's address belongs to, or None when it has none yet."""
    return get_user_model().objects.filter(email__iexact=invitation.email).order_by("pk").first()


def _lock_open(invitation: Invitation, now: datetime) -> Invitation:
    locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if locked.status != Invitation.Status.PENDING:
        raise TeamError(f"This invitation was already {locked.status}.")
    if not locked.is_open(now):
        raise TeamError("This invitation has expired: ask the team's owner for a new one.")
    return locked


def invitation_accept(
    *,
    invitation: Invitation,
    user=None,
    password: str = "",
    actor: Actor | None = None,
    now: datetime | None = None,
) -> Membership:
    """Join the team. `user` is the signed-in account, which must own the invited address;
    without one (the address has no account yet) an account is made with `password`, the
    address as its username. Raises TeamError when the invitation is no longer open or is
    for another address."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = _lock_open(invitation, now)
        if user is None:
            if invitation_account(locked) is not None:
                raise TeamError("Sign in to the account of this address to accept.")
            user = get_user_model().objects.create_user(
                username=locked.email, email=locked.email, password=password
            )
        elif (user.email or "").lower() != locked.email.lower():
            raise TeamError("This invitation is for another address.")
        elif AdvertiserUser.objects.filter(user=user).exists():
            # Each account has one area: an advertiser's people join no publisher's team.
            raise TeamError(
                "This account signs in to an advertiser's portal; join with another account."
            )
        membership, _ = Membership.objects.get_or_create(
            publisher=locked.publisher, user=user, defaults={"role": locked.role}
        )
        Invitation.objects.filter(pk=locked.pk).update(
            status=Invitation.Status.ACCEPTED, answered_at=now
        )
        audit_record(
            publisher=locked.publisher,
            actor=replace(actor, user=user) if actor else None,
            action=Action.INVITATION_ACCEPTED,
            target=membership,
            details={"email": locked.email, "role": membership.role},
        )
    return membership


def invitation_decline(
    *, invitation: Invitation, actor: Actor | None = None, now: datetime | None = None
) -> None:
    """Say no: the invitation closes and the team's trail records it."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = _lock_open(invitation, now)
        Invitation.objects.filter(pk=locked.pk).update(
            status=Invitation.Status.DECLINED, answered_at=now
        )
        audit_record(
            publisher=locked.publisher,
            actor=actor,
            action=Action.INVITATION_DECLINED,
            target=locked,
            details={"email": locked.email},
        )


def invitation_revoke(
    *, publisher: Publisher, email: str, actor: Actor | None = None, now: datetime | None = None
) -> bool:
    """Withdraw the team's open invitation to `email`; its link stops working. Returns
    whether there was one."""
    now = now or timezone.now()
    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update()
            .filter(publisher=publisher, email__iexact=email, status=Invitation.Status.PENDING)
            .first()
        )
        if invitation is None:
            return False
        Invitation.objects.filter(pk=invitation.pk).update(
            status=Invitation.Status.REVOKED, answered_at=now
        )
        audit_record(
            publisher=publisher,
            actor=actor,
            action=Action.INVITATION_REVOKED,
            target=invitation,
            details={"email": invitation.email},
        )
    return True


def _lock_owners(publisher: Publisher) -> list[int]:
    # Serialises team changes that could leave the publisher without an owner.
    return list(
        Membership.objects.select_for_update()
        .filter(publisher=publisher, role=Membership.Role.OWNER)
        .values_list("pk", flat=True)
    )


def member_remove(
    *, publisher: Publisher, membership: Membership, actor: Actor | None = None
) -> None:
    """Take someone off the team; the last owner can't be removed."""
    with transaction.atomic():
        owners = _lock_owners(publisher)
        if membership.role == Membership.Role.OWNER and owners == [membership.pk]:
            raise TeamError("The last owner can't be removed.")
        audit_record(
            publisher=publisher,
            actor=actor,
            action=Action.MEMBER_REMOVED,
            target=membership,
            details={"role": membership.role},
        )
        membership.delete()


def member_role_change(
    *, publisher: Publisher, membership: Membership, role: str, actor: Actor | None = None
) -> bool:
    """Make a team member an owner or a member. The last owner can't step down. Returns
    whether the role changed (only a change is recorded)."""
    if role not in Membership.Role.values:
        raise TeamError(f"Unknown role {role}.")
    with transaction.atomic():
        owners = _lock_owners(publisher)
        current = Membership.objects.select_for_update().get(pk=membership.pk, publisher=publisher)
        if current.role == role:
            return False
        if current.role == Membership.Role.OWNER and owners == [current.pk]:
            raise TeamError("The last owner can't stop being an owner.")
        Membership.objects.filter(pk=current.pk).update(role=role)
        audit_record(
            publisher=publisher,
            actor=actor,
            action=Action.MEMBER_ROLE_CHANGED,
            target=current,
            details={"from": current.role, "to": role},
        )
    membership.role = role
    return True


def password_change_record(*, user, actor: Actor | None = None) -> None:
    """Record a password change in the trail of every publisher the person belongs to (a
    password is the key to all of them)."""
    for membership in Membership.objects.filter(user=user).select_related("publisher", "user"):
        audit_record(
            publisher=membership.publisher,
            actor=actor,
            action=Action.PASSWORD_CHANGED,
            target=membership,
        )


def callback_template_delete(*, template: CallbackTemplate, actor: Actor | None = None) -> None:
    """Delete a template. Its postbacks stay (their template becomes null): those queued are
    still delivered with the URL they froze, and the delivery log keeps them; a JSON
    webhook's, though, loses the secret that signs it with the template, and fails
    (`no_secret`) rather than go out unsigned."""
    with transaction.atomic():
        audit_record(
            publisher=template.publisher,
            actor=actor,
            action=Action.CALLBACK_DELETED,
            target=template,
            details={"settings": _template_settings(template)},
        )
        template.delete()


def callback_test_record(
    *, template: CallbackTemplate, result: dict, actor: Actor | None = None
) -> None:
    """Record a test postback (`postbacks.sample.postback_send_test`) and how it went. The
    template may be unsaved (the editor tests what is typed): then only its URL is named."""
    response = result.get("response") or {}
    error = result.get("error") or {}
    request = result.get("request") or {}
    audit_record(
        publisher=template.publisher,
        actor=actor,
        action=Action.CALLBACK_TESTED,
        target=template if template.pk else None,
        details={
            # The URL only: the request's headers carry signatures, not worth keeping.
            "url": request.get("url") or template.url_template,
            "ok": bool(result.get("ok")),
            "status_code": response.get("status_code"),
            "error": error.get("kind"),
        },
    )


# Ids handed to postbacks_retry per call: bounded IN lists and task batches.
REPLAY_CHUNK = 1000


def postbacks_replay(
    *,
    publisher: Publisher,
    postback_ids: list[int],
    scope: str,
    details: dict | None = None,
    actor: Actor | None = None,
) -> int:
    """Retry the publisher's postbacks among `postback_ids` now (dashboard and API replays,
    of one, a selection or a range) and record how many were queued, in one transaction.
    Others' ids are ignored. Returns the count queued; a replay that queued nothing is not
    recorded."""
    queued = 0
    with transaction.atomic():
        for start in range(0, len(postback_ids), REPLAY_CHUNK):
            queued += postbacks_retry(
                postback_ids[start : start + REPLAY_CHUNK], publisher_id=publisher.pk
            )
        if queued:
            audit_record(
                publisher=publisher,
                actor=actor,
                action=Action.POSTBACKS_RETRIED,
                details={
                    "scope": scope,
                    "requested": len(postback_ids),
                    "queued": queued,
                    **(details or {}),
                },
            )
    return queued


def postbacks_replay_range(
    *,
    publisher: Publisher,
    start: datetime,
    end: datetime,
    condition: Q,
    details: dict,
    actor: Actor | None = None,
) -> tuple[int, int]:
    """Retry the publisher's postbacks created in [start, end) that meet `condition` (the
    dashboard's and the API's range replay); returns (matched, queued). At most
    `POSTBACKS_REPLAY_MAX` per call, so one request can't enqueue millions: `matched - queued`
    were left for another call (over the cap, or in flight)."""
    matching = Postback.objects.filter(
        condition, publisher=publisher, created_at__gte=start, created_at__lt=end
    )
    matched = matching.count()
    # Distinct primary keys in a fixed order: no postback is queued twice by one call, and a
    # capped replay takes the oldest first.
    ids = list(
        matching.order_by("pk").values_list("pk", flat=True)[: settings.POSTBACKS_REPLAY_MAX]
    )
    queued = postbacks_replay(
        publisher=publisher,
        postback_ids=ids,
        scope="range",
        details={**details, "matched": matched},
        actor=actor,
    )
    return matched, queued


def staff_view_record(*, publisher: Publisher, actor: Actor) -> None:
    """A staff user starts viewing the publisher's dashboard (read-only): the publisher's team
    sees it in Activity."""
    audit_record(publisher=publisher, actor=actor, action=Action.STAFF_VIEWED, target=publisher)
