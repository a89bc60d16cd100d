"""Advertisers, campaigns and links, and what happens on them: clicks and conversions."""

import ipaddress
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from postbacks.placeholders import LANDING_PLACEHOLDERS, TemplateError, validate_template
from publishers.ids import new_click_id, new_conversion_id, new_public_id
from publishers.models import APIKeyBase, Membership, Publisher
from tracking import clickinput
from tracking.statuses import ConversionStatus

currency_validator = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code, e.g. USD.")
country_list_validator = RegexValidator(
    r"^\s*([A-Za-z]{2}(\s*,\s*[A-Za-z]{2})*)?\s*,?\s*$",
    "Use two-letter ISO 3166 country codes separated by commas, e.g. US, DE, FR.",
)


def validate_time_zone(value: str) -> None:
    """An IANA time zone name ("Europe/Berlin", "UTC")."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"{value!r} is not an IANA time zone, e.g. Europe/Berlin.") from exc


def normalize_country_list(value: str) -> str:
    """ "us, de ,fr" → "DE,FR,US": the stored form of a country list (sorted, no duplicates)."""
    return ",".join(sorted({code.strip().upper() for code in value.split(",") if code.strip()}))


def normalize_keywords(value: str) -> str:
    """ "Cheap  Flights, hotels," → "cheap flights,hotels": the stored form of a keyword list."""
    seen: dict[str, None] = {}
    for phrase in value.split(","):
        phrase = " ".join(phrase.casefold().split())
        if phrase:
            seen.setdefault(phrase, None)
    return ",".join(seen)


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

    class Access(models.TextChoices):
        """Who may run the offer (tracking/access.py; what a publisher sees of it:
        tracking/selectors/visible.py)."""

        PUBLIC = "public", "Public: every publisher may run it"
        APPROVAL = "approval", "Approval required: publishers ask, staff approve"
        PRIVATE = "private", "Private: only publishers staff grant access to"

    class CapPolicy(models.TextChoices):
        REJECT = "reject", "Reject: refuse conversions over a cap (answered 422 cap_reached)"
        ACCEPT_UNPAID = "accept_unpaid", "Accept unpaid: record them with payout 0"

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
    min_seconds_to_convert = models.PositiveIntegerField(
        default=0,
        help_text="Conversions arriving sooner than this after their click are rejected "
        "(reason: too fast). 0 turns the guard off.",
    )
    allowed_countries = models.CharField(
        max_length=1000,
        blank=True,
        validators=[country_list_validator],
        help_text="Smart ads show this campaign only to visitors from these countries "
        "(ISO codes, comma-separated). Empty: every country.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    access = models.CharField(
        max_length=16,
        choices=Access.choices,
        default=Access.PUBLIC,
        help_text="Public: any publisher's link works. Approval required: publishers see the "
        "offer and request access. Private: only publishers granted access see it. Clicks on "
        "a link whose publisher may not run the offer are refused (offer_not_approved).",
    )
    # Caps count days and months in this zone (tracking/caps.py).
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="IANA time zone in which daily and monthly caps start, e.g. Europe/Berlin.",
    )
    cap_policy = models.CharField(
        max_length=16,
        choices=CapPolicy.choices,
        default=CapPolicy.REJECT,
        help_text="What happens to a conversion over one of the campaign's caps.",
    )
    # Whether the campaign may have payout terms / caps, kept by their save() (True when in
    # doubt): read with the click's campaign, they spare a conversion of a campaign without any
    # the two lookups (the intake's insert otherwise costs no read).
    has_payout_terms = models.BooleanField(default=False, editable=False)
    has_caps = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(access__in=["public", "approval", "private"]),
                name="tracking_campaign_access_valid",
            ),
            models.CheckConstraint(
                condition=Q(attribution_window__gt=timedelta(0)),
                name="tracking_campaign_window_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.allowed_countries = normalize_country_list(self.allowed_countries)
        if self.pk is not None:
            # Never write back a stale copy of the flags (a term or cap added since this
            # object was read): they say what the tables hold.
            self.has_payout_terms = PayoutTerm.objects.filter(campaign_id=self.pk).exists()
            self.has_caps = ConversionCap.objects.filter(campaign_id=self.pk).exists()
        super().save(*args, **kwargs)

    def clean(self) -> None:
        try:
            validate_template(self.landing_url, LANDING_PLACEHOLDERS)
        except TemplateError as exc:
            raise ValidationError({"landing_url": str(exc)}) from None

    def allows_country(self, country: str) -> bool:
        """Whether smart ads may show this campaign to a visitor from `country` ("" = unknown:
        only unrestricted campaigns)."""
        return not self.allowed_countries or country in self.allowed_countries.split(",")


class Creative(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="creatives")
    name = models.CharField(max_length=200)
    headline = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True)
    keywords = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Comma-separated words or phrases; a smart ad prefers creatives whose "
        "keywords occur in the visitor's query (q=).",
    )
    weight = models.PositiveSmallIntegerField(
        default=100,
        validators=[MinValueValidator(1)],
        help_text="Relative share among creatives that match equally well.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(weight__gte=1), name="tracking_creative_weight_min"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.keywords = normalize_keywords(self.keywords)
        super().save(*args, **kwargs)


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
    # Unique with created_at (constraint below), not alone: on PostgreSQL the table is
    # partitioned by created_at, and a partitioned table's unique keys must contain it. Ids are
    # 80 random bits plus the millisecond, so they are unique in practice all the same.
    click_id = models.CharField(max_length=32, default=new_click_id, editable=False)
    link = models.ForeignKey(TrackingLink, on_delete=models.PROTECT, related_name="clicks")
    # Denormalised from the link so reports and tenant filters need no join.
    publisher = models.ForeignKey(Publisher, on_delete=models.PROTECT, related_name="clicks")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="clicks")
    creative = models.ForeignKey(
        Creative, on_delete=models.SET_NULL, null=True, blank=True, related_name="clicks"
    )
    spid = models.CharField(max_length=clickinput.SPID_MAX_LENGTH, blank=True)
    placement = models.CharField(max_length=clickinput.PLACEMENT_MAX_LENGTH, blank=True)
    smart_ad_id = models.CharField(max_length=clickinput.SMART_AD_ID_MAX_LENGTH, blank=True)
    keyword = models.CharField(max_length=clickinput.KEYWORD_MAX_LENGTH, blank=True)
    country = models.CharField(max_length=2, blank=True)
    device = models.CharField(max_length=16, blank=True)
    os = models.CharField(max_length=50, blank=True)
    browser = models.CharField(max_length=50, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=clickinput.USER_AGENT_MAX_LENGTH, blank=True)
    referer = models.CharField(max_length=clickinput.REFERER_MAX_LENGTH, blank=True)
    # Fields the edge had to clean to store them (tracking/clickinput.py), comma-separated:
    # "placement,user_agent". Empty for a click stored exactly as it came.
    cleaned_fields = models.CharField(max_length=64, blank=True, default="")
    # Known bot or empty user agent (tracking/intelligence.py). Recorded, never refused.
    is_bot = models.BooleanField(default=False)
    # First click of this IP + user agent on this link within CLICKS_UNIQUE_WINDOW_SECONDS.
    is_unique = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Conversion intake finds a click by click_id (this index's leading column); a
            # buffered click flushed twice is one row (ON CONFLICT DO NOTHING).
            models.UniqueConstraint(
                fields=["click_id", "created_at"], name="tracking_click_unique_click_id"
            ),
        ]
        indexes = [
            # Dashboard reports and the click log: one publisher's clicks by time.
            models.Index(fields=["publisher", "created_at"], name="tracking_click_pub_time_idx"),
            # Spid trace: a publisher looks up every click carrying one spid.
            models.Index(fields=["publisher", "spid"], name="tracking_click_pub_spid_idx"),
        ]

    def __str__(self) -> str:
        return self.click_id


class Conversion(models.Model):
    # Defined in tracking/statuses.py: callback templates filter on the same list.
    Status = ConversionStatus

    class Reason(models.TextChoices):
        TOO_FAST = "too_fast", "Too fast: converted sooner than the campaign's minimum time"
        BOT_CLICK = "bot_click", "Bot click: held as pending for review"
        # The campaign's bot policy (CampaignPolicy.bot_action, tracking/policy.py).
        BOT_FLAGGED = "bot_flagged", "Bot click: flagged, status as the advertiser sent it"
        BOT_REJECTED = "bot_rejected", "Bot click: rejected by the campaign's bot policy"
        CAP_REACHED = (
            "cap_reached",
            "Cap reached: over a conversion cap or payout budget of the campaign",
        )

    public_id = models.CharField(
        max_length=40, unique=True, default=new_conversion_id, editable=False
    )
    # No database foreign key: clicks are partitioned by time (tracking/partitions.py), and
    # PostgreSQL can't detach a partition that a foreign key points into. A constraint trigger
    # (migration 0005) refuses to delete a click that has conversions.
    click = models.ForeignKey(
        Click, on_delete=models.PROTECT, related_name="conversions", db_constraint=False
    )
    publisher = models.ForeignKey(Publisher, on_delete=models.PROTECT, related_name="conversions")
    advertiser = models.ForeignKey(Advertiser, on_delete=models.PROTECT, related_name="conversions")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="conversions")
    event = models.CharField(max_length=50, default="conversion")
    # Empty when the advertiser sent none; then click + event is the idempotency key.
    txn_id = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.APPROVED)
    # Why a guard changed the status the advertiser asked for (empty when none did).
    reason = models.CharField(max_length=32, choices=Reason.choices, blank=True, default="")
    reason_detail = models.CharField(max_length=255, blank=True, default="")
    payout = models.DecimalField(max_digits=20, decimal_places=6)
    revenue = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, validators=[currency_validator])
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Copies of the click's report dimensions, written with the conversion (clicks never
    # change them): conversion aggregates then need no join to the partitioned clicks table,
    # which by click id has to probe every partition. Filled from the click by `save()` when
    # a writer leaves them out; bulk writers must set them.
    click_created_at = models.DateTimeField(null=True, blank=True)
    click_country = models.CharField(max_length=2, blank=True, default="")
    click_placement = models.CharField(max_length=100, blank=True, default="")
    click_creative = models.ForeignKey(
        Creative,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    click_smart_ad_id = models.CharField(max_length=32, blank=True, default="")
    click_keyword = models.CharField(max_length=100, blank=True, default="")

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
            # Publisher API polling (`updated_since`, cursor on (updated_at, id)).
            models.Index(
                fields=["publisher", "updated_at", "id"], name="tracking_conv_pub_upd_idx"
            ),
            # Reports by click time (attribution=click) and the click-time half of the rollup.
            models.Index(
                fields=["publisher", "click_created_at"], name="tracking_conv_pub_ctime_idx"
            ),
        ]

    # Conversion field -> the click field it copies.
    CLICK_COPIES = {
        "click_created_at": "created_at",
        "click_country": "country",
        "click_placement": "placement",
        "click_creative_id": "creative_id",
        "click_smart_ad_id": "smart_ad_id",
        "click_keyword": "keyword",
    }

    def __str__(self) -> str:
        return self.public_id

    def save(self, *args, **kwargs) -> None:
        if self.click_created_at is None and self.click_id is not None:
            self.copy_click_dimensions(self.click)
        super().save(*args, **kwargs)

    @classmethod
    def click_dimensions(cls, click: Click) -> dict:
        """The `click_*` fields' values for a conversion of `click`."""
        return {own: getattr(click, of_click) for own, of_click in cls.CLICK_COPIES.items()}

    def copy_click_dimensions(self, click: Click) -> None:
        """Take the click's report dimensions (see the `click_*` fields)."""
        for own, value in self.click_dimensions(click).items():
            setattr(self, own, value)


class ClickRejection(models.Model):
    """Clicks refused (bad spid, …), counted per publisher, day and reason: no row per click."""

    class Reason(models.TextChoices):
        SPID_TOO_LONG = clickinput.SPID_TOO_LONG, "Spid longer than 255 characters"
        SPID_CONTROL_CHARS = clickinput.SPID_CONTROL_CHARS, "Spid with control characters"
        SPID_INVALID_UTF8 = clickinput.SPID_INVALID_UTF8, "Spid that is not valid UTF-8"
        BAD_SIGNATURE = "bad_signature", "Smart-ad link altered (bad signature)"
        # Offer access (tracking/access.py) and the campaign's click rules (tracking/policy.py).
        OFFER_NOT_APPROVED = "offer_not_approved", "Offer not approved for this publisher"
        IP_BLOCKED = "ip_blocked", "Visitor IP on the campaign's block list"
        RATE_CAP_IP = "rate_cap_ip", "Over the campaign's clicks per IP per minute"
        RATE_CAP_SPID = "rate_cap_spid", "Over the campaign's clicks per spid per minute"
        RATE_CAP_CAMPAIGN = "rate_cap_minute", "Over the campaign's clicks per minute"

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


class ConversionRefusal(models.Model):
    """A conversion the intake answered 422 after finding its click (e.g. the click is older
    than the campaign's attribution window): not a conversion, so nothing is paid or sent, but
    recorded so the publisher and the advertiser can see what was not counted and why.

    One row per conversion the advertiser tried (its click, event and transaction id); sending
    the same one again only counts in `attempts`. No foreign key to the click: old clicks are
    what this is about, and retention may drop them (tracking/partitions.py)."""

    class Reason(models.TextChoices):
        EXPIRED = "expired", "Expired: the click is older than the campaign's attribution window"
        CAP_REACHED = (
            "cap_reached",
            "Cap reached: over a conversion cap or payout budget of the campaign",
        )

    publisher = models.ForeignKey(
        Publisher, on_delete=models.CASCADE, related_name="conversion_refusals"
    )
    advertiser = models.ForeignKey(Advertiser, on_delete=models.CASCADE, related_name="+")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    click_id = models.CharField(max_length=32)
    click_created_at = models.DateTimeField()
    spid = models.CharField(max_length=clickinput.SPID_MAX_LENGTH, blank=True)
    event = models.CharField(max_length=50)
    txn_id = models.CharField(max_length=255, blank=True)
    # What the advertiser asked for (null/"" when it sent none: the campaign's default applied).
    payout = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    reason_detail = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    last_refused_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["advertiser", "click_id", "event", "txn_id"],
                name="tracking_conversionrefusal_unique",
            ),
        ]
        indexes = [
            # The dashboard's list and counts: one publisher's refusals by time.
            models.Index(fields=["publisher", "created_at"], name="tracking_convref_pub_time"),
        ]

    def __str__(self) -> str:
        return f"{self.click_id} {self.event}: {self.reason}"


# --- Payout terms and caps ------------------------------------------------------------------


class PayoutTerm(models.Model):
    """What a publisher earns per conversion of a campaign from `effective_from` on: a fixed
    amount, or a share of the conversion's revenue, in the campaign's currency.

    Terms are history: a row is never edited, a newer `effective_from` supersedes it. A
    conversion's payout is decided once, from the term in force when it was recorded
    (tracking/payouts.py), so later terms never rewrite the past."""

    class Kind(models.TextChoices):
        FIXED = "fixed", "Fixed amount per conversion"
        REVSHARE = "revshare", "Revenue share: a percentage of the conversion's revenue"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="payout_terms")
    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # In the campaign's currency (fixed terms only).
    amount = models.DecimalField(
        max_digits=20,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Fixed terms: the payout per conversion, in the campaign's currency.",
    )
    percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Revenue share: the publisher's percentage of the conversion's revenue.",
    )
    effective_from = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Also the lookup index: the latest term of a campaign × publisher at a time.
            models.UniqueConstraint(
                fields=["campaign", "publisher", "effective_from"],
                name="tracking_payoutterm_unique_start",
            ),
            models.CheckConstraint(
                condition=(
                    Q(kind="fixed", amount__gte=0, percent__isnull=True)
                    | Q(kind="revshare", percent__gte=0, percent__lte=100, amount__isnull=True)
                ),
                name="tracking_payoutterm_kind_value",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.publisher} on {self.campaign}: {self.describe()}"

    def save(self, *args, **kwargs) -> None:
        super().save(*args, **kwargs)
        Campaign.objects.filter(pk=self.campaign_id, has_payout_terms=False).update(
            has_payout_terms=True
        )

    def describe(self) -> str:
        if self.kind == self.Kind.FIXED:
            return f"{self.amount.normalize():f} {self.campaign.currency} per conversion"
        return f"{self.percent.normalize():f} % of revenue"

    def clean(self) -> None:
        if self.kind == self.Kind.FIXED:
            if self.amount is None:
                raise ValidationError({"amount": "A fixed term needs an amount."})
            if self.percent is not None:
                raise ValidationError({"percent": "A fixed term has no percentage."})
        elif self.kind == self.Kind.REVSHARE:
            if self.percent is None:
                raise ValidationError({"percent": "A revenue share needs a percentage."})
            if self.amount is not None:
                raise ValidationError({"amount": "A revenue share has no fixed amount."})
        if self._state.adding and self.campaign_id and self.publisher_id and self.effective_from:
            # History is never rewritten: a term may not start before a conversion it would
            # have decided (one recorded by the publisher on the campaign since then).
            decided = Conversion.objects.filter(
                campaign_id=self.campaign_id,
                publisher_id=self.publisher_id,
                created_at__gte=self.effective_from,
            )
            if decided.exists():
                raise ValidationError(
                    {
                        "effective_from": "Conversions were recorded since then under the "
                        "terms in force; a new term can only start after the latest of them."
                    }
                )


class ConversionCap(models.Model):
    """A limit on a campaign's conversions (and/or their payout: a budget) per day, per month
    (in the campaign's time zone) or in total; for the whole campaign (no publisher) or one
    publisher on it. What happens over it is the campaign's `cap_policy` (tracking/caps.py)."""

    class Period(models.TextChoices):
        DAILY = "daily"
        MONTHLY = "monthly"
        TOTAL = "total"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="caps")
    publisher = models.ForeignKey(
        Publisher,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: the cap counts every publisher's conversions on the campaign.",
    )
    period = models.CharField(max_length=8, choices=Period.choices)
    max_conversions = models.PositiveIntegerField(
        null=True, blank=True, help_text="Conversions paid per period; empty: no count limit."
    )
    max_payout = models.DecimalField(
        max_digits=20,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Payout budget per period, in the campaign's currency; empty: no budget.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # One cap per scope and period; the intake reads a campaign's caps by this index.
            models.UniqueConstraint(
                fields=["campaign", "publisher", "period"],
                nulls_distinct=False,
                name="tracking_conversioncap_unique_scope",
            ),
            models.CheckConstraint(
                condition=Q(max_conversions__isnull=False) | Q(max_payout__isnull=False),
                name="tracking_conversioncap_has_limit",
            ),
        ]

    def __str__(self) -> str:
        return self.describe()

    def save(self, *args, **kwargs) -> None:
        super().save(*args, **kwargs)
        Campaign.objects.filter(pk=self.campaign_id, has_caps=False).update(has_caps=True)

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        if not ConversionCap.objects.filter(campaign_id=self.campaign_id).exists():
            Campaign.objects.filter(pk=self.campaign_id).update(has_caps=False)
        return result

    def describe(self) -> str:
        """ "daily cap of 100 conversions for Publisher X (Europe/Berlin)" """
        limits = []
        if self.max_conversions is not None:
            limits.append(f"{self.max_conversions} conversions")
        if self.max_payout is not None:
            limits.append(f"{self.max_payout.normalize():f} {self.campaign.currency} payout")
        scope = f"publisher {self.publisher}" if self.publisher_id else "the whole campaign"
        zone = "" if self.period == self.Period.TOTAL else f", days in {self.campaign.time_zone}"
        return f"{self.period} cap of {' and '.join(limits)} for {scope}{zone}"


class CapCounter(models.Model):
    """What a cap has used in one period: the row the intake locks (SELECT … FOR UPDATE) to
    decide a conversion under the cap, so concurrent conversions can't overshoot it."""

    cap = models.ForeignKey(ConversionCap, on_delete=models.CASCADE, related_name="counters")
    # The period's first day in the campaign's time zone (a fixed date for total caps).
    period_start = models.DateField()
    conversions = models.PositiveIntegerField(default=0)
    payout = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))

    class Meta:
        constraints = [
            # The intake's lookup and the insert-if-missing target.
            models.UniqueConstraint(
                fields=["cap", "period_start"], name="tracking_capcounter_unique_period"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.cap_id} {self.period_start}: {self.conversions}"


class ClickDeadLetter(models.Model):
    """A buffered click the database refused: set aside with its error, never retried on its
    own, so it can't hold up the clicks behind it (tracking/clickbuffer.py). Staff see them in
    the admin and can retry them once the cause is fixed."""

    # The buffer's stream entry id ("1733580000000-0"), or "" for a click set aside by the
    # conversion intake, which reads it by click id.
    entry_id = models.CharField(max_length=32, blank=True)
    click_id = models.CharField(max_length=64, blank=True)
    # Plain integer, no foreign key: the publisher may be what was deleted.
    publisher_id = models.BigIntegerField(null=True, blank=True)
    # The entry as it sat in the buffer (JSON, escaped: it may hold what the database refused).
    payload = models.TextField()
    error_class = models.CharField(max_length=100)
    error = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # One letter per click: the flusher and the intake may both meet the same entry.
            models.UniqueConstraint(
                fields=["click_id"],
                condition=~Q(click_id=""),
                name="tracking_clickdeadletter_unique_click",
            ),
        ]
        indexes = [
            # The admin list and the status page: newest first.
            models.Index(fields=["-created_at"], name="tracking_clickdeadletter_time"),
        ]

    def __str__(self) -> str:
        return f"{self.click_id or self.entry_id}: {self.error_class}"


# --- Reporting rollups ----------------------------------------------------------------------


class HourlyStat(models.Model):
    """Pre-aggregated counts for dashboard reports, so no report scans raw clicks.

    One row per publisher × hour (UTC) × campaign × dimension × value × currency, where
    `dimension` is ""
    (the campaign's totals) or one of DIMENSIONS: a grouping-sets rollup. Rows per hour are
    bounded by the number of distinct values, not by traffic, so the table stays small at any
    click volume (a row per full combination of dimensions would be nearly one row per click).
    Hours let any whole-hour time zone cut days exactly. Rebuilt from raw rows by
    `tracking.rollups` (never incremented in place), so it can always be recomputed.
    """

    TOTAL = ""
    DIMENSIONS = ("country", "placement", "creative", "smart_ad", "keyword")

    # No separate index: the unique constraints below lead with the publisher.
    publisher = models.ForeignKey(
        Publisher, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    hour = models.DateTimeField()
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    dimension = models.CharField(max_length=16, blank=True)
    # The creative's primary key as text for "creative"; "" when the click had no value.
    value = models.CharField(max_length=255, blank=True)
    # Money is never added across currencies: clicks are counted in the rows with currency "",
    # conversions and payouts in one row per currency of the conversions.
    currency = models.CharField(max_length=3, blank=True, default="")
    clicks = models.PositiveBigIntegerField(default=0)
    unique_clicks = models.PositiveBigIntegerField(default=0)
    # Of `clicks`, those flagged as bots (tracking.intelligence).
    bot_clicks = models.PositiveBigIntegerField(default=0)
    # Approved conversions counted in the hour of their click ...
    click_time_conversions = models.PositiveBigIntegerField(default=0)
    click_time_payout = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))
    # ... and in the hour they were recorded.
    conversions = models.PositiveBigIntegerField(default=0)
    payout = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["publisher", "dimension", "hour", "campaign", "value", "currency"],
                name="tracking_hourlystat_unique_key",
            ),
        ]
        # The unique constraint's index also serves every report: one publisher, one
        # dimension, a range of hours.

    def __str__(self) -> str:
        return f"{self.publisher_id} {self.hour:%Y-%m-%d %H}h {self.dimension}={self.value}"


class StatsDirtyHour(models.Model):
    """An hour whose rollup must be recomputed: written in the conversion's transaction (for
    its click's hour and its own), consumed by `tracking.rollups.stats_refresh`."""

    # No separate index: the unique constraints below lead with the publisher.
    publisher = models.ForeignKey(
        Publisher, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["publisher", "hour"], name="tracking_statsdirtyhour_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.publisher_id} {self.hour:%Y-%m-%d %H}h"


class DailyPairStat(models.Model):
    """Clicks per publisher × UTC day × campaign × pair of dimensions × their two values: what
    a report that filters on one dimension and groups by another reads instead of raw clicks.

    `dimension` names the pair in `HourlyStat.DIMENSIONS` order ("country+placement"), `value`
    holds the first one's value and `value2` the second's. Days, not hours: a day's rows are
    bounded by the distinct value pairs, about ten times fewer than per hour, and a report's
    whole UTC days come from here while the hours at its edges (another time zone, the part
    of today not built yet) come from raw clicks (`tracking.selectors`). Clicks only:
    conversions carry copies of their click's dimensions and are read directly.
    PostgreSQL only; maintained by `tracking.rollups.stats_pairs_refresh`.
    """

    publisher = models.ForeignKey(
        Publisher, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    dimension = models.CharField(max_length=32)
    value = models.CharField(max_length=255, blank=True)
    value2 = models.CharField(max_length=255, blank=True)
    clicks = models.PositiveBigIntegerField(default=0)
    unique_clicks = models.PositiveBigIntegerField(default=0)
    bot_clicks = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            # Also the report index: one publisher, one pair, a range of days.
            models.UniqueConstraint(
                fields=["publisher", "dimension", "day", "campaign", "value", "value2"],
                name="tracking_dailypairstat_unique_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.publisher_id} {self.day} {self.dimension}={self.value}/{self.value2}"


class PairStatDay(models.Model):
    """How far a publisher's day is in `DailyPairStat`: its clicks created before
    `built_until` are counted there (the whole day once `built_until` is the next midnight)."""

    publisher = models.ForeignKey(
        Publisher, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    built_until = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["publisher", "day"], name="tracking_pairstatday_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.publisher_id} {self.day} until {self.built_until:%H:%M}"


# --- Smart ads ------------------------------------------------------------------------------


class SmartAd(models.Model):
    """An iframe ad unit (`/smart?ref=…&smart_ad_id=<id>&q=…&spid=…`), managed by staff.

    Its primary key is the public `smart_ad_id` publishers paste into their embed code (the
    brief's `smart_ad_id=1491`). It shows `slots` creatives from the active campaigns of its
    pool, chosen by keyword match, then weight (tracking/smart.py).
    """

    class Template(models.TextChoices):
        TEXT = "text", "Text ads: headline and body"
        HEADLINES = "headlines", "Headlines only"

    name = models.CharField(max_length=200)
    width = models.PositiveSmallIntegerField(
        default=200, validators=[MinValueValidator(50), MaxValueValidator(2000)]
    )
    height = models.PositiveSmallIntegerField(
        default=200, validators=[MinValueValidator(50), MaxValueValidator(2000)]
    )
    slots = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(10)],
        help_text="How many creatives the unit shows at most.",
    )
    template = models.CharField(max_length=16, choices=Template.choices, default=Template.TEXT)
    campaigns = models.ManyToManyField(Campaign, related_name="smart_ads", blank=True)
    fallback_creative = models.ForeignKey(
        Creative,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Shown when a query matches no creative. Without one, the unit picks by "
        "weight among all its creatives.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "smart ad"
        constraints = [
            models.CheckConstraint(
                condition=Q(width__gte=50, width__lte=2000, height__gte=50, height__lte=2000),
                name="tracking_smartad_size_bounds",
            ),
            models.CheckConstraint(
                condition=Q(slots__gte=1, slots__lte=10), name="tracking_smartad_slots_bounds"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pk} · {self.name} ({self.width}×{self.height})"


class SmartAdImpression(models.Model):
    """Impressions per day × publisher × smart ad × creative × country: counters, not a row per
    impression. Redis accumulates them and `tracking.smart.impressions_flush` adds them here in
    batches (directly, one upsert per served unit, when Redis is absent)."""

    publisher = models.ForeignKey(
        Publisher, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    smart_ad = models.ForeignKey(SmartAd, on_delete=models.CASCADE, related_name="impressions")
    creative = models.ForeignKey(Creative, on_delete=models.CASCADE, related_name="impressions")
    country = models.CharField(max_length=2, blank=True)
    impressions = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            # The flush's upsert target; leading with publisher and day, it also serves the
            # reports (one publisher's impressions over a range of days).
            models.UniqueConstraint(
                fields=["publisher", "day", "smart_ad", "creative", "country"],
                name="tracking_smartadimpression_unique_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.publisher_id}/{self.smart_ad_id}/{self.creative_id}: {self.impressions}"


class ImpressionFlush(models.Model):
    """One applied batch of impression counters: its id makes a retried flush a no-op."""

    batch_id = models.CharField(max_length=32, unique=True)
    rows = models.PositiveIntegerField(default=0)
    impressions = models.PositiveBigIntegerField(default=0)
    flushed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.batch_id} ({self.impressions} impressions)"


# --- Offer access and click policy ----------------------------------------------------------

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip_blocks(value: str) -> tuple[IPNetwork, ...]:
    """IP addresses and CIDR blocks, one per line or comma-separated; a bare address is its
    own /32 (or /128). Raises ValueError naming the first entry that is neither.

    >>> parse_ip_blocks("203.0.113.7, 198.51.100.0/24\\n2001:db8::/32")
    (IPv4Network('203.0.113.7/32'), IPv4Network('198.51.100.0/24'), IPv6Network('2001:db8::/32'))
    """
    networks = []
    for entry in value.replace(",", "\n").splitlines():
        entry = entry.strip()
        if not entry:
            continue
        try:
            # strict=False: "198.51.100.7/24" means the block it lies in.
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry[:60]!r} is not an IP address or CIDR block.") from None
    return tuple(networks)


def normalize_ip_blocks(value: str) -> str:
    """The stored form of a block list: one network per line, in the order given, no
    duplicates ("203.0.113.7" → "203.0.113.7/32")."""
    return "\n".join(dict.fromkeys(str(network) for network in parse_ip_blocks(value)))


class OfferAccess(models.Model):
    """A publisher's access to a campaign that is not public: asked for from the dashboard or
    the API (requested), decided by staff in the admin (approved / rejected), or granted by
    staff directly (how a private offer is opened to a publisher). One row per pair: asking
    again after a rejection reopens the same row."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested: waiting for staff"
        APPROVED = "approved"
        REJECTED = "rejected"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="access_grants")
    publisher = models.ForeignKey(
        Publisher, on_delete=models.CASCADE, related_name="offer_access", db_index=False
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    # What the publisher wrote with its request (traffic sources, volumes).
    message = models.CharField(max_length=500, blank=True)
    # Staff's answer, shown to the publisher (why a request was rejected).
    decision_note = models.CharField(max_length=255, blank=True)
    requested_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "offer access"
        verbose_name_plural = "offer access"
        constraints = [
            # Also the publisher's index: every read is one publisher's rows (its offer list,
            # the click check for one campaign).
            models.UniqueConstraint(
                fields=["publisher", "campaign"], name="tracking_offeraccess_unique"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["requested", "approved", "rejected"]),
                name="tracking_offeraccess_status_valid",
            ),
        ]
        indexes = [
            # The admin's queue: open requests, oldest first.
            models.Index(
                fields=["requested_at"],
                condition=Q(status="requested"),
                name="tracking_offeraccess_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.publisher} → {self.campaign}: {self.status}"


class CampaignPolicy(models.Model):
    """A campaign's bot and fraud rules (tracking/policy.py applies them). A campaign without
    one has the defaults: bot clicks' conversions held for review, no block list, no caps.
    The minimum time to convert is `Campaign.min_seconds_to_convert`."""

    class BotAction(models.TextChoices):
        HOLD = "hold", "Hold for review: conversions stay pending until staff decide"
        FLAG = "flag", "Flag but approve: status as the advertiser sent it, marked bot_flagged"
        REJECT = "reject", "Reject: conversions are rejected (bot_rejected)"
        ALLOW = "allow", "Allow: bot clicks convert like any other"

    campaign = models.OneToOneField(
        Campaign, on_delete=models.CASCADE, primary_key=True, related_name="policy"
    )
    bot_action = models.CharField(
        max_length=8,
        choices=BotAction.choices,
        default=BotAction.HOLD,
        help_text="What happens to conversions of clicks flagged as bots (known bot or "
        "automation user agent, or none).",
    )
    blocked_ips = models.TextField(
        blank=True,
        help_text="IP addresses and CIDR blocks (IPv4 or IPv6), one per line or "
        "comma-separated. Their clicks are refused (ip_blocked).",
    )
    max_clicks_per_ip_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Clicks one IP address may make on this campaign per minute; more are "
        "refused (rate_cap_ip). Empty: no cap.",
    )
    max_clicks_per_spid_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Clicks one publisher's spid may make on this campaign per minute "
        "(rate_cap_spid). Empty: no cap.",
    )
    max_clicks_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Clicks the whole campaign takes per minute, every publisher together "
        "(rate_cap_minute). Empty: no cap.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "campaign policy"
        verbose_name_plural = "campaign policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(bot_action__in=["hold", "flag", "reject", "allow"]),
                name="tracking_campaignpolicy_bot_action_valid",
            ),
            models.CheckConstraint(
                condition=(
                    Q(max_clicks_per_ip_per_minute__isnull=True)
                    | Q(max_clicks_per_ip_per_minute__gte=1)
                )
                & (
                    Q(max_clicks_per_spid_per_minute__isnull=True)
                    | Q(max_clicks_per_spid_per_minute__gte=1)
                )
                & (Q(max_clicks_per_minute__isnull=True) | Q(max_clicks_per_minute__gte=1)),
                name="tracking_campaignpolicy_caps_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"Policy of {self.campaign}"

    def save(self, *args, **kwargs) -> None:
        self.blocked_ips = normalize_ip_blocks(self.blocked_ips)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        try:
            parse_ip_blocks(self.blocked_ips)
        except ValueError as exc:
            raise ValidationError({"blocked_ips": str(exc)}) from None


# --- The advertiser portal -------------------------------------------------------------------


class AdvertiserUser(models.Model):
    """A person who signs in to an advertiser's portal (/advertiser/). Staff create them in the
    admin. An account is either on publisher teams or an advertiser user, never both: each
    kind has its own area, and the other's answers 403 (or sends it home)."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner: also manages the keys"
        MEMBER = "member", "Member: reads, sends test conversions"

    advertiser = models.ForeignKey(Advertiser, on_delete=models.CASCADE, related_name="users")
    # One advertiser per account: the portal never has to ask which one.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="advertiser_user"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "advertiser user"

    def __str__(self) -> str:
        return f"{self.user} → {self.advertiser} ({self.role})"

    def clean(self) -> None:
        if self.user_id is None:
            return
        if Membership.objects.filter(user_id=self.user_id).exists():
            raise ValidationError(
                {
                    "user": "This account is on a publisher's team; an advertiser user needs an "
                    "account of its own."
                }
            )
        if self.user.is_staff:
            raise ValidationError(
                {"user": "Staff accounts use the admin; create a separate account."}
            )


def reason_label(value: str) -> str:
    """What a conversion's or a refusal's reason code means, from the models' own choices:
    a reason added to either list reads right everywhere without a change here."""
    labels = {**dict(Conversion.Reason.choices), **dict(ConversionRefusal.Reason.choices)}
    return str(labels.get(value, value))


class IntakeOutcome(models.Model):
    """What the conversion intake answered one request of an advertiser that named one of its
    clicks: accepted, a duplicate of a recorded conversion, a status change, or refused (with
    the refusal's reason). The advertiser portal's conversion log.

    One narrow insert per request, in the transaction of what it describes. Requests that
    never reach a click (bad key, bad body, unknown click) are not logged: they name nothing
    of the advertiser's, and logging them would let anyone write rows."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        # Already recorded (same txn_id, or click + event without one): nothing changed.
        DUPLICATE = "duplicate", "Duplicate"
        # A new status for a recorded conversion.
        STATUS_CHANGED = "status_changed", "Status change"
        REFUSED = "refused", "Refused"

    # No separate index: the index below leads with the advertiser.
    advertiser = models.ForeignKey(
        Advertiser, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    conversion = models.ForeignKey(
        Conversion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    # The conversion's status in the answer ("" for a refusal), and the reason a guard or a
    # refusal gave (a Conversion.Reason or ConversionRefusal.Reason value, "" for none).
    status = models.CharField(max_length=16, blank=True, default="")
    reason = models.CharField(max_length=32, blank=True, default="")
    reason_detail = models.CharField(max_length=255, blank=True, default="")
    click_id = models.CharField(max_length=32)
    event = models.CharField(max_length=50)
    txn_id = models.CharField(max_length=255, blank=True)
    # Sent from the portal's "send a test conversion" (tracking/portal/services.py).
    is_test = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The portal's log: one advertiser's requests, newest first (keyset on
            # created_at, id), optionally one campaign's.
            models.Index(
                fields=["advertiser", "created_at", "id"], name="tracking_intakeout_adv_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.click_id} {self.event}: {self.outcome}"

    @property
    def reason_text(self) -> str:
        return reason_label(self.reason) if self.reason else ""
