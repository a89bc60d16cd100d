from django.contrib import admin
from django.http import HttpRequest

from postbacks.models import DemoCallback, Postback, PostbackAttempt
from postbacks.services import postbacks_retry


class PostbackAttemptInline(admin.TabularInline):
    model = PostbackAttempt
    extra = 0
    can_delete = False
    fields = [
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "outcome",
        "error_kind",
        "error",
        "resolved_ip",
        "response_excerpt",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Postback)
class PostbackAdmin(admin.ModelAdmin):
    list_display = [
        "event_id",
        "publisher",
        "conversion_status",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "conversion_status", "publisher"]
    search_fields = ["event_id", "url", "conversion__public_id"]
    readonly_fields = [
        "event_id",
        "conversion",
        "template",
        "publisher",
        "conversion_status",
        "url",
        "attempts",
        "leased_until",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
    ]
    inlines = [PostbackAttemptInline]
    actions = ["retry_selected"]
    show_full_result_count = False

    @admin.action(description="Retry selected postbacks now")
    def retry_selected(self, request: HttpRequest, queryset) -> None:
        count = postbacks_retry(queryset.values_list("pk", flat=True))
        self.message_user(request, f"Queued {count} postback(s) for delivery.")


@admin.register(DemoCallback)
class DemoCallbackAdmin(admin.ModelAdmin):
    list_display = ["received_at", "path", "event_id", "signature_valid"]
    readonly_fields = [
        "received_at",
        "path",
        "query_string",
        "event_id",
        "signature_valid",
        "headers",
    ]
