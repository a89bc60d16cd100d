"""Callback templates: list, create, edit, pause, resume deliveries after endpoint health paused
them; live preview and a real test postback; a JSON webhook's secret (owners reveal and rotate
it, as the publisher's signing secret)."""

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from postbacks.models import Postback
from postbacks.placeholders import (
    CALLBACK_PLACEHOLDERS,
    SAMPLE_VALUES,
    TemplateError,
    expand_placeholders,
    placeholder_reference,
    placeholders_in,
    validate_template,
)
from postbacks.sample import postback_send_test
from postbacks.values import hidden_values
from publishers import selectors, services
from publishers.audit import Actor
from publishers.forms import CallbackTemplateForm
from publishers.models import CallbackTemplate
from publishers.views.account import ROTATION_OVERLAP_HOURS
from publishers.views.common import is_owner, member_view, owner_view
from tracking import selectors as tracking_selectors


def _reference_for(publisher) -> list[dict]:
    """The placeholder reference as this publisher's callbacks see it: [revenue] empty unless
    the network shares it (postbacks.values.hidden_values)."""
    hidden = hidden_values(publisher)
    reference = placeholder_reference()
    for entry in reference:
        if entry["name"] in hidden:
            entry["example"] = hidden[entry["name"]]
            entry["help"] += " (your network doesn't share it: always empty)"
    return reference


@member_view
def callbacks(request: HttpRequest) -> HttpResponse:
    templates = list(selectors.templates_for_publisher(request.publisher))
    health = tracking_selectors.callback_health(request.publisher, [t.pk for t in templates])
    return render(
        request,
        "publishers/callbacks.html",
        {"nav": "callbacks", "rows": [(t, health[t.pk]) for t in templates]},
    )


def _save(request: HttpRequest, template: CallbackTemplate | None) -> HttpResponse:
    publisher = request.publisher
    if request.method == "POST":
        form = CallbackTemplateForm(request.POST, publisher=publisher)
        if form.is_valid():
            try:
                if template is None:
                    template = services.callback_template_create(
                        publisher=publisher,
                        is_active=form.cleaned_data["is_active"],
                        actor=Actor.dashboard(request),
                        **form.service_kwargs(),
                    )
                    created_or_updated = "created"
                else:
                    services.callback_template_update(
                        template=template,
                        is_active=form.cleaned_data["is_active"],
                        actor=Actor.dashboard(request),
                        **form.service_kwargs(),
                    )
                    created_or_updated = "saved"
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                messages.success(request, f"Callback {created_or_updated}.")
                if created_or_updated == "created" and template.method == "POST":
                    # Its secret is on its page: the receiver can't verify anything without it.
                    return redirect("callback_edit", template.public_id)
                return redirect("callbacks")
    else:
        initial = CallbackTemplateForm.initial_for(template) if template else None
        form = CallbackTemplateForm(initial=initial, publisher=publisher)
    return _form_page(request, template, form)


def _form_page(
    request: HttpRequest,
    template: CallbackTemplate | None,
    form: CallbackTemplateForm,
    *,
    revealed: bool = False,
) -> HttpResponse:
    """The callback editor; `revealed` shows the webhook secret(s) (an owner asked)."""
    secrets = template.active_webhook_secrets() if template else []
    response = render(
        request,
        "publishers/callback_form.html",
        {
            "nav": "callbacks",
            "form": form,
            "template": template,
            "held": _held_count(template) if template and template.paused_at else 0,
            "placeholders": _reference_for(request.publisher),
            "can_manage": is_owner(request),
            "secrets": secrets if revealed else [],
            "rotating": len(secrets) > 1,
            "overlap_hours": ROTATION_OVERLAP_HOURS,
        },
    )
    if revealed:
        response["Cache-Control"] = "no-store"
    return response


def _editor_for(request: HttpRequest, template: CallbackTemplate) -> CallbackTemplateForm:
    return CallbackTemplateForm(
        initial=CallbackTemplateForm.initial_for(template), publisher=request.publisher
    )


@require_POST
@owner_view
def callback_secret_reveal(request: HttpRequest, public_id: str) -> HttpResponse:
    """Show the callback's webhook secret (and the old one, while a rotation overlaps)."""
    template = selectors.template_for_publisher(request.publisher, public_id)
    services.callback_template_secret_reveal(template=template, actor=Actor.dashboard(request))
    return _form_page(request, template, _editor_for(request, template), revealed=True)


@require_POST
@owner_view
def callback_secret_rotate(request: HttpRequest, public_id: str) -> HttpResponse:
    """A new webhook secret; the old one keeps signing for the overlap, then stops."""
    template = selectors.template_for_publisher(request.publisher, public_id)
    services.callback_template_secret_rotate(
        template=template,
        overlap=timedelta(hours=ROTATION_OVERLAP_HOURS),
        actor=Actor.dashboard(request),
    )
    messages.success(
        request,
        f"New webhook secret issued. The old one keeps signing for {ROTATION_OVERLAP_HOURS} "
        "hours: switch your verifier before then.",
    )
    return _form_page(request, template, _editor_for(request, template), revealed=True)


@member_view
def callback_new(request: HttpRequest) -> HttpResponse:
    return _save(request, None)


@member_view
def callback_edit(request: HttpRequest, public_id: str) -> HttpResponse:
    return _save(request, selectors.template_for_publisher(request.publisher, public_id))


@require_POST
@member_view
def callback_toggle(request: HttpRequest, public_id: str) -> HttpResponse:
    template = selectors.template_for_publisher(request.publisher, public_id)
    services.callback_template_set_active(
        template=template, active=not template.is_active, actor=Actor.dashboard(request)
    )
    messages.success(request, "Callback resumed." if template.is_active else "Callback paused.")
    return redirect("callbacks")


@member_view
def callback_delete(request: HttpRequest, public_id: str) -> HttpResponse:
    """GET asks (what stays, what happens to postbacks not delivered yet); POST deletes, with
    the CSRF token, and the activity log records it with the callback's last settings."""
    template = selectors.template_for_publisher(request.publisher, public_id)
    if request.method == "POST":
        services.callback_template_delete(template=template, actor=Actor.dashboard(request))
        messages.success(
            request,
            f"Callback {template} deleted. Its postbacks stay in Deliveries and in the trace.",
        )
        return redirect("callbacks")
    postbacks = Postback.objects.filter(template=template)
    return render(
        request,
        "publishers/callback_delete.html",
        {
            "nav": "callbacks",
            "template": template,
            "sent": postbacks.count(),
            "undelivered": postbacks.filter(status=Postback.Status.PENDING).count(),
            # JSON webhooks can't be signed once their callback (and its secret) is gone.
            "undelivered_webhooks": postbacks.filter(status=Postback.Status.PENDING)
            .exclude(body="")
            .count(),
        },
    )


def _held_count(template: CallbackTemplate) -> int:
    return Postback.objects.filter(template=template, status=Postback.Status.PENDING).count()


@require_POST
@member_view
def callback_resume(request: HttpRequest, public_id: str) -> HttpResponse:
    """Resume deliveries to an endpoint that endpoint health paused (410 Gone or a long
    failing streak): what it held is sent, oldest first."""
    template = selectors.template_for_publisher(request.publisher, public_id)
    released = services.callback_template_resume_deliveries(
        template=template, actor=Actor.dashboard(request)
    )
    if released is None:
        messages.info(request, "Deliveries to this callback were not paused.")
    else:
        messages.success(
            request,
            f"Deliveries resumed: {released} held postback(s) are being sent, oldest first.",
        )
    if request.POST.get("back") == "edit":
        return redirect("callback_edit", template.public_id)
    return redirect("callbacks")


@require_POST
@member_view
def callback_preview(request: HttpRequest) -> JsonResponse:
    """The template expanded with sample values, exactly as a delivery would expand it."""
    text = request.POST.get("url_template", "").strip()
    if not text:
        return JsonResponse({"ok": False, "url": "", "error": "", "placeholders": []})
    try:
        validate_template(text, CALLBACK_PLACEHOLDERS)
        url = expand_placeholders(
            text,
            {
                **SAMPLE_VALUES,
                "publisher_id": request.publisher.public_id,
                **hidden_values(request.publisher),
            },
        )
    except TemplateError as exc:
        return JsonResponse({"ok": False, "url": "", "error": str(exc), "placeholders": []})
    return JsonResponse(
        {"ok": True, "url": url, "error": "", "placeholders": placeholders_in(text)}
    )


@require_POST
@member_view
def callback_test(request: HttpRequest) -> HttpResponse:
    """Send one real signed request to the URL in the form (saved or not) and show it all.
    A JSON webhook is signed with the saved callback's secret (`callback`: its id, when the
    editor edits one), else with a one-off secret: a new callback has none yet."""
    text = request.POST.get("url_template", "").strip()
    method = request.POST.get("method", "")
    if method not in CallbackTemplate.Method.values:
        method = CallbackTemplate.Method.GET
    probe = CallbackTemplate(publisher=request.publisher, url_template=text, method=method)
    saved_id = request.POST.get("callback", "")
    if saved_id:
        saved = selectors.template_for_publisher(request.publisher, saved_id)
        probe.webhook_secret = saved.webhook_secret
        probe.previous_webhook_secret = saved.previous_webhook_secret
        probe.previous_webhook_secret_expires_at = saved.previous_webhook_secret_expires_at
    result = postback_send_test(template=probe)
    services.callback_test_record(template=probe, result=result, actor=Actor.dashboard(request))
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse(result)
    return render(
        request,
        "publishers/callback_test.html",
        {"nav": "callbacks", "result": result, "url_template": text},
    )
