"""Publisher sign-up: the public form, the e-mailed verification link, staff's decision.

1. `signup_request`: someone types an address and a publisher name. Whatever the address, the
   page answers the same and one e-mail goes to it: a signed link that works
   `PUBLISHER_SIGNUP_LINK_HOURS` when the address is free, or a note that it already has an
   account (which may be waiting for approval) when it is not. So the form never tells
   anyone whether an address has an account, and nothing is stored for an address nobody
   verified. The link carries the address and the name, signed (`django.core.signing`) and
   time-stamped: it can't be forged, edited or used after it expires.
2. `signup_complete`: the link's holder chooses a password and says where they will promote;
   the account (the address is its username, as for invitations), the pending publisher, its
   owner membership and the `SignupApplication` are made in one transaction. A second use of
   the link finds the address taken and makes nothing.
3. `signup_approve` / `signup_reject` (the admin's actions): the publisher becomes active (its
   owner signs in and invites the team) or rejected, the applicant is told by e-mail, and the
   publisher's trail records who decided.

Sign-up requests are throttled per client IP address and per e-mail address
(`PUBLISHER_SIGNUP_RATE_LIMIT`), in the cache like the API's rate limit.
"""

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework import throttling

from config.client_ip import client_ip
from publishers.audit import Action, Actor, audit_record
from publishers.models import AuditEvent, Membership, Publisher, SignupApplication

logger = logging.getLogger(__name__)

# Separates these signatures from every other use of SECRET_KEY.
LINK_SALT = "publishers.signup.verify"
Via = AuditEvent.Via
# Longer than any link we make (an address, a name, a signature): refused before checking.
MAX_TOKEN_LENGTH = 1000


class SignupError(ValueError):
    """A verification link or a sign-up that can't go on; `code` names why, for the page:
    "invalid" (not a link we made, or edited), "expired", "taken" (the address has an
    account now: the link was used, or another way in was)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SignupClaim:
    """What a verification link vouches for: the address it was sent to, the name typed."""

    email: str
    name: str


def signup_link_token(claim: SignupClaim) -> str:
    """The signed, time-stamped token of a verification link (URL-safe)."""
    return signing.dumps({"e": claim.email, "n": claim.name}, salt=LINK_SALT, compress=True)


def signup_claim_read(token: str) -> SignupClaim:
    """The claim a link's token carries, if we signed it and it has not expired; else
    SignupError "invalid" or "expired"."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise SignupError("invalid", "This link is not one we sent.")
    try:
        data = signing.loads(
            token, salt=LINK_SALT, max_age=settings.PUBLISHER_SIGNUP_LINK_HOURS * 3600
        )
    except signing.SignatureExpired:
        raise SignupError("expired", "This link has expired.") from None
    except (signing.BadSignature, ValueError):
        raise SignupError("invalid", "This link is not one we sent.") from None
    if not isinstance(data, dict) or not isinstance(data.get("e"), str):
        raise SignupError("invalid", "This link is not one we sent.")
    return SignupClaim(email=data["e"], name=str(data.get("n", ""))[:200])


class SignupRateThrottle(throttling.SimpleRateThrottle):
    """Sign-up requests per period (`PUBLISHER_SIGNUP_RATE_LIMIT`) for one caller: a client IP
    address or an e-mail address, the two things sign-up can be abused by (as django-axes
    locks sign-ins per IP address and per account). The count lives in the cache (Redis), so
    every web process shares it."""

    scope = "publisher_signup"

    def __init__(self, ident: str) -> None:
        self.ident = ident
        # Read per request, so an operator's change and a test's override both apply.
        self.rate = settings.PUBLISHER_SIGNUP_RATE_LIMIT
        self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.ident}


def signup_throttle_wait(request: HttpRequest, *, email: str = "") -> int | None:
    """Count one sign-up request from this client's IP address, or for `email` when given;
    returns the seconds to wait when it is over its limit, else None. An address is counted
    hashed (no address in the cache's keys)."""
    if email:
        ident = "email:" + hashlib.sha256(email.lower().encode()).hexdigest()
    else:
        ident = f"ip:{client_ip(request)}"
    throttle = SignupRateThrottle(ident)
    try:
        if throttle.allow_request(request, None):
            return None
    except RedisError:
        # A rate limit protects the service; it is not the service.
        logger.warning("Sign-up rate limiter unavailable (Redis); request not throttled")
        return None
    return max(1, int(throttle.wait() or 1))


def signup_address_taken(email: str) -> bool:
    """Whether an account has this address, as its e-mail or as its username (sign-up makes
    the address the username, so either would collide)."""
    return (
        get_user_model().objects.filter(Q(email__iexact=email) | Q(username__iexact=email)).exists()
    )


def signup_request(*, email: str, name: str) -> None:
    """Send the one e-mail a sign-up request gets: a verification link when the address is
    free, else a note that it already has an account. The caller answers the same either way
    (the form must not tell who has an account)."""
    email = get_user_model().objects.normalize_email(email.strip())
    if signup_address_taken(email):
        _mail(email, "registration/signup_exists_email.txt", "Your Roundtrip sign-up", {})
        return
    token = signup_link_token(SignupClaim(email=email, name=name.strip()))
    _mail(
        email,
        "registration/signup_verify_email.txt",
        "Confirm your e-mail address to sign up on Roundtrip",
        {
            "name": name.strip(),
            "url": settings.SITE_URL + reverse("signup_verify", kwargs={"token": token}),
            "hours": settings.PUBLISHER_SIGNUP_LINK_HOURS,
        },
    )


def signup_complete(
    *,
    claim: SignupClaim,
    password: str,
    website: str,
    about: str = "",
    actor: Actor | None = None,
    now: datetime | None = None,
) -> Membership:
    """Make the account, the pending publisher, its owner membership and the application, in
    one transaction. Raises SignupError "taken" when the address has an account by now."""
    now = now or timezone.now()
    if signup_address_taken(claim.email):
        raise SignupError("taken", "This address already has an account.")
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_user(
                username=claim.email, email=claim.email, password=password
            )
            publisher = Publisher.objects.create(
                name=claim.name, status=Publisher.Status.PENDING, created_at=now
            )
            membership = Membership.objects.create(
                publisher=publisher, user=user, role=Membership.Role.OWNER, created_at=now
            )
            application = SignupApplication.objects.create(
                publisher=publisher,
                email=claim.email,
                website=website,
                about=about,
                created_at=now,
            )
            audit_record(
                publisher=publisher,
                actor=replace(actor, user=user) if actor else Actor(Via.DASHBOARD, user=user),
                action=Action.SIGNED_UP,
                target=publisher,
                details={"email": claim.email, "website": application.website},
            )
    except IntegrityError:
        # The same link opened twice at once: the username (or the pending application)
        # was taken in between.
        raise SignupError("taken", "This address already has an account.") from None
    return membership


def signup_approve(
    *, application: SignupApplication, actor: Actor | None = None, now: datetime | None = None
) -> bool:
    """Approve a pending (or earlier rejected) application: the publisher becomes active and
    its owner is told to sign in and invite the team. Returns whether this call decided it
    (approving twice e-mails once)."""
    return _decide(
        application,
        status=SignupApplication.Status.APPROVED,
        publisher_status=Publisher.Status.ACTIVE,
        action=Action.SIGNUP_APPROVED,
        from_statuses=[SignupApplication.Status.PENDING, SignupApplication.Status.REJECTED],
        actor=actor,
        now=now,
    )


def signup_reject(
    *, application: SignupApplication, actor: Actor | None = None, now: datetime | None = None
) -> bool:
    """Reject a pending application: the publisher stays shut out, and the applicant is told
    (with the application's `reason`, when staff wrote one). Returns whether this call
    decided it."""
    return _decide(
        application,
        status=SignupApplication.Status.REJECTED,
        publisher_status=Publisher.Status.REJECTED,
        action=Action.SIGNUP_REJECTED,
        from_statuses=[SignupApplication.Status.PENDING],
        actor=actor,
        now=now,
    )


def _decide(
    application: SignupApplication,
    *,
    status: str,
    publisher_status: str,
    action: str,
    from_statuses: list[str],
    actor: Actor | None,
    now: datetime | None,
) -> bool:
    now = now or timezone.now()
    decider = actor.user if actor and actor.user and actor.user.is_authenticated else None
    with transaction.atomic():
        # The claim: of two staff deciding at once, one wins and one e-mail goes out.
        claimed = SignupApplication.objects.filter(
            pk=application.pk, status__in=from_statuses
        ).update(status=status, decided_at=now, decided_by=decider)
        if claimed != 1:
            return False
        Publisher.objects.filter(pk=application.publisher_id).update(status=publisher_status)
        application.refresh_from_db()
        audit_record(
            publisher=application.publisher,
            actor=actor,
            action=action,
            target=application.publisher,
            details={"email": application.email, "reason": application.reason}
            if status == SignupApplication.Status.REJECTED
            else {"email": application.email},
        )
        transaction.on_commit(lambda: _send_decision(application))
    return True


def _send_decision(application: SignupApplication) -> None:
    approved = application.status == SignupApplication.Status.APPROVED
    # One line, whatever staff may have typed into the name since (a header can't hold more).
    name = " ".join(application.publisher.name.split())
    _mail(
        application.email,
        f"registration/signup_{'approved' if approved else 'rejected'}_email.txt",
        f"{name} is approved on Roundtrip" if approved else f"Your Roundtrip sign-up for {name}",
        {"application": application, "publisher": application.publisher},
    )


def _mail(to: str, template: str, subject: str, context: dict) -> None:
    """One sign-up e-mail through the configured backend (as invitations are sent)."""
    context = {
        **context,
        "email": to,
        "login_url": settings.SITE_URL + reverse("login"),
        "reset_url": settings.SITE_URL + reverse("password_reset"),
    }
    send_mail(
        subject=subject,
        message=render_to_string(template, context),
        from_email=None,
        recipient_list=[to],
    )
