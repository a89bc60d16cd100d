"""The audit trail: who did what to a publisher's account, and reading it back.

Services record an event in the transaction of the change they make (so a rolled-back change
leaves no event, and a committed one always has its event); views only say who is acting,
with an `Actor` built from the request. Details never carry secrets: no API key plaintext, no
signing secret.
"""

from dataclasses import dataclass
from typing import Any

from django.db import models
from django.http import HttpRequest

from config.client_ip import client_ip
from postbacks.models import Postback
from publishers.keyset import Keyset
from publishers.models import (
    AuditEvent,
    CallbackTemplate,
    Invitation,
    Membership,
    Publisher,
    PublisherAPIKey,
)

Action = AuditEvent.Action


@dataclass(frozen=True)
class Actor:
    """Who is acting and from where: a signed-in person (dashboard or admin), an API key, or
    nobody (the system, or a script calling the services directly)."""

    via: str = AuditEvent.Via.SYSTEM
    user: Any = None
    api_key: PublisherAPIKey | None = None
    ip: str | None = None
    # A person acting without an account or signed out (answering an invitation by its link).
    name: str = ""

    @classmethod
    def dashboard(cls, request: HttpRequest, *, user: Any = None) -> "Actor":
        """The signed-in user, or `user` on pages used signed out (password reset)."""
        return cls(AuditEvent.Via.DASHBOARD, user=user or request.user, ip=client_ip(request))

    @classmethod
    def invitee(cls, request: HttpRequest, *, email: str) -> "Actor":
        """Whoever holds an invitation's link (sent to `email`), signed in or not."""
        user = request.user if request.user.is_authenticated else None
        return cls(AuditEvent.Via.DASHBOARD, user=user, ip=client_ip(request), name=email)

    @classmethod
    def admin(cls, request: HttpRequest) -> "Actor":
        return cls(AuditEvent.Via.ADMIN, user=request.user, ip=client_ip(request))

    @classmethod
    def api(cls, request) -> "Actor":
        """For a DRF request authenticated by a publisher API key."""
        return cls(AuditEvent.Via.API, api_key=request.user.key, ip=client_ip(request))


SYSTEM = Actor()


def key_label(key: PublisherAPIKey) -> str:
    """How an API key is named in the log: its name and its public lookup part."""
    prefix = f"{PublisherAPIKey.PREFIX}_{key.lookup}_…"
    return f"{key.name} ({prefix})" if key.name else prefix


def describe(target: object) -> tuple[str, str, str]:
    """(type, id, text) of what an event is about."""
    if isinstance(target, CallbackTemplate):
        return "callback", target.public_id, str(target)[:200]
    if isinstance(target, PublisherAPIKey):
        return "api_key", target.lookup, key_label(target)[:200]
    if isinstance(target, Membership):
        user = target.user
        return "member", user.get_username()[:64], (user.email or user.get_username())[:200]
    if isinstance(target, Invitation):
        return "invitation", target.email[:64], target.email[:200]
    if isinstance(target, Publisher):
        return "publisher", target.public_id, target.name[:200]
    if isinstance(target, Postback):
        return "postback", target.event_id, target.event_id
    if isinstance(target, models.Model):  # anything else staff edit in the admin
        return target._meta.model_name[:20], str(target.pk)[:64], str(target)[:200]
    raise TypeError(f"Can't describe {type(target).__name__} in the audit log")


def audit_record(
    *,
    publisher: Publisher,
    actor: Actor | None,
    action: str,
    target: object = None,
    details: dict | None = None,
) -> AuditEvent:
    """Record one event. Call it inside the transaction of the change it describes.

    `actor` None is the system. The client IP travels in the actor, with the rest of "who".
    """
    actor = actor or SYSTEM
    target_type, target_id, target_repr = describe(target) if target is not None else ("", "", "")
    user = actor.user if actor.user is not None and actor.user.is_authenticated else None
    return AuditEvent.objects.create(
        publisher=publisher,
        action=action,
        via=actor.via,
        actor=user,
        actor_name=user.get_username() if user else actor.name[:150],
        api_key_label=key_label(actor.api_key) if actor.api_key else "",
        target_type=target_type,
        target_id=target_id,
        target_repr=target_repr,
        details=details or {},
        ip=actor.ip,
    )


# Never written to the trail, whatever a form changed.
_SECRET_FIELDS = ("secret", "digest", "password", "token")


def staff_edit_record(
    *, actor: Actor, obj: models.Model, operation: str, form: Any = None
) -> AuditEvent | None:
    """Record a staff edit made in the admin ("added", "changed" or "deleted") in the trail of
    the publisher the object belongs to, with each changed field's old and new value (never
    a secret). Objects of no publisher are not recorded; a change form saved without
    changes is not either."""
    publisher = obj if isinstance(obj, Publisher) else getattr(obj, "publisher", None)
    if not isinstance(publisher, Publisher):
        return None
    fields = {}
    if form is not None:
        for name in form.changed_data:
            if any(part in name for part in _SECRET_FIELDS):
                continue
            before = _shown(form.initial.get(name)) if operation == "changed" else None
            after = _shown(form.cleaned_data.get(name))
            if before != after:  # a form may call "[]" and [] a change
                fields[name] = {"from": before, "to": after}
        if operation == "changed" and not fields:
            return None
    return audit_record(
        publisher=publisher,
        actor=actor,
        action=Action.STAFF_EDITED,
        target=obj,
        details={"operation": operation, "model": obj._meta.verbose_name, "changed": fields},
    )


def _shown(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_shown(item) for item in value][:20]
    return str(value)[:200]


# --- Reading --------------------------------------------------------------------------------

AUDIT_LOG = Keyset("created_at", descending=True)


def audit_events_for_publisher(
    publisher: Publisher, *, action: str = "", cursor: str = "", limit: int = 50
) -> tuple[list[AuditEvent], str]:
    """The publisher's events, newest first (keyset on created_at, id; served by
    publishers_audit_log_idx), optionally of one action, and the next page's cursor ("" at
    the end). A cursor that does not decode starts from the top."""
    rows = AuditEvent.objects.filter(publisher=publisher)
    if action:
        rows = rows.filter(action=action)
    page = AUDIT_LOG.page(rows.select_related("actor"), cursor=cursor, limit=limit)
    return page.items, page.next_if_more
