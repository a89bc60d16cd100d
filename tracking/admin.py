from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from postbacks.models import Postback
from postbacks.values import format_amount
from publishers.admin import APIKeyAdmin, StaffAuditedAdmin
from publishers.audit import Actor
from tracking import access, caps, clickbuffer
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    AdvertiserUser,
    Campaign,
    CampaignPolicy,
    CapCounter,
    Click,
    ClickDeadLetter,
    ClickRejection,
    Conversion,
    ConversionCap,
    ConversionRefusal,
    Creative,
    ImpressionFlush,
    IntakeOutcome,
    OfferAccess,
    PayoutTerm,
    SmartAd,
    SmartAdImpression,
    TrackingLink,
)
from tracking.selectors.visible import campaign_runnable
from tracking.services import advertiser_key_create, conversions_review


class AdvertiserUserInline(admin.TabularInline):
    """The people who sign in to this advertiser's portal (/advertiser/). Create the account
    under Users first (not on a publisher team, not staff), then add it here."""

    model = AdvertiserUser
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Advertiser)
class AdvertiserAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [AdvertiserUserInline]


@admin.register(AdvertiserUser)
class AdvertiserUserAdmin(admin.ModelAdmin):
    list_display = ["user", "advertiser", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "advertiser__name"]
    autocomplete_fields = ["user", "advertiser"]
    list_select_related = ["user", "advertiser"]
    readonly_fields = ["created_at"]


@admin.register(IntakeOutcome)
class IntakeOutcomeAdmin(admin.ModelAdmin):
    """What the intake answered each advertiser request (the portal's log): read-only."""

    list_display = [
        "created_at",
        "advertiser",
        "campaign",
        "outcome",
        "status",
        "reason",
        "click_id",
        "event",
        "txn_id",
        "is_test",
    ]
    list_filter = ["outcome", "is_test"]
    search_fields = ["=click_id", "=txn_id", "advertiser__name"]
    raw_id_fields = ["conversion"]
    list_select_related = ["advertiser", "campaign"]
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in IntakeOutcome._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(AdvertiserAPIKey)
class AdvertiserAPIKeyAdmin(APIKeyAdmin):
    list_display = ["__str__", "advertiser", "kind", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["kind", "revoked_at"]
    search_fields = ["name", "lookup", "advertiser__name"]
    fields = ["advertiser", "kind", "name", "lookup", "created_at", "last_used_at", "revoked_at"]

    def create_key(self, obj: AdvertiserAPIKey) -> tuple[AdvertiserAPIKey, str]:
        return advertiser_key_create(advertiser=obj.advertiser, kind=obj.kind, name=obj.name)


class CreativeInline(admin.TabularInline):
    model = Creative
    extra = 0
    fields = ["name", "public_id", "headline", "keywords", "weight", "is_active"]
    readonly_fields = ["public_id"]


class CampaignPolicyInline(admin.StackedInline):
    """The campaign's bot and fraud rules (tracking/policy.py). No row: the defaults (bot
    clicks' conversions held for review, no block list, no caps)."""

    model = CampaignPolicy
    extra = 0
    max_num = 1
    verbose_name = "bot and fraud policy"
    fields = [
        "bot_action",
        "blocked_ips",
        ("max_clicks_per_ip_per_minute", "max_clicks_per_spid_per_minute"),
        "max_clicks_per_minute",
    ]


class PayoutTermInline(admin.TabularInline):
    """A publisher's terms on the campaign: a history. Rows are added, never edited or
    deleted (a newer "effective from" supersedes); the model refuses a start before a
    conversion it would have decided."""

    model = PayoutTerm
    extra = 0
    fields = ["publisher", "kind", "amount", "percent", "effective_from", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["publisher"]
    ordering = ["publisher", "-effective_from"]
    verbose_name = "payout term"
    verbose_name_plural = "payout terms (in the campaign's currency; add a new one to change)"

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ConversionCapInline(admin.TabularInline):
    """Caps of the campaign (no publisher) or of one publisher on it; what happens over one
    is the campaign's cap policy."""

    model = ConversionCap
    extra = 0
    fields = ["publisher", "period", "max_conversions", "max_payout", "used_now"]
    readonly_fields = ["used_now"]
    autocomplete_fields = ["publisher"]
    verbose_name_plural = "caps (days and months in the campaign's time zone)"

    @admin.display(description="used in the current period")
    def used_now(self, cap: ConversionCap) -> str:
        if cap.pk is None:
            return "-"
        status = caps.caps_status(
            publisher_id=cap.publisher_id or 0, campaigns=[cap.campaign], at=timezone.now()
        )
        for row in status.get(cap.campaign_id, []):
            if row.cap.pk == cap.pk:
                return (
                    f"{row.conversions} conversions, {format_amount(row.payout)} "
                    f"{cap.campaign.currency} since {row.period_start}"
                )
        return "-"


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "advertiser",
        "status",
        "access",
        "default_payout",
        "currency",
        "attribution_window",
        "min_seconds_to_convert",
        "allowed_countries",
        "cap_policy",
        "time_zone",
    ]
    list_filter = ["status", "access", "advertiser", "cap_policy"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [CampaignPolicyInline, CreativeInline, PayoutTermInline, ConversionCapInline]


@admin.register(OfferAccess)
class OfferAccessAdmin(StaffAuditedAdmin):
    """Publishers' access to offers that are not public. Requests arrive from the dashboard and
    the API; approve or reject them with the actions (the note is shown to the publisher).
    Adding a row grants access directly: how a private offer is opened to a publisher."""

    list_display = [
        "campaign",
        "publisher",
        "status",
        "requested_at",
        "decided_at",
        "decided_by",
        "short_message",
    ]
    list_filter = ["status", "campaign__access", "campaign"]
    search_fields = ["campaign__name", "campaign__public_id", "publisher__name"]
    autocomplete_fields = ["campaign", "publisher"]
    readonly_fields = ["status", "message", "requested_at", "decided_at", "decided_by"]
    fields = ["campaign", "publisher", "status", "message", "decision_note", *readonly_fields[2:]]
    actions = ["approve", "reject"]
    # Adding goes through the grant service, which records the decision itself.
    audit_additions = False

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.readonly_fields + (["campaign", "publisher"] if obj else [])

    def save_model(self, request: HttpRequest, obj: OfferAccess, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        granted = access.offer_access_grant(
            publisher=obj.publisher,
            campaign=obj.campaign,
            note=obj.decision_note,
            actor=Actor.admin(request),
        )
        obj.pk = granted.pk
        obj.refresh_from_db()

    @admin.display(description="Publisher's message")
    def short_message(self, row: OfferAccess) -> str:
        return row.message[:80]

    @admin.action(description="Approve selected (their links work within seconds)")
    def approve(self, request: HttpRequest, queryset) -> None:
        changed = access.offer_access_decide(
            access_ids=queryset.values_list("pk", flat=True),
            approve=True,
            actor=Actor.admin(request),
        )
        self.message_user(request, f"Approved {changed} request(s).")

    @admin.action(description="Reject selected (the note on each is shown to the publisher)")
    def reject(self, request: HttpRequest, queryset) -> None:
        changed = access.offer_access_decide(
            access_ids=queryset.values_list("pk", flat=True),
            approve=False,
            actor=Actor.admin(request),
        )
        self.message_user(request, f"Rejected {changed} request(s).")


@admin.register(CapCounter)
class CapCounterAdmin(admin.ModelAdmin):
    """What each cap used per period (written by the intake only)."""

    list_display = ["cap", "period_start", "conversions", "payout"]
    list_filter = ["cap__period"]
    search_fields = ["cap__campaign__name"]
    readonly_fields = ["cap", "period_start", "conversions", "payout"]
    date_hierarchy = "period_start"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Creative)
class CreativeAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "campaign", "keywords", "weight", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "public_id", "keywords"]
    readonly_fields = ["public_id", "created_at"]


@admin.register(SmartAd)
class SmartAdAdmin(admin.ModelAdmin):
    """Smart ads: the id column is the `smart_ad_id` publishers put in their embed code."""

    list_display = ["id", "name", "width", "height", "slots", "template", "is_active"]
    list_display_links = ["id", "name"]
    list_filter = ["is_active", "template"]
    search_fields = ["=id", "name"]
    filter_horizontal = ["campaigns"]
    autocomplete_fields = ["fallback_creative"]
    readonly_fields = ["id", "created_at", "updated_at"]
    fields = [
        "id",
        "name",
        ("width", "height"),
        "slots",
        "template",
        "campaigns",
        "fallback_creative",
        "is_active",
        "created_at",
        "updated_at",
    ]


@admin.register(SmartAdImpression)
class SmartAdImpressionAdmin(admin.ModelAdmin):
    list_display = ["day", "publisher", "smart_ad", "creative", "country", "impressions"]
    list_filter = ["day"]
    search_fields = ["=smart_ad__id", "creative__public_id", "publisher__name"]
    readonly_fields = ["publisher", "day", "smart_ad", "creative", "country", "impressions"]
    date_hierarchy = "day"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ImpressionFlush)
class ImpressionFlushAdmin(admin.ModelAdmin):
    list_display = ["flushed_at", "batch_id", "rows", "impressions"]
    readonly_fields = ["batch_id", "rows", "impressions", "flushed_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class TrackingLinkAdminForm(forms.ModelForm):
    class Meta:
        model = TrackingLink
        fields = ["code", "publisher", "campaign", "name", "default_placement", "is_active"]

    def clean(self):
        cleaned = super().clean()
        publisher, campaign = cleaned.get("publisher"), cleaned.get("campaign")
        if publisher and campaign and not campaign_runnable(publisher, campaign):
            # Its clicks would all be refused (offer_not_approved).
            raise forms.ValidationError(
                f"{publisher} may not run {campaign} ({campaign.get_access_display()}): "
                "grant its access under Offer access first."
            )
        return cleaned


@admin.register(TrackingLink)
class TrackingLinkAdmin(StaffAuditedAdmin):
    form = TrackingLinkAdminForm
    list_display = ["code", "name", "publisher", "campaign", "default_placement", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["code", "name", "publisher__name", "campaign__name"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["publisher", "campaign"]


@admin.register(Click)
class ClickAdmin(admin.ModelAdmin):
    list_display = [
        "click_id",
        "created_at",
        "publisher",
        "campaign",
        "spid",
        "placement",
        "smart_ad_id",
        "country",
        "device",
        "is_bot",
        "is_unique",
    ]
    list_filter = ["is_bot", "is_unique", "device", "publisher", "campaign"]
    search_fields = ["click_id", "spid"]
    readonly_fields = [f.name for f in Click._meta.fields]
    date_hierarchy = "created_at"
    show_full_result_count = False  # COUNT(*) over millions of clicks is not worth it


class PostbackInline(admin.TabularInline):
    model = Postback
    extra = 0
    can_delete = False
    fields = ["event_id", "conversion_status", "status", "attempts", "last_status_code", "url"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversion)
class ConversionAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "created_at",
        "publisher",
        "campaign",
        "event",
        "status",
        "reason",
        "payout",
        "currency",
    ]
    list_filter = ["status", "reason", "event", "publisher"]
    search_fields = ["public_id", "txn_id", "click__click_id", "click__spid"]
    readonly_fields = ["public_id", "reason", "reason_detail", "created_at", "updated_at"]
    raw_id_fields = ["click", "publisher", "advertiser", "campaign"]
    inlines = [PostbackInline]
    show_full_result_count = False
    actions = ["approve_held", "reject_held"]

    @admin.action(description="Approve selected held conversions (fires their callbacks)")
    def approve_held(self, request: HttpRequest, queryset) -> None:
        changed = conversions_review(
            conversion_ids=queryset.values_list("pk", flat=True), approve=True
        )
        self.message_user(request, f"Approved {changed} held conversion(s).")

    @admin.action(description="Reject selected held conversions")
    def reject_held(self, request: HttpRequest, queryset) -> None:
        changed = conversions_review(
            conversion_ids=queryset.values_list("pk", flat=True), approve=False
        )
        self.message_user(request, f"Rejected {changed} held conversion(s).")


@admin.register(ClickRejection)
class ClickRejectionAdmin(admin.ModelAdmin):
    list_display = ["day", "publisher", "reason", "count"]
    list_filter = ["reason"]
    readonly_fields = ["publisher", "day", "reason", "count"]


@admin.register(ConversionRefusal)
class ConversionRefusalAdmin(admin.ModelAdmin):
    """Conversions advertisers sent that the intake refused (422): what they can check when a
    conversion is missing. Read-only: nothing here was paid or sent."""

    list_display = ["created_at", "advertiser", "publisher", "reason", "click_id", "txn_id"]
    list_filter = ["reason"]
    search_fields = ["click_id", "txn_id", "spid"]
    readonly_fields = [f.name for f in ConversionRefusal._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ClickDeadLetter)
class ClickDeadLetterAdmin(admin.ModelAdmin):
    """Buffered clicks the database refused (tracking/clickbuffer.py). Nothing retries them on
    its own: fix the cause (e.g. restore a deleted link), then retry them from here."""

    list_display = ["created_at", "click_id", "publisher_id", "error_class", "short_error"]
    list_filter = ["error_class"]
    search_fields = ["click_id", "entry_id"]
    readonly_fields = [
        "entry_id",
        "click_id",
        "publisher_id",
        "payload",
        "error_class",
        "error",
        "created_at",
    ]
    actions = ["retry"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {**(extra_context or {}), "subtitle": "Also see /admin/status/"}
        return super().changelist_view(request, extra_context)

    @admin.display(description="Error")
    def short_error(self, letter: ClickDeadLetter) -> str:
        return letter.error[:120]

    @admin.action(description="Retry selected clicks (store them if the database takes them)")
    def retry(self, request: HttpRequest, queryset) -> None:
        stored, refused = clickbuffer.dead_letters_retry(queryset)
        self.message_user(request, f"Stored {stored} click(s); {refused} still refused.")
