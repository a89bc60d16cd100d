from collections.abc import Callable

from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest
from django.utils import timezone

from publishers.models import CallbackTemplate, Membership, Publisher, PublisherAPIKey
from publishers.services import api_key_create


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


class CallbackTemplateInline(admin.TabularInline):
    model = CallbackTemplate
    extra = 0
    fields = ["name", "url_template", "events", "statuses", "campaign", "is_active"]


@admin.register(Publisher)
class PublisherAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["public_id", "created_at"]
    exclude = ["signing_secret", "previous_signing_secret"]
    inlines = [MembershipInline, CallbackTemplateInline]


class APIKeyAdmin(admin.ModelAdmin):
    """Admin for hashed keys (publisher and advertiser): a new key is generated on save and
    shown once in a message; only its digest is stored. Subclasses set `create_key`."""

    readonly_fields = ["lookup", "created_at", "last_used_at"]
    actions = ["revoke"]
    # (admin, unsaved obj) -> (saved key row, plaintext)
    create_key: Callable[..., tuple[models.Model, str]]

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, plaintext = self.create_key(obj)
        obj.pk, obj.lookup, obj.digest = key.pk, key.lookup, key.digest
        messages.warning(request, f"New key (copy it now, it won't be shown again): {plaintext}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).")


@admin.register(PublisherAPIKey)
class PublisherAPIKeyAdmin(APIKeyAdmin):
    list_display = ["__str__", "publisher", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "lookup", "publisher__name"]
    fields = ["publisher", "name", "lookup", "created_at", "last_used_at", "revoked_at"]

    def create_key(self, obj: PublisherAPIKey) -> tuple[PublisherAPIKey, str]:
        return api_key_create(publisher=obj.publisher, name=obj.name)


@admin.register(CallbackTemplate)
class CallbackTemplateAdmin(admin.ModelAdmin):
    list_display = ["__str__", "publisher", "statuses", "events", "campaign", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "url_template", "publisher__name", "public_id"]
    readonly_fields = ["public_id", "created_at", "updated_at"]
    raw_id_fields = ["campaign"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "publisher", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "publisher__name"]
    raw_id_fields = ["user", "publisher"]
