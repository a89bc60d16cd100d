"""Advertisers, campaigns and links, and what happens on them: clicks and conversions."""

from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from postbacks.placeholders import LANDING_PLACEHOLDERS, TemplateError, validate_template
from publishers.ids import new_click_id, new_conversion_id, new_public_id
from publishers.models import APIKeyBase, Publisher

currency_validator = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code, e.g. USD.")


def new_link_code() -> str:
    # Short enough to paste, 60 random bits so links can't be enumerated.
    return new_public_id()[-12:]


class Advertiser(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AdvertiserAPIKey(APIKeyBase):
    """Authenticates conversion intake: a Bearer key for the API, a `token` for GET postbacks."""

    class Kind(models.TextChoices):
        API = "api", "API key (Authorization: Bearer)"
        POSTBACK_TOKEN = "token", "GET postback token (?token=)"

    PREFIXES = {Kind.API: "rt_adv", Kind.POSTBACK_TOKEN: "rt_tok"}

    advertiser = models.ForeignKey(Advertiser, on_delete=models.CASCADE, related_name="api_keys")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.API)

    class Meta:
        verbose_name = "advertiser API key"

    def __str__(self) -> str:
        return f"{self.PREFIXES[self.kind]}_{self.lookup}_… ({self.name or self.advertiser})"


class Campaign(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    advertiser = models.ForeignKey(Advertiser, on_delete=models.PROTECT, related_name="campaigns")
    name = models.CharField(max_length=200)
    landing_url = models.CharField(
        max_length=2048,
        help_text="Where clicks go; [click_id] (and [spid], [placement], …) are filled in.",
    )
    default_payout = models.DecimalField(
        max_digits=20, decimal_places=6, default=Decimal(0), validators=[MinValueValidator(0)]
    )
    default_revenue = models.DecimalField(
        max_digits=20,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    currency = models.CharField(max_length=3, default="USD", validators=[currency_validator])
    attribution_window = models.DurationField(default=timedelta(days=30))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(attribution_window__gt=timedelta(0)),
                name="tracking_campaign_window_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            validate_template(self.landing_url, LANDING_PLACEHOLDERS)
        except TemplateError as exc:
            raise ValidationError({"landing_url": str(exc)}) from None


class Creative(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="creatives")
    name = models.CharField(max_length=200)
    headline = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class TrackingLink(models.Model):
    """A publisher's link to a campaign: `/click?ref=<code>&spid=…`."""

    code = models.CharField(max_length=32, unique=True, default=new_link_code)
    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="links")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="links")
    name = models.CharField(max_length=200, blank=True)
    default_placement = models.CharField(max_length=100, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name or self.code


class Click(models.Model):
    click_id = models.CharField(max_length=32, unique=True, default=new_click_id, editable=False)
    link = models.ForeignKey(TrackingLink, on_delete=models.PROTECT, related_name="clicks")
    # Denormalised from the link so reports and tenant filters need no join.
    publisher = models.ForeignKey(Publisher, on_delete=models.PROTECT, related_name="clicks")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="clicks")
    creative = models.ForeignKey(
        Creative, on_delete=models.SET_NULL, null=True, blank=True, related_name="clicks"
    )
    spid = models.CharField(max_length=255, blank=True)
    placement = models.CharField(max_length=100, blank=True)
    smart_ad_id = models.CharField(max_length=32, blank=True)
    keyword = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=2, blank=True)
    device = models.CharField(max_length=16, blank=True)
    os = models.CharField(max_length=50, blank=True)
    browser = models.CharField(max_length=50, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    referer = models.CharField(max_length=1024, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # Dashboard reports and the click log: one publisher's clicks by time.
            models.Index(fields=["publisher", "created_at"], name="tracking_click_pub_time_idx"),
            # Spid trace: a publisher looks up every click carrying one spid.
            models.Index(fields=["publisher", "spid"], name="tracking_click_pub_spid_idx"),
        ]

    def __str__(self) -> str:
        return self.click_id


class Conversion(models.Model):
    class Status(models.TextChoices):
        APPROVED = "approved"
        PENDING = "pending"
        REJECTED = "rejected"

    public_id = models.CharField(
        max_length=40, unique=True, default=new_conversion_id, editable=False
    )
    click = models.ForeignKey(Click, on_delete=models.PROTECT, related_name="conversions")
    publisher = models.ForeignKey(Publisher, on_delete=models.PROTECT, related_name="conversions")
    advertiser = models.ForeignKey(Advertiser, on_delete=models.PROTECT, related_name="conversions")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="conversions")
    event = models.CharField(max_length=50, default="conversion")
    # Empty when the advertiser sent none; then click + event is the idempotency key.
    txn_id = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.APPROVED)
    payout = models.DecimalField(max_digits=20, decimal_places=6)
    revenue = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, validators=[currency_validator])
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Idempotent intake: an advertiser's transaction id is recorded once.
            models.UniqueConstraint(
                fields=["advertiser", "txn_id"],
                condition=~Q(txn_id=""),
                name="tracking_conversion_unique_txn",
            ),
            # Without a transaction id, a click converts once per event name.
            models.UniqueConstraint(
                fields=["click", "event"],
                condition=Q(txn_id=""),
                name="tracking_conversion_unique_click_event",
            ),
            models.CheckConstraint(
                condition=Q(payout__gte=0), name="tracking_conversion_payout_nonnegative"
            ),
        ]
        indexes = [
            # Conversion log and reports: one publisher's conversions by time.
            models.Index(fields=["publisher", "created_at"], name="tracking_conv_pub_time_idx"),
        ]

    def __str__(self) -> str:
        return self.public_id


class ClickRejection(models.Model):
    """Clicks refused (bad spid, …), counted per publisher, day and reason: no row per click."""

    class Reason(models.TextChoices):
        SPID_TOO_LONG = "spid_too_long"
        SPID_CONTROL_CHARS = "spid_control_chars"

    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="rejections")
    day = models.DateField()
    reason = models.CharField(max_length=32, choices=Reason.choices)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["publisher", "day", "reason"], name="tracking_clickrejection_unique_day"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.publisher} {self.day} {self.reason}: {self.count}"
