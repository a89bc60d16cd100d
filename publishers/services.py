"""Writes for the tenant: API keys, callback templates, the signing secret and the team."""

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from publishers.keys import generate_key
from publishers.models import (
    CallbackTemplate,
    Membership,
    Publisher,
    PublisherAPIKey,
    new_signing_secret,
)


def api_key_create(*, publisher: Publisher, name: str = "") -> tuple[PublisherAPIKey, str]:
    """Create a publisher API key. Returns the row and the plaintext, which is never stored."""
    generated = generate_key(PublisherAPIKey.PREFIX)
    key = PublisherAPIKey.objects.create(
        publisher=publisher, name=name, lookup=generated.lookup, digest=generated.digest
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
) -> CallbackTemplate:
    """Validate and save a callback template (raises ValidationError with per-field messages)."""
    template = CallbackTemplate(
        publisher=publisher,
        url_template=url_template,
        name=name,
        events=events or [],
        statuses=statuses or ["approved"],
        campaign=campaign,
        is_active=is_active,
    )
    template.full_clean()
    template.save()
    return template


def callback_template_update(
    *,
    template: CallbackTemplate,
    url_template: str,
    name: str = "",
    events: list[str] | None = None,
    statuses: list[str] | None = None,
    campaign=None,
    is_active: bool = True,
) -> CallbackTemplate:
    """Validate and save new settings. Postbacks already created keep the URL they froze."""
    template.url_template = url_template
    template.name = name
    template.events = events or []
    template.statuses = statuses or ["approved"]
    template.campaign = campaign
    template.is_active = is_active
    template.full_clean()
    template.save()
    return template


def callback_template_set_active(*, template: CallbackTemplate, active: bool) -> None:
    """Pause (no new postbacks; those already queued still go out) or resume a template."""
    template.is_active = active
    template.save(update_fields=["is_active", "updated_at"])


def api_key_revoke(*, key: PublisherAPIKey, now: datetime | None = None) -> bool:
    """Revoke a key (idempotent). Returns whether this call revoked it."""
    return bool(
        PublisherAPIKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=now or timezone.now()
        )
    )


def publisher_secret_rotate(
    *, publisher: Publisher, overlap: timedelta = timedelta(hours=24), now: datetime | None = None
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
    publisher.refresh_from_db(
        fields=["signing_secret", "previous_signing_secret", "previous_secret_expires_at"]
    )
    return publisher


class TeamError(ValueError):
    """A team change that can't be made; the message is for the form."""


def member_invite(
    *, publisher: Publisher, email: str, role: str = Membership.Role.MEMBER
) -> tuple[Membership, bool]:
    """Add a person to the publisher's team by email. A new person gets an account without a
    password and an email with a link to choose one. Returns (membership, account_created)."""
    email = get_user_model().objects.normalize_email(email.strip())
    user_model = get_user_model()
    with transaction.atomic():
        user = user_model.objects.filter(email__iexact=email).order_by("pk").first()
        created = user is None
        if created:
            user = user_model.objects.create_user(username=email, email=email, password=None)
        membership, added = Membership.objects.get_or_create(
            publisher=publisher, user=user, defaults={"role": role}
        )
        if not added:
            raise TeamError(f"{email} is already on the team.")
    if created:
        _send_set_password_email(user, publisher)
    return membership, created


def _send_set_password_email(user, publisher: Publisher) -> None:
    from django.contrib.auth.tokens import default_token_generator
    from django.core.mail import send_mail
    from django.template.loader import render_to_string
    from django.urls import reverse
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    path = reverse(
        "password_reset_confirm",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
        },
    )
    context = {"publisher": publisher, "user": user, "url": f"{settings.SITE_URL}{path}"}
    send_mail(
        subject=f"You've been invited to {publisher.name} on Roundtrip",
        message=render_to_string("registration/invitation_email.txt", context),
        from_email=None,
        recipient_list=[user.email],
    )


def member_remove(*, publisher: Publisher, membership: Membership) -> None:
    """Take someone off the team; the last owner can't be removed."""
    with transaction.atomic():
        owners = list(
            Membership.objects.select_for_update()
            .filter(publisher=publisher, role=Membership.Role.OWNER)
            .values_list("pk", flat=True)
        )
        if membership.role == Membership.Role.OWNER and owners == [membership.pk]:
            raise TeamError("The last owner can't be removed.")
        membership.delete()


def callback_template_delete(*, template: CallbackTemplate) -> None:
    """Delete a template. Its postbacks stay (their template becomes null): those queued are
    still delivered with the URL they froze, and the delivery log keeps them."""
    template.delete()
