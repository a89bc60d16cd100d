"""The tenant: publishers, their people, their API keys and their callback templates."""

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from postbacks.http import DeliveryError, check_destination_allowed
from postbacks.placeholders import CALLBACK_PLACEHOLDERS, TemplateError, validate_template
from publishers.ids import new_public_id


def default_statuses() -> list[str]:
    return ["approved"]


def new_signing_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class Publisher(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    signing_secret = models.CharField(max_length=100, default=new_signing_secret)
    # During a rotation both secrets sign, until previous_secret_expires_at.
    previous_signing_secret = models.CharField(max_length=100, blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="publishers"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def active_signing_secrets(self, now=None) -> list[str]:
        now = now or timezone.now()
        active = [self.signing_secret]
        expires = self.previous_secret_expires_at
        if self.previous_signing_secret and expires and expires > now:
            active.append(self.previous_signing_secret)
        return active


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["publisher", "user"], name="publishers_membership_unique_user"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.publisher} ({self.role})"


class APIKeyBase(models.Model):
    """A hashed API key; see publishers/keys.py for the format."""

    name = models.CharField(max_length=100, blank=True)
    lookup = models.CharField(max_length=12, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class PublisherAPIKey(APIKeyBase):
    PREFIX = "rt_pub"

    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="api_keys")

    class Meta:
        verbose_name = "publisher API key"

    def __str__(self) -> str:
        return f"{self.PREFIX}_{self.lookup}_… ({self.name or 'unnamed'})"


class CallbackTemplate(models.Model):
    """Where and when a publisher wants to hear about conversions."""

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    publisher = models.ForeignKey(
        Publisher, on_delete=models.CASCADE, related_name="callback_templates"
    )
    name = models.CharField(max_length=100, blank=True)
    url_template = models.CharField(max_length=2048)
    # Empty list: every event. Otherwise the event names (lowercase) that fire this template.
    events = models.JSONField(default=list, blank=True)
    # Conversion statuses that fire this template.
    statuses = models.JSONField(default=default_statuses)
    campaign = models.ForeignKey(
        "tracking.Campaign",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="callback_templates",
        help_text="Only this campaign's conversions; empty for all.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    # Endpoint health (postbacks/health.py). Failed attempts in a row and since when; any
    # success clears both. The owners are warned once per failing streak (warned_at).
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    warned_at = models.DateTimeField(null=True, blank=True, editable=False)

    class PausedReason(models.TextChoices):
        FAILING = "failing", "Failing continuously"
        GONE = "gone", "The endpoint answered 410 Gone"

    # A paused template's postbacks are still created but held (not sent) until it is resumed;
    # then they go out oldest first. Set by the system, cleared by `health.endpoint_resume`.
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_reason = models.CharField(
        max_length=16, choices=PausedReason.choices, blank=True, default="", editable=False
    )

    class Meta:
        indexes = [
            # Conversion intake: the publisher's active templates.
            models.Index(
                fields=["publisher"],
                condition=Q(is_active=True),
                name="publishers_cbt_active_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.name or self.url_template[:60]

    def clean(self) -> None:
        try:
            validate_template(self.url_template, CALLBACK_PLACEHOLDERS)
        except TemplateError as exc:
            raise ValidationError({"url_template": str(exc)}) from None
        # The SSRF guard runs again on every delivery; here it gives the publisher a clear error.
        try:
            check_destination_allowed(
                self.url_template, allow_private=settings.POSTBACKS_ALLOW_PRIVATE_DESTINATIONS
            )
        except DeliveryError as exc:
            raise ValidationError({"url_template": exc.message}) from None
        self.events = sorted({str(e).strip().lower() for e in self.events or [] if str(e).strip()})
        from tracking.models import Conversion

        valid = set(Conversion.Status.values)
        bad = [s for s in self.statuses or [] if s not in valid]
        if bad:
            raise ValidationError({"statuses": f"Unknown status {', '.join(bad)}."})

    def matches(self, *, event: str, status: str, campaign_id: int) -> bool:
        return (
            self.is_active
            and status in (self.statuses or ())
            and (not self.events or event in self.events)
            and (self.campaign_id is None or self.campaign_id == campaign_id)
        )
