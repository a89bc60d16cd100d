"""Writes for the tenant: API keys and callback templates."""

from publishers.keys import generate_key
from publishers.models import CallbackTemplate, Publisher, PublisherAPIKey


def api_key_create(*, publisher: Publisher, name: str = "") -> tuple[PublisherAPIKey, str]:
    """Create a publisher API key. Returns the row and the plaintext, which is never stored."""
    generated = generate_key(PublisherAPIKey.PREFIX)
    key = PublisherAPIKey.objects.create(
        publisher=publisher, name=name, lookup=generated.lookup, digest=generated.digest
    )
    return key, generated.plaintext


def callback_template_create(
    *,
    publisher: Publisher,
    url_template: str,
    name: str = "",
    events: list[str] | None = None,
    statuses: list[str] | None = None,
    campaign=None,
) -> CallbackTemplate:
    """Validate and save a callback template (raises ValidationError with per-field messages)."""
    template = CallbackTemplate(
        publisher=publisher,
        url_template=url_template,
        name=name,
        events=events or [],
        statuses=statuses or ["approved"],
        campaign=campaign,
    )
    template.full_clean()
    template.save()
    return template
