from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone

from postbacks.models import Postback
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    Campaign,
    Click,
    ClickRejection,
    Conversion,
    Creative,
    TrackingLink,
)
from tracking.services import advertiser_key_create


@admin.register(Advertiser)
class AdvertiserAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["public_id", "created_at"]


@admin.register(AdvertiserAPIKey)
class AdvertiserAPIKeyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "advertiser", "kind", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["kind", "revoked_at"]
    search_fields = ["name", "lookup", "advertiser__name"]
    readonly_fields = ["lookup", "created_at", "last_used_at"]
    fields = ["advertiser", "kind", "name", "lookup", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: AdvertiserAPIKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, plaintext = advertiser_key_create(
            advertiser=obj.advertiser, kind=obj.kind, name=obj.name
        )
        obj.pk, obj.lookup, obj.digest = key.pk, key.lookup, key.digest
        messages.warning(
            request, f"New credential (copy it now, it won't be shown again): {plaintext}"
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).")


class CreativeInline(admin.TabularInline):
    model = Creative
    extra = 0
    readonly_fields = ["public_id"]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "advertiser",
        "status",
        "default_payout",
        "currency",
        "attribution_window",
    ]
    list_filter = ["status", "advertiser"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [CreativeInline]


@admin.register(Creative)
class CreativeAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "campaign", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["public_id", "created_at"]


@admin.register(TrackingLink)
class TrackingLinkAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "publisher", "campaign", "default_placement", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["code", "name", "publisher__name", "campaign__name"]
    readonly_fields = ["created_at"]
    raw_id_fields = ["publisher", "campaign"]


@admin.register(Click)
class ClickAdmin(admin.ModelAdmin):
    list_display = [
        "click_id",
        "created_at",
        "publisher",
        "campaign",
        "spid",
        "placement",
        "country",
    ]
    list_filter = ["publisher", "campaign"]
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
        "payout",
        "currency",
    ]
    list_filter = ["status", "event", "publisher"]
    search_fields = ["public_id", "txn_id", "click__click_id", "click__spid"]
    readonly_fields = ["public_id", "created_at", "updated_at"]
    raw_id_fields = ["click", "publisher", "advertiser", "campaign"]
    inlines = [PostbackInline]
    show_full_result_count = False


@admin.register(ClickRejection)
class ClickRejectionAdmin(admin.ModelAdmin):
    list_display = ["day", "publisher", "reason", "count"]
    list_filter = ["reason"]
    readonly_fields = ["publisher", "day", "reason", "count"]
