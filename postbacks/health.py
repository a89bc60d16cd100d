"""Endpoint health and pauses: notice a callback template whose postbacks keep failing, warn
its owners, pause it after a long failing streak, and resume it.

Every attempt outcome feeds its template: a success resets the streak; a failure (any attempt
that did not end in 2xx) adds to `consecutive_failures` and starts `failing_since`. After
POSTBACKS_HEALTH_WARN_AFTER_FAILURES failures in a row the publisher's owners get one e-mail;
once the template has been failing for POSTBACKS_HEALTH_PAUSE_AFTER_SECONDS (3 days by
default) it is paused. A 410 Gone pauses it at once; the publisher can pause it too.

Every pause holds rather than drops, whatever its reason: the template's pending postbacks get
`next_attempt_at = HELD_UNTIL` (so no claim or sweep even looks at them), new conversions still
create postbacks for it, held the same way, and `endpoint_resume` makes all of them due again
in the order they were created.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from postbacks import retry
from postbacks.models import Postback

logger = logging.getLogger(__name__)

# "Not before the template is resumed." Far enough that nothing due-ish ever reaches it, with
# room left for date arithmetic.
HELD_UNTIL = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass
class Tally:
    """Attempt outcomes of one template within a batch."""

    ok: int = 0
    failed: int = 0

    def add(self, verdict: retry.Verdict) -> None:
        if retry.endpoint_failed(verdict):
            self.failed += 1
        else:
            self.ok += 1


@dataclass(frozen=True)
class _Notice:
    kind: str  # "failing" or "paused"
    template_id: int


def endpoint_outcomes_record(
    tallies: Mapping[int, Tally], *, gone: Iterable[int] = (), now: datetime
) -> None:
    """Feed attempt outcomes (per template id) into the templates' health.

    Call it inside the transaction that records the attempts; e-mails go out after commit.
    `gone` are templates whose endpoint answered 410: paused (and deactivated) at once.
    """
    from publishers.models import CallbackTemplate

    gone = list(gone)
    if gone:
        # First: a 410 is the reason to show, even where the streak would pause it too.
        endpoint_pause(gone, reason=CallbackTemplate.PausedReason.GONE, now=now)
    recovered = [pk for pk, tally in tallies.items() if tally.ok]
    failing = {pk: tally.failed for pk, tally in tallies.items() if not tally.ok and tally.failed}
    if recovered:
        # Usually matches nothing: only templates that had been failing are written.
        CallbackTemplate.objects.filter(pk__in=recovered).filter(
            Q(consecutive_failures__gt=0) | Q(failing_since__isnull=False)
        ).update(consecutive_failures=0, failing_since=None, warned_at=None)
    if failing:
        by_count: dict[int, list[int]] = defaultdict(list)
        for pk, count in failing.items():
            by_count[count].append(pk)
        for count, ids in by_count.items():
            CallbackTemplate.objects.filter(pk__in=ids).update(
                consecutive_failures=F("consecutive_failures") + count,
                failing_since=Coalesce(F("failing_since"), Value(now, DateTimeField())),
            )
        _warn_or_pause(failing.keys(), now=now)


def _warn_or_pause(template_ids: Iterable[int], *, now: datetime) -> None:
    from publishers.models import CallbackTemplate

    pause_after = timedelta(seconds=settings.POSTBACKS_HEALTH_PAUSE_AFTER_SECONDS)
    warn_after = settings.POSTBACKS_HEALTH_WARN_AFTER_FAILURES
    rows = CallbackTemplate.objects.filter(pk__in=list(template_ids), paused_at__isnull=True)
    for pk, failures, since, warned_at in rows.values_list(
        "pk", "consecutive_failures", "failing_since", "warned_at"
    ):
        if since is not None and now - since >= pause_after:
            endpoint_pause([pk], reason=CallbackTemplate.PausedReason.FAILING, now=now)
        elif (
            failures >= warn_after
            and warned_at is None
            # Compare-and-swap: of two workers crossing the threshold together, one warns.
            and CallbackTemplate.objects.filter(pk=pk, warned_at__isnull=True).update(warned_at=now)
        ):
            _notify_on_commit(_Notice("failing", pk))


def endpoint_pause(template_ids: Iterable[int], *, reason: str, now: datetime | None = None) -> int:
    """Pause templates and hold their pending postbacks. Returns how many were paused.

    New conversions still create postbacks for a paused template, held the same way. A pause
    by endpoint health is audited and e-mailed here; the publisher's own pause ("manual") is
    audited by its caller, with its actor.
    """
    from publishers.models import CallbackTemplate

    now = now or timezone.now()
    changes: dict = {"paused_at": now, "paused_reason": reason, "is_active": False}
    paused = 0
    with transaction.atomic():
        for pk in template_ids:
            if not CallbackTemplate.objects.filter(pk=pk, paused_at__isnull=True).update(**changes):
                continue
            paused += 1
            held = Postback.objects.filter(template_id=pk, status=Postback.Status.PENDING).update(
                next_attempt_at=HELD_UNTIL
            )
            if reason == CallbackTemplate.PausedReason.MANUAL:
                continue
            _audit_pause(pk, reason=reason, held=held)
            logger.warning("Callback template %s paused (%s)", pk, reason)
            _notify_on_commit(_Notice("paused", pk))
    return paused


def _audit_pause(template_id: int, *, reason: str, held: int) -> None:
    """The pause in the publisher's activity log: the team sees why deliveries stopped."""
    from publishers.audit import Action, audit_record
    from publishers.models import CallbackTemplate

    template = CallbackTemplate.objects.select_related("publisher").get(pk=template_id)
    audit_record(
        publisher=template.publisher,
        actor=None,
        action=Action.ENDPOINT_PAUSED,
        target=template,
        details={
            "reason": reason,
            "consecutive_failures": template.consecutive_failures,
            "failing_since": template.failing_since.isoformat() if template.failing_since else None,
            "held": held,
        },
    )


def endpoint_resume(template_id: int, *, now: datetime | None = None) -> int:
    """Resume a template, whatever paused it: clear its pause and failing streak, and make
    every postback that waited for it due now, oldest first (their due time becomes their
    creation time, the order claims take them in). Returns how many postbacks were released.

    Publishers resume through `publishers.services.callback_template_resume_deliveries`
    (dashboard, API, admin), which records who did it."""
    from publishers.models import CallbackTemplate

    with transaction.atomic():
        CallbackTemplate.objects.filter(pk=template_id).update(
            is_active=True,
            paused_at=None,
            paused_reason="",
            consecutive_failures=0,
            failing_since=None,
            warned_at=None,
        )
        released = Postback.objects.filter(
            template_id=template_id, status=Postback.Status.PENDING
        ).update(next_attempt_at=F("created_at"))
    return released


# --- E-mail -----------------------------------------------------------------------------------


def _notify_on_commit(notice: _Notice) -> None:
    transaction.on_commit(lambda: _notify(notice))


def _notify(notice: _Notice) -> None:
    """E-mail the publisher's owners. A mail failure is logged, never raised: it must not undo
    or repeat the delivery bookkeeping that triggered it."""
    from publishers.models import CallbackTemplate, Membership

    template = CallbackTemplate.objects.select_related("publisher").filter(pk=notice.template_id)
    template = template.first()
    if template is None:
        return
    recipients = sorted(
        {
            email
            for email in Membership.objects.filter(
                publisher_id=template.publisher_id, role=Membership.Role.OWNER
            ).values_list("user__email", flat=True)
            if email
        }
    )
    if not recipients:
        logger.warning("No owner e-mail for publisher %s; not warned", template.publisher_id)
        return
    label = template.name or urlsplit(template.url_template).netloc or template.url_template[:60]
    if notice.kind == "failing":
        days = settings.POSTBACKS_HEALTH_PAUSE_AFTER_SECONDS / 86400
        subject = f"Roundtrip: postbacks to {label} are failing"
        body = (
            f"Hello,\n\nThe last {template.consecutive_failures} postbacks to your callback "
            f"{label} ({template.url_template}) failed, the first of them at "
            f"{template.failing_since:%Y-%m-%d %H:%M} UTC. We keep retrying; if the endpoint "
            f"keeps failing for {days:g} days in all, we pause it and hold its postbacks until "
            f"you re-enable it in your dashboard.\n\nThe delivery log shows each attempt's "
            f"answer.\n"
        )
    else:
        subject = f"Roundtrip: callback {label} paused"
        why = (
            "it answered 410 Gone"
            if template.paused_reason == CallbackTemplate.PausedReason.GONE
            else "its postbacks kept failing"
        )
        body = (
            f"Hello,\n\nWe paused your callback {label} ({template.url_template}) because {why}. "
            f"Postbacks for it are kept, not sent: new conversions still create them. When the "
            f"endpoint works again, resume the callback in your dashboard (or with the API): "
            f"everything that waited is sent, oldest first.\n"
        )
    try:
        send_mail(subject, body, None, recipients)
    except Exception:
        logger.exception("Could not e-mail the owners of publisher %s", template.publisher_id)
