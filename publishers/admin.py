from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest
from django.utils import timezone

from publishers.audit import Actor, staff_edit_record
from publishers.forms import ConversionStatusesField, EventNamesField
from publishers.models import (
    AuditEvent,
    CallbackTemplate,
    Invitation,
    Membership,
    Publisher,
    PublisherAPIKey,
    SignupApplication,
)
from publishers.services import (
    api_key_create,
    api_key_revoke,
    callback_template_resume_deliveries,
    member_invite,
)
from publishers.signup import signup_approve, signup_reject
from tracking.models import AdvertiserUser


class StaffAuditedAdmin(admin.ModelAdmin):
    """Every add, change and delete staff make in this admin (inlines included) goes into the
    trail of the publisher the object belongs to (publishers.audit.staff_edit_record): the
    publisher's team sees who at Roundtrip changed what, and when."""

    # False where saving already goes through a service that records the addition.
    audit_additions = True

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change or self.audit_additions:
            staff_edit_record(
                actor=Actor.admin(request),
                obj=obj,
                operation="changed" if change else "added",
                form=form,
            )

    def delete_model(self, request: HttpRequest, obj) -> None:
        staff_edit_record(actor=Actor.admin(request), obj=obj, operation="deleted")
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        actor = Actor.admin(request)
        for obj in queryset:
            staff_edit_record(actor=actor, obj=obj, operation="deleted")
        super().delete_queryset(request, queryset)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        actor = Actor.admin(request)
        for deleted in formset.deleted_forms:
            if deleted.instance.pk:
                staff_edit_record(actor=actor, obj=deleted.instance, operation="deleted")
        super().save_formset(request, form, formset, change)
        for inline_form in formset.forms:
            if inline_form in formset.deleted_forms or not inline_form.has_changed():
                continue
            added = inline_form.instance in formset.new_objects
            staff_edit_record(
                actor=actor,
                obj=inline_form.instance,
                operation="added" if added else "changed",
                form=inline_form,
            )


class CallbackTemplateAdminForm(forms.ModelForm):
    """Statuses as checkboxes and events as a comma-separated line, as in the dashboard,
    instead of the JSON lists they are stored as."""

    statuses = ConversionStatusesField()
    events = EventNamesField()
    # Not sent (an older page, a script): GET for a new callback, the current one on an edit.
    method = forms.ChoiceField(
        choices=CallbackTemplate.Method.choices,
        required=False,
        help_text="POST sends a signed JSON webhook (its secret: the callback's page in the "
        "publisher's dashboard, for their owners).",
    )

    class Meta:
        model = CallbackTemplate
        fields = ["publisher", "name", "url_template", "method", "statuses", "events", "campaign"]

    def clean_method(self) -> str:
        return self.cleaned_data["method"] or self.instance.method or CallbackTemplate.Method.GET


class MembershipAdminForm(forms.ModelForm):
    """A publisher's team takes no advertiser user: each account has one area."""

    def clean_user(self):
        user = self.cleaned_data["user"]
        if user is not None and AdvertiserUser.objects.filter(user=user).exists():
            raise forms.ValidationError(
                "This account is an advertiser user; a team member needs an account of its own."
            )
        return user


class MembershipInline(admin.TabularInline):
    model = Membership
    form = MembershipAdminForm
    extra = 0
    autocomplete_fields = ["user"]


class CallbackTemplateInline(admin.TabularInline):
    model = CallbackTemplate
    form = CallbackTemplateAdminForm
    extra = 0
    fields = ["name", "url_template", "method", "events", "statuses", "campaign", "is_active"]
    readonly_fields = ["is_active"]  # pausing holds postbacks: see CallbackTemplateAdmin
    autocomplete_fields = ["campaign"]


class PublisherAddForm(forms.ModelForm):
    """Onboarding in one step: the publisher, and an invitation to the person who will own it
    (they join when they accept the e-mailed link, as every team member does)."""

    owner_email = forms.EmailField(
        label="Owner's e-mail",
        help_text="We e-mail this address an invitation to own the publisher; the owner then "
        "invites the rest of the team from the dashboard.",
    )

    class Meta:
        model = Publisher
        fields = ["name", "status"]


@admin.register(Publisher)
class PublisherAdmin(StaffAuditedAdmin):
    list_display = ["name", "public_id", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["public_id", "created_at"]
    exclude = ["signing_secret", "previous_signing_secret"]
    inlines = [MembershipInline, CallbackTemplateInline]

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        if obj is None:  # adding: the onboarding form (its fields come from get_fieldsets)
            kwargs["form"] = PublisherAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj=None):
        if obj is None:
            return [(None, {"fields": [*PublisherAddForm.Meta.fields, "owner_email"]})]
        return super().get_fieldsets(request, obj)

    def get_inlines(self, request: HttpRequest, obj):
        # A new publisher's team is whoever accepts the invitation; callbacks come after.
        return self.inlines if obj is not None else []

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            invitation = member_invite(
                publisher=obj,
                email=form.cleaned_data["owner_email"],
                role=Membership.Role.OWNER,
                actor=Actor.admin(request),
            )
            self.message_user(request, f"Invitation to own {obj.name} sent to {invitation.email}.")


class APIKeyAdmin(StaffAuditedAdmin):
    """Admin for hashed keys (publisher and advertiser): a new key is generated on save and
    shown once in a message; only its digest is stored. Subclasses set `create_key`."""

    readonly_fields = ["lookup", "created_at", "last_used_at"]
    actions = ["revoke"]
    audit_additions = False  # the key's service records its creation
    # (admin, unsaved obj) -> (saved key row, plaintext)
    create_key: Callable[..., tuple[models.Model, str]]

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, plaintext = self.key_create(request, obj)
        obj.pk, obj.lookup, obj.digest = key.pk, key.lookup, key.digest
        messages.warning(request, f"New key (copy it now, it won't be shown again): {plaintext}")

    def key_create(self, request: HttpRequest, obj) -> tuple[models.Model, str]:
        """Create the key; a subclass that records who did it overrides this."""
        return self.create_key(obj)

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

    def key_create(self, request: HttpRequest, obj: PublisherAPIKey) -> tuple[PublisherAPIKey, str]:
        return api_key_create(publisher=obj.publisher, name=obj.name, actor=Actor.admin(request))

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset) -> None:
        # One at a time through the service: each revocation goes in its publisher's log.
        actor = Actor.admin(request)
        count = sum(
            api_key_revoke(key=key, actor=actor)
            for key in queryset.filter(revoked_at__isnull=True).select_related("publisher")
        )
        self.message_user(request, f"Revoked {count} key(s).")


@admin.register(CallbackTemplate)
class CallbackTemplateAdmin(StaffAuditedAdmin):
    # Narrow enough for a laptop: statuses, events and the pause time are on the change page.
    list_display = ["__str__", "publisher", "method", "campaign", "is_active", "paused_reason"]
    list_select_related = ["publisher", "campaign"]
    list_filter = ["method", "is_active", "paused_reason"]
    search_fields = ["name", "url_template", "publisher__name", "public_id"]
    readonly_fields = [
        "public_id",
        "created_at",
        "updated_at",
        # Paused and resumed with the actions below (a pause holds the template's postbacks).
        "is_active",
        "paused_at",
        "paused_reason",
        "consecutive_failures",
        "failing_since",
    ]
    form = CallbackTemplateAdminForm
    autocomplete_fields = ["publisher", "campaign"]
    actions = ["resume_deliveries"]

    @admin.action(description="Resume deliveries of selected paused callbacks")
    def resume_deliveries(self, request: HttpRequest, queryset) -> None:
        actor = Actor.admin(request)
        resumed = released = 0
        for template in queryset.filter(paused_at__isnull=False).select_related("publisher"):
            count = callback_template_resume_deliveries(template=template, actor=actor)
            if count is not None:
                resumed += 1
                released += count
        self.message_user(
            request, f"Resumed {resumed} callback(s); {released} held postback(s) released."
        )


@admin.register(Membership)
class MembershipAdmin(StaffAuditedAdmin):
    form = MembershipAdminForm
    list_display = ["user", "publisher", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "publisher__name"]
    autocomplete_fields = ["user", "publisher"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invitations are answered by the invited person's link; staff only look."""

    list_display = ["email", "publisher", "role", "status", "created_at", "expires_at"]
    list_filter = ["status"]
    search_fields = ["email", "publisher__name"]
    list_select_related = ["publisher"]

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in Invitation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail, read-only: staff look, nobody edits or deletes history here."""

    list_display = ["created_at", "publisher", "action", "via", "who", "target_repr", "ip"]
    list_filter = ["action", "via"]
    search_fields = ["publisher__name", "publisher__public_id", "target_id", "actor_name"]
    date_hierarchy = "created_at"
    list_select_related = ["publisher", "actor"]
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(SignupApplication)
class SignupApplicationAdmin(StaffAuditedAdmin):
    """Publishers who signed up (publishers/signup.py), waiting for staff: approve or reject
    them with the actions; the applicant is e-mailed and the publisher's Activity records
    who decided. Only the rejection's reason is written here (an audited staff edit); an
    application is not deleted (delete its publisher instead)."""

    list_display = ["publisher", "email", "website", "status", "created_at", "decided_at"]
    list_filter = ["status"]
    search_fields = ["email", "publisher__name", "publisher__public_id", "website"]
    list_select_related = ["publisher"]
    ordering = ["-created_at"]
    actions = ["approve", "reject"]
    fields = [
        "publisher",
        "email",
        "website",
        "about",
        "status",
        "created_at",
        "decided_at",
        "decided_by",
        "reason",
    ]

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [name for name in self.fields if name != "reason"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Approve selected applications (e-mails the applicants)")
    def approve(self, request: HttpRequest, queryset) -> None:
        actor = Actor.admin(request)
        count = sum(
            signup_approve(application=application, actor=actor)
            for application in queryset.select_related("publisher")
        )
        self.message_user(request, f"Approved {count} application(s); their owners were e-mailed.")

    @admin.action(description="Reject selected applications (e-mails the applicants)")
    def reject(self, request: HttpRequest, queryset) -> None:
        actor = Actor.admin(request)
        count = sum(
            signup_reject(application=application, actor=actor)
            for application in queryset.select_related("publisher")
        )
        self.message_user(
            request, f"Rejected {count} application(s); the applicants were e-mailed."
        )
