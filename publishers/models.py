"""The tenant: publishers, their people, their API keys and their callback templates."""

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from postbacks.http import DeliveryError, check_destination_allowed
from postbacks.placeholders import CALLBACK_PLACEHOLDERS, TemplateError, validate_template
from postbacks.signing import new_webhook_secret
from publishers.ids import new_public_id
from tracking.statuses import ConversionStatus


def default_statuses() -> list[str]:
    return ["approved"]


def new_signing_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class Publisher(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        # Signed up (publishers/signup.py) and waiting for staff, or turned down: neither may
        # use the dashboard, the API or tracking links until staff approve.
        PENDING = "pending", "Pending approval"
        REJECTED = "rejected"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    signing_secret = models.CharField(max_length=100, default=new_signing_secret)
    # During a rotation both secrets sign, until previous_secret_expires_at.
    previous_signing_secret = models.CharField(max_length=100, blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # [revenue] tells a publisher the network's margin: filled in its callbacks only when the
    # network chose to share it (postbacks.values.hidden_values).
    share_revenue = models.BooleanField(
        default=False,
        help_text="Fill [revenue] in this publisher's callbacks with the advertiser's revenue "
        "(it shows the network's margin). Off: [revenue] is always empty.",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="publishers"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Bumped by a database trigger whenever one of the publisher's callback templates is
    # created, deleted, or changed in what a conversion reads of it (migration
    # 0012_callbacks_version): the intake's per-process template cache is keyed by it, and the
    # click lookup reads it with the click, so a change reaches every process at once. Another
    # trigger keeps it from going back (a stale `save()` of the whole publisher).
    callbacks_version = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def awaiting_approval(self) -> bool:
        """Signed up and not (or not yet) approved: the dashboard shows only its status."""
        return self.status in (self.Status.PENDING, self.Status.REJECTED)

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


class Invitation(models.Model):
    """An owner's invitation to join a publisher's team, answered by the invited person through
    the link we e-mail them. Nobody joins a team without accepting: an address that already
    has an account is never added behind its owner's back, and the inviting team learns
    nothing about the address (the answer, the e-mail and the team page are the same whether
    an account exists or not). Only the SHA-256 digest of the link's token is stored."""

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        DECLINED = "declined"
        REVOKED = "revoked"

    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Membership.Role.choices)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One open invitation per address and team: inviting again renews it.
            models.UniqueConstraint(
                Lower("email"),
                "publisher",
                condition=Q(status="pending"),
                name="publishers_invitation_one_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} → {self.publisher} ({self.status})"

    def is_open(self, now=None) -> bool:
        """Pending and not yet expired: the only state in which it can be answered."""
        return self.status == self.Status.PENDING and self.expires_at > (now or timezone.now())


class SignupApplication(models.Model):
    """What a publisher told us when signing up (publishers/signup.py), and staff's decision.

    Created when the applicant verifies their e-mail address, with the account, the pending
    publisher and its owner membership. `status` is the decision as staff made it and stays
    put; the publisher's own status is the live state (an approved publisher may be paused
    later)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    publisher = models.OneToOneField(
        Publisher, on_delete=models.CASCADE, related_name="signup_application"
    )
    email = models.EmailField()
    website = models.URLField(max_length=300)
    about = models.TextField(
        "how they will promote", max_length=1000, blank=True, help_text="In the applicant's words."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField("verified at", default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    reason = models.TextField(
        max_length=1000,
        blank=True,
        help_text="Sent to the applicant with a rejection (optional). Write it, save, then "
        "use the Reject action.",
    )

    class Meta:
        constraints = [
            # One application waiting per address (the account check makes it the only one;
            # this holds it against two verification links opened at once).
            models.UniqueConstraint(
                Lower("email"),
                condition=Q(status="pending"),
                name="publishers_signupapplication_one_pending",
            ),
        ]
        indexes = [
            # The admin's queue: applications by status, oldest first.
            models.Index(fields=["status", "created_at"], name="publishers_signup_queue_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.publisher.name} ({self.email}, {self.status})"


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
    """Where and when a publisher wants to hear about conversions, and how: a signed GET to
    the expanded URL, or a JSON webhook POSTed to it (signed as Standard Webhooks says, with
    the template's own secret)."""

    class Method(models.TextChoices):
        GET = "GET", "GET (values in the URL)"
        POST = "POST", "POST a signed JSON webhook"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    publisher = models.ForeignKey(
        Publisher, on_delete=models.CASCADE, related_name="callback_templates"
    )
    name = models.CharField(max_length=100, blank=True)
    url_template = models.CharField(max_length=2048)
    method = models.CharField(max_length=4, choices=Method.choices, default=Method.GET)
    # Signs this template's JSON webhooks (postbacks.signing.webhook_sign); shown to owners on
    # demand like the publisher's signing secret. During a rotation both sign, until
    # previous_webhook_secret_expires_at.
    webhook_secret = models.CharField(max_length=100, default=new_webhook_secret, editable=False)
    previous_webhook_secret = models.CharField(
        max_length=100, blank=True, default="", editable=False
    )
    previous_webhook_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
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
    # False exactly while the template is paused (`paused_at` set, for any reason): kept as
    # the publisher-facing switch of the form, the API and the admin list.
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
        MANUAL = "manual", "Paused by the publisher"

    # A paused template's postbacks are still created but held (not sent) until it is resumed;
    # then they go out oldest first. Set by `health.endpoint_pause` (endpoint health, or the
    # publisher's pause switch), cleared by `health.endpoint_resume`.
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_reason = models.CharField(
        max_length=16, choices=PausedReason.choices, blank=True, default="", editable=False
    )

    class Meta:
        constraints = [
            # One pause state: the switch and the pause never disagree.
            models.CheckConstraint(
                condition=Q(is_active=True, paused_at__isnull=True)
                | Q(is_active=False, paused_at__isnull=False),
                name="publishers_callbacktemplate_active_unless_paused",
            ),
            models.CheckConstraint(
                condition=Q(method__in=["GET", "POST"]),
                name="publishers_callbacktemplate_method_known",
            ),
        ]

    def __str__(self) -> str:
        return self.name or self.url_template[:60]

    def active_webhook_secrets(self, now=None) -> list[str]:
        """The secrets that sign this template's JSON webhooks now (two while rotating)."""
        now = now or timezone.now()
        active = [self.webhook_secret]
        expires = self.previous_webhook_secret_expires_at
        if self.previous_webhook_secret and expires and expires > now:
            active.append(self.previous_webhook_secret)
        return active

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
        valid = set(ConversionStatus.values)
        bad = [s for s in self.statuses or [] if s not in valid]
        if bad:
            raise ValidationError({"statuses": f"Unknown status {', '.join(bad)}."})

    def matches(self, *, event: str, status: str, campaign_id: int) -> bool:
        """Whether a conversion fires this template; a paused one matches too (its postbacks
        are held until it is resumed)."""
        return (
            status in (self.statuses or ())
            and (not self.events or event in self.events)
            and (self.campaign_id is None or self.campaign_id == campaign_id)
        )


class AuditEvent(models.Model):
    """One thing someone did to a publisher's account: the activity log its team reads and our
    staff consult. Written by `publishers.audit.audit_record` in the transaction of the change
    it describes, never changed afterwards. `details` never holds a secret (no key plaintext,
    no signing secret)."""

    class Action(models.TextChoices):
        API_KEY_CREATED = "api_key.created", "API key created"
        API_KEY_REVOKED = "api_key.revoked", "API key revoked"
        SECRET_REVEALED = "secret.revealed", "Signing secret revealed"
        SECRET_ROTATED = "secret.rotated", "Signing secret rotated"
        WEBHOOK_SECRET_REVEALED = "callback.secret_revealed", "Webhook secret revealed"
        WEBHOOK_SECRET_ROTATED = "callback.secret_rotated", "Webhook secret rotated"
        CALLBACK_CREATED = "callback.created", "Callback created"
        CALLBACK_UPDATED = "callback.updated", "Callback edited"
        CALLBACK_PAUSED = "callback.paused", "Callback paused"
        CALLBACK_RESUMED = "callback.resumed", "Callback resumed"
        CALLBACK_DELETED = "callback.deleted", "Callback deleted"
        CALLBACK_TESTED = "callback.tested", "Test postback sent"
        ENDPOINT_PAUSED = "callback.endpoint_paused", "Deliveries paused (endpoint health)"
        ENDPOINT_RESUMED = "callback.endpoint_resumed", "Deliveries resumed"
        POSTBACKS_RETRIED = "postbacks.retried", "Postbacks retried"
        MEMBER_INVITED = "member.invited", "Team member invited"
        INVITATION_ACCEPTED = "member.joined", "Invitation accepted"
        INVITATION_DECLINED = "member.declined", "Invitation declined"
        INVITATION_REVOKED = "member.invitation_revoked", "Invitation withdrawn"
        MEMBER_REMOVED = "member.removed", "Team member removed"
        MEMBER_ROLE_CHANGED = "member.role_changed", "Team member's role changed"
        PASSWORD_CHANGED = "account.password_changed", "Password changed"
        OFFER_ACCESS_REQUESTED = "offer.access_requested", "Offer access requested"
        OFFER_ACCESS_DECIDED = "offer.access_decided", "Offer access decided by Roundtrip staff"
        LINK_CREATED = "link.created", "Tracking link created"
        STAFF_EDITED = "staff.edited", "Edited by Roundtrip staff"
        STAFF_VIEWED = "staff.viewed", "Dashboard viewed by Roundtrip staff (read-only)"
        SIGNED_UP = "publisher.signed_up", "Signed up (waiting for approval)"
        SIGNUP_APPROVED = "publisher.approved", "Sign-up approved"
        SIGNUP_REJECTED = "publisher.rejected", "Sign-up rejected"

    class Via(models.TextChoices):
        DASHBOARD = "dashboard"
        API = "api", "API"
        ADMIN = "admin", "Roundtrip staff"
        SYSTEM = "system", "Roundtrip"

    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="audit_events")
    action = models.CharField(max_length=40, choices=Action.choices)
    via = models.CharField(max_length=16, choices=Via.choices)
    # Who: a person (kept by name when their account is deleted), or an API key, or neither
    # (the system, e.g. endpoint health pausing a callback).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    api_key_label = models.CharField(max_length=150, blank=True)
    # What: "callback", "api_key", "member", "postback", "publisher"; its public id (lookup,
    # username) and how it read at the time.
    target_type = models.CharField(max_length=20, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The Activity page: one publisher's events, newest first (keyset on created_at, id).
            models.Index(fields=["publisher", "created_at", "id"], name="publishers_audit_log_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.who} at {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def who(self) -> str:
        """The actor as the Activity page names it."""
        if self.via == self.Via.API:
            return f"API key {self.api_key_label}"
        if self.via == self.Via.SYSTEM:
            return "Roundtrip (automatic)"
        name = self.actor.get_username() if self.actor else self.actor_name
        if self.via == self.Via.ADMIN:
            return f"Roundtrip staff ({name})" if name else "Roundtrip staff"
        return name or "deleted user"
