from collections import defaultdict

from django.contrib import admin
from django.http import HttpRequest

from postbacks.models import DemoCallback, Postback, PostbackAttempt
from publishers.audit import Actor
from publishers.models import Publisher
from publishers.services import postbacks_replay


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
    """The outbox as it is: every row and attempt is read-only (they are the record of what
    was sent, and the delivery engine's state), and nothing is deleted here. The action sends
    selected postbacks again, audited in each publisher's trail."""

    list_display = [
        "event_id",
        "publisher",
        "method",
        "status",
        "attempts",
        "last_status_code",
        "created_at",
    ]
    list_select_related = ["publisher"]
    list_filter = ["status", "conversion_status", "publisher"]
    search_fields = ["event_id", "url", "conversion__public_id"]
    inlines = [PostbackAttemptInline]
    actions = ["retry_selected"]
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in Postback._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Send selected postbacks now (delivered ones again)")
    def retry_selected(self, request: HttpRequest, queryset) -> None:
        # Per publisher, so each one's activity log shows the replay of its own postbacks.
        by_publisher: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for pk, publisher_id, event_id in queryset.values_list("pk", "publisher_id", "event_id"):
            by_publisher[publisher_id].append((pk, event_id))
        actor = Actor.admin(request)
        count = 0
        for publisher in Publisher.objects.filter(pk__in=list(by_publisher)):
            rows = by_publisher[publisher.pk]
            count += postbacks_replay(
                publisher=publisher,
                postback_ids=[pk for pk, _ in rows],
                scope="one" if len(rows) == 1 else "selection",
                details={"event_ids": sorted(event_id for _, event_id in rows)[:100]},
                actor=actor,
            )
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
