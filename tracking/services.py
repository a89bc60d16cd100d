"""Writes for clicks and conversions."""

import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from redis.exceptions import RedisError

from config.onestatement import Children, insert_together
from config.outage import DATABASE_OUTAGE_ERRORS
from postbacks.models import Postback
from postbacks.services import (
    postbacks_build_for_conversion,
    postbacks_create_for_conversion,
    postbacks_kick_on_commit,
)
from publishers.keys import generate_key
from tracking import caps, clickbuffer, clickinput, intelligence, payouts, policy
from tracking import smart as smart_ads
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    Campaign,
    Click,
    ClickRejection,
    Conversion,
    ConversionRefusal,
    IntakeOutcome,
    TrackingLink,
)
from tracking.partitions import click_first
from tracking.rollups import stats_dirty_marks, stats_mark_conversion
from tracking.smart import SmartClick

logger = logging.getLogger(__name__)


# --- Clicks ---------------------------------------------------------------------------------


def click_rejection_count(*, publisher_id: int, reason: str, now: datetime | None = None) -> None:
    """Count a refused click without a row per click (one upsert per publisher, day, reason).

    During a database outage the count is skipped: a count must never cost the visitor the
    redirect (or the smart-ad unit its blank answer).
    """
    day = timezone.localdate(now or timezone.now())
    try:
        updated = ClickRejection.objects.filter(
            publisher_id=publisher_id, day=day, reason=reason
        ).update(count=F("count") + 1)
        if updated:
            return
        try:
            with transaction.atomic():
                ClickRejection.objects.create(
                    publisher_id=publisher_id, day=day, reason=reason, count=1
                )
        except IntegrityError:
            # Another request created the row between our update and insert.
            ClickRejection.objects.filter(publisher_id=publisher_id, day=day, reason=reason).update(
                count=F("count") + 1
            )
    except DATABASE_OUTAGE_ERRORS:
        logger.warning("Database unavailable; refused click (%s) not counted", reason)


def click_record(
    *,
    link: TrackingLink,
    spid: str,
    placement: str = "",
    creative_code: str = "",
    smart: SmartClick | None = None,
    ip: str | None = None,
    user_agent: str = "",
    referer: str = "",
    cdn_country: str = "",
    cleaned: Iterable[str] = (),
) -> Click:
    """Record one click on `link`. The values must have passed tracking.clickinput (the spid
    accepted, the rest storable); `cleaned` names the fields it had to clean.

    A verified smart-ad click (`smart`) is recorded on its creative's campaign, with its smart
    ad id and keyword. The click is enriched with country, device, OS, browser and the bot
    and unique flags (tracking/intelligence.py) without a database query.
    """
    campaign = link.campaign
    creative = None
    smart_ad_id = keyword = ""
    if smart is not None:
        creative, campaign = smart.creative, smart.creative.campaign
        smart_ad_id, keyword = smart.smart_ad_id, smart.keyword
    elif creative_code:
        # A creative of another campaign is ignored rather than refused: the visitor's
        # redirect matters more than a mislabelled link. So is one that can't be looked up
        # during a database outage (a creative served recently comes from the cache).
        try:
            found = smart_ads.creative_for_click(creative_code)
        except DATABASE_OUTAGE_ERRORS:
            found = None
        creative = found if found is not None and found.campaign_id == link.campaign_id else None
    intel = intelligence.click_intel(ip=ip, user_agent=user_agent, cdn_value=cdn_country)
    click = Click(
        link=link,
        publisher_id=link.publisher_id,
        campaign=campaign,
        creative=creative,
        spid=spid,
        placement=clickinput.normalize_label(
            placement or link.default_placement, clickinput.PLACEMENT_MAX_LENGTH
        ),
        smart_ad_id=smart_ad_id,
        keyword=keyword,
        country=intel.country,
        device=intel.device,
        os=intel.os,
        browser=intel.browser,
        is_bot=intel.is_bot,
        ip=ip,
        user_agent=user_agent[: clickinput.USER_AGENT_MAX_LENGTH],
        referer=referer[: clickinput.REFERER_MAX_LENGTH],
        cleaned_fields=",".join(cleaned),
    )
    if clickbuffer.buffering_enabled():
        try:
            # The buffer's script also decides uniqueness, in the same round trip.
            clickbuffer.click_buffer(
                click, unique_key=intelligence.unique_key(ip, click.user_agent, link.pk)
            )
            return click
        except RedisError:
            logger.warning("Click buffer unavailable; writing click %s directly", click.click_id)
    # Unbuffered (or Redis failing): straight to the database. Either way the visitor gets
    # the redirect.
    click.is_unique = intelligence.click_is_unique(
        ip=ip, user_agent=click.user_agent, link_id=link.pk
    )
    click.save(force_insert=True)
    return click


# --- Conversions ----------------------------------------------------------------------------


class IntakeError(Exception):
    """A conversion that can't be recorded; maps to an HTTP status and an error code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict | None = None,
        *,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.retry_after = retry_after  # seconds, for a 503: the request may be sent again


class CapRefused(Exception):
    """A new conversion over a cap of a campaign whose policy is to reject: rolls the
    conversion's transaction back."""

    def __init__(self, reached: caps.CapReached):
        super().__init__(reached.message)
        self.reached = reached


class NewConversionRefused(Exception):
    """A new conversion refused before its insert (`error`): a repeat of one recorded
    already is still answered as a repeat."""

    def __init__(self, error: "IntakeError"):
        super().__init__(error.message)
        self.error = error


@dataclass
class ConversionOutcome:
    conversion: Conversion
    created: bool
    postbacks: list[Postback] = field(default_factory=list)
    # A recorded conversion whose status this request changed (False for a duplicate).
    changed: bool = False


# Which status changes an advertiser may report for an existing conversion.
ALLOWED_TRANSITIONS = {
    (Conversion.Status.PENDING, Conversion.Status.APPROVED),
    (Conversion.Status.PENDING, Conversion.Status.REJECTED),
    (Conversion.Status.APPROVED, Conversion.Status.REJECTED),
    (Conversion.Status.APPROVED, Conversion.Status.REVERSED),
}

# Reasons with which a guard decided a conversion's status (the advertiser can't overrule
# them by sending another); `cap_reached` decides the payout only, `bot_flagged` (the
# campaign's bot policy) only marks the conversion.
STATUS_GUARD_REASONS = {
    Conversion.Reason.TOO_FAST,
    Conversion.Reason.BOT_CLICK,
    Conversion.Reason.BOT_REJECTED,
}


def conversion_record(
    *,
    advertiser: Advertiser,
    click_id: str,
    event: str = "conversion",
    txn_id: str = "",
    payout: Decimal | None = None,
    currency: str | None = None,
    revenue: Decimal | None = None,
    status: str = Conversion.Status.APPROVED,
    now: datetime | None = None,
    test: bool = False,
) -> ConversionOutcome:
    """Record a conversion and, in the same transaction, its postbacks (sent on commit).

    Idempotent: the same `txn_id` (or, without one, the same click and event) returns the
    conversion already recorded; a new status for it is a status change, which fires the
    templates subscribed to that status. Each request that finds its click leaves an
    `IntakeOutcome` (`test`: sent from the advertiser portal's test button).
    """
    now = now or timezone.now()
    clicks = Click.objects.select_related("campaign", "publisher").filter(
        click_id=click_id, campaign__advertiser=advertiser
    )
    # Looks in the day partitions around the id's own timestamp first (tracking.partitions).
    click = click_first(clicks, click_id)
    if click is None and clickbuffer.buffering_enabled():
        try:
            in_buffer = clickbuffer.click_materialize(click_id)
        except RedisError:
            in_buffer = None  # unknown: the click may wait in the buffer we can't read
        if in_buffer:
            # The click was still in the write buffer (converted within seconds of the click).
            click = click_first(clicks, click_id)
        elif in_buffer is None or clickbuffer.buffer_behind():
            # The click may still wait in a buffer that is down, or fell behind (its copy by
            # id expired): "not found" would be a lie the advertiser acts on.
            raise IntakeError(
                503,
                "click_pipeline_delayed",
                "Click recording is delayed; retry this request unchanged later.",
                retry_after=60,
            )
    if click is None:
        # Another advertiser's click is "not found" too: ids must not leak across tenants.
        raise IntakeError(404, "click_not_found", f"No click with id {click_id!r}.")

    campaign = click.campaign
    amounts = _Amounts(payout=payout, revenue=revenue, currency=currency)

    def refuse(
        reason: str, code: str, message: str, fields: dict | None = None
    ) -> ConversionOutcome:
        """A new conversion the campaign refuses (422, recorded with its reason). Too late or
        too many for a new conversion is not too late for news of one already recorded (a
        reversal can come weeks later): a repeat is answered as a repeat."""
        outcome = _replay_logged(advertiser, click, event, txn_id, status, now, test, amounts)
        if outcome is not None:
            return outcome
        conversion_refusal_record(
            advertiser=advertiser,
            click=click,
            event=event,
            txn_id=txn_id,
            payout=payout,
            currency=currency,
            reason=reason,
            detail=message,
            now=now,
            test=test,
        )
        raise IntakeError(422, code, message, fields)

    if now - click.created_at > campaign.attribution_window:
        return refuse(
            ConversionRefusal.Reason.EXPIRED,
            "attribution_window_expired",
            f"The click is older than the campaign's attribution window "
            f"({campaign.attribution_window}).",
        )
    # Insert first and let the unique constraints spot a repeat: most conversions are new, and
    # this way they cost no read and no savepoint. A repeat (or a concurrent request that
    # recorded the same transaction first) rolls this transaction back and is answered from
    # the recorded conversion.
    try:
        with _intake_transaction(campaign):
            return _conversion_create(
                advertiser=advertiser,
                click=click,
                event=event,
                txn_id=txn_id,
                payout=payout,
                currency=currency,
                revenue=revenue,
                status=status,
                now=now,
                test=test,
            )
    except IntegrityError:
        outcome = _replay_logged(advertiser, click, event, txn_id, status, now, test, amounts)
        if outcome is None:
            raise
        return outcome
    except NewConversionRefused as refused:
        outcome = _replay_logged(advertiser, click, event, txn_id, status, now, test, amounts)
        if outcome is not None:
            return outcome
        raise refused.error from None
    except CapRefused as refused:
        # Checked before the insert, so a repeat of a recorded conversion lands here too.
        reached = refused.reached
    # Only a full cap gets here: the block above returns or raises otherwise.
    return refuse(
        ConversionRefusal.Reason.CAP_REACHED, "cap_reached", reached.message, reached.as_fields()
    )


def _intake_transaction(campaign: Campaign) -> AbstractContextManager:
    """The transaction around a new conversion's write. That write is one statement, a
    transaction of its own: BEGIN and COMMIT around it would be two more round trips. A cap's
    claim (row locks on its counters) must commit with it, though; and inside a caller's
    transaction a savepoint keeps a repeat's IntegrityError from aborting the caller's."""
    if campaign.has_caps or transaction.get_connection().in_atomic_block:
        return transaction.atomic()
    return nullcontext()


def intake_outcome_log(
    *,
    advertiser: Advertiser,
    click: Click,
    event: str,
    txn_id: str,
    result: ConversionOutcome | None = None,
    refusal: ConversionRefusal | None = None,
    test: bool = False,
    now: datetime,
) -> None:
    """One row of the advertiser's conversion log for this request (one narrow insert, in the
    caller's transaction): what `result` was, or the refusal."""
    intake_outcome_row(
        advertiser=advertiser,
        click=click,
        event=event,
        txn_id=txn_id,
        result=result,
        refusal=refusal,
        test=test,
        now=now,
    ).save(force_insert=True)


def intake_outcome_row(
    *,
    advertiser: Advertiser,
    click: Click,
    event: str,
    txn_id: str,
    result: ConversionOutcome | None = None,
    refusal: ConversionRefusal | None = None,
    test: bool = False,
    now: datetime,
) -> IntakeOutcome:
    """The unsaved row `intake_outcome_log` inserts (`result`'s conversion may be unsaved)."""
    row = IntakeOutcome(
        advertiser=advertiser,
        campaign_id=click.campaign_id,
        click_id=click.click_id,
        event=event,
        txn_id=txn_id,
        is_test=test,
        created_at=now,
    )
    if refusal is not None:
        row.outcome = IntakeOutcome.Outcome.REFUSED
        row.reason, row.reason_detail = refusal.reason, refusal.reason_detail
    else:
        conversion = result.conversion
        row.conversion = conversion
        row.status, row.reason = conversion.status, conversion.reason
        row.reason_detail = conversion.reason_detail
        row.outcome = (
            IntakeOutcome.Outcome.ACCEPTED
            if result.created
            else IntakeOutcome.Outcome.STATUS_CHANGED
            if result.changed
            else IntakeOutcome.Outcome.DUPLICATE
        )
    return row


def conversion_refusal_record(
    *,
    advertiser: Advertiser,
    click: Click,
    event: str,
    txn_id: str,
    payout: Decimal | None,
    currency: str | None,
    reason: str,
    detail: str,
    now: datetime,
    test: bool = False,
) -> ConversionRefusal:
    """Record a conversion refused for `reason` (the 422 still goes out): one row per
    conversion tried, a repeat only counts another attempt; each attempt is in the
    advertiser's log (`IntakeOutcome`)."""
    with transaction.atomic():
        refusal = _refusal_upsert(
            advertiser=advertiser,
            click=click,
            event=event,
            txn_id=txn_id,
            payout=payout,
            currency=currency,
            reason=reason,
            detail=detail,
            now=now,
        )
        intake_outcome_log(
            advertiser=advertiser,
            click=click,
            event=event,
            txn_id=txn_id,
            refusal=refusal,
            test=test,
            now=now,
        )
    return refusal


def _refusal_upsert(
    *,
    advertiser: Advertiser,
    click: Click,
    event: str,
    txn_id: str,
    payout: Decimal | None,
    currency: str | None,
    reason: str,
    detail: str,
    now: datetime,
) -> ConversionRefusal:
    key = {"advertiser": advertiser, "click_id": click.click_id, "event": event, "txn_id": txn_id}
    try:
        with transaction.atomic():
            return ConversionRefusal.objects.create(
                **key,
                publisher_id=click.publisher_id,
                campaign_id=click.campaign_id,
                click_created_at=click.created_at,
                spid=click.spid,
                payout=payout,
                currency=currency or "",
                reason=reason,
                reason_detail=detail[:255],
                created_at=now,
                last_refused_at=now,
            )
    except IntegrityError:
        ConversionRefusal.objects.filter(**key).update(
            attempts=F("attempts") + 1, last_refused_at=now, reason=reason
        )
        return ConversionRefusal.objects.get(**key)


def _conversion_create(
    *,
    advertiser: Advertiser,
    click: Click,
    event: str,
    txn_id: str,
    payout: Decimal | None,
    currency: str | None,
    revenue: Decimal | None,
    status: str,
    now: datetime,
    test: bool = False,
) -> ConversionOutcome:
    """A new conversion with its postbacks, rollup marks and log line, written by one
    statement; raises IntegrityError for one that is recorded already. Runs in the caller's
    transaction when there is one (`_intake_transaction`)."""
    campaign = click.campaign
    status, reason, reason_detail = conversion_guard(
        click=click, campaign=campaign, status=status, now=now
    )
    term = (
        payouts.payout_term_in_force(
            campaign_id=campaign.pk, publisher_id=click.publisher_id, at=now
        )
        if campaign.has_payout_terms
        else None
    )
    revenue = campaign.default_revenue if revenue is None else revenue
    currency = currency or campaign.currency
    _check_currency(campaign, currency, term=term)
    amount = payouts.payout_decide(
        campaign=campaign, term=term, revenue=revenue, sent_payout=payout
    )
    if campaign.has_caps and status != Conversion.Status.REJECTED:
        # Rejected conversions are never paid, so they take no place in a cap.
        reached = caps.caps_claim(
            campaign=campaign, publisher_id=click.publisher_id, payout=amount, at=now
        )
        if reached is not None:
            if campaign.cap_policy == Campaign.CapPolicy.REJECT:
                raise CapRefused(reached)
            amount = Decimal(0)
            if not reason:
                reason, reason_detail = Conversion.Reason.CAP_REACHED, reached.message
            else:
                # A guard's reason keeps deciding the status (a bot click stays held); the
                # detail says it is unpaid too.
                reason_detail = f"{reason_detail} Unpaid: {reached.message}"[:255]
    conversion = Conversion(
        click=click,
        publisher_id=click.publisher_id,
        advertiser=advertiser,
        campaign=campaign,
        event=event,
        txn_id=txn_id,
        status=status,
        reason=reason,
        reason_detail=reason_detail,
        payout=amount,
        revenue=revenue,
        currency=currency,
        created_at=now,
        updated_at=now,
        # Report dimensions copied from the click (no join to clicks in reports).
        **Conversion.click_dimensions(click),
    )
    postbacks = postbacks_build_for_conversion(conversion, click=click, now=now, is_new=True)
    outcome = ConversionOutcome(conversion, created=True, postbacks=postbacks)
    log = intake_outcome_row(
        advertiser=advertiser,
        click=click,
        event=event,
        txn_id=txn_id,
        result=outcome,
        test=test,
        now=now,
    )
    # One statement instead of six round trips (config/onestatement.py); the unique
    # constraints still spot a repeat.
    insert_together(
        conversion,
        Children(postbacks, parent_field="conversion"),
        Children(stats_dirty_marks(conversion, click=click), ignore_conflicts=True),
        Children([log], parent_field="conversion"),
    )
    postbacks_kick_on_commit(postbacks, now=now)
    return outcome


def conversion_guard(
    *, click: Click, campaign: Campaign, status: str, now: datetime
) -> tuple[str, str, str]:
    """The status a new conversion gets, and why a guard changed it: (status, reason, detail).

    - Faster than the campaign's `min_seconds_to_convert` after its click: rejected
      (`too_fast`); real buyers take time, click-injection fraud doesn't.
    - On a click flagged as a bot: the campaign's bot policy (tracking/policy.py) — held as
      pending (`bot_click`, the default) until staff review it in admin, flagged with the
      advertiser's status (`bot_flagged`), rejected (`bot_rejected`), or let through.
      Sending it again can't overrule a held or rejected one.
    A conversion the advertiser itself rejects stays rejected without a reason.
    """
    if status == Conversion.Status.REJECTED:
        return status, "", ""
    minimum = campaign.min_seconds_to_convert
    elapsed = (now - click.created_at).total_seconds()
    if minimum and elapsed < minimum:
        return (
            Conversion.Status.REJECTED,
            Conversion.Reason.TOO_FAST,
            f"Converted {max(elapsed, 0):.0f} s after the click; the campaign requires "
            f"at least {minimum} s.",
        )
    if click.is_bot:
        return policy.bot_conversion_verdict(campaign, status)
    return status, "", ""


def conversions_review(
    *, conversion_ids: Iterable[int], approve: bool, now: datetime | None = None
) -> int:
    """Staff decision on conversions a guard held as pending: approve (their approved-status
    callbacks fire now) or reject. Others are left alone. Returns how many changed."""
    now = now or timezone.now()
    changed = 0
    for pk in conversion_ids:
        with transaction.atomic():
            conversion = (
                Conversion.objects.select_for_update(of=("self",))
                .select_related("click__publisher", "click__creative", "campaign")
                .filter(pk=pk, status=Conversion.Status.PENDING, reason__in=STATUS_GUARD_REASONS)
                .first()
            )
            if conversion is None:
                continue
            conversion.status = (
                Conversion.Status.APPROVED if approve else Conversion.Status.REJECTED
            )
            conversion.updated_at = now
            conversion.save(update_fields=["status", "updated_at"])
            postbacks_create_for_conversion(conversion, click=conversion.click, now=now)
            stats_mark_conversion(conversion, click=conversion.click)
            changed += 1
    return changed


def _existing_conversion(
    advertiser: Advertiser, click: Click, event: str, txn_id: str
) -> Conversion | None:
    if txn_id:
        query = Conversion.objects.filter(advertiser=advertiser, txn_id=txn_id)
    else:
        query = Conversion.objects.filter(click=click, event=event, txn_id="")
    return query.select_for_update().first()


@dataclass(frozen=True)
class _Amounts:
    """The money the advertiser sent with a conversion (None: not sent)."""

    payout: Decimal | None = None
    revenue: Decimal | None = None
    currency: str | None = None


def _check_currency(campaign: Campaign, currency: str, *, term: payouts.PayoutTerm | None) -> None:
    """Payout terms and budgets are in the campaign's currency: a conversion in another one
    can't be paid by them (there is no exchange rate to apply)."""
    if currency == campaign.currency:
        return
    if term is not None or (
        campaign.has_caps and campaign.caps.filter(max_payout__isnull=False).exists()
    ):
        raise NewConversionRefused(
            IntakeError(
                422,
                "currency_mismatch",
                f"This campaign pays in {campaign.currency}; send the conversion in "
                f"{campaign.currency} or without a currency.",
                {"currency": [f"Use {campaign.currency}."]},
            )
        )


def _replay_logged(
    advertiser: Advertiser,
    click: Click,
    event: str,
    txn_id: str,
    status: str,
    now: datetime,
    test: bool,
    amounts: "_Amounts",
) -> ConversionOutcome | None:
    """`_replay_recorded`, with its row in the advertiser's log in the same transaction."""
    with transaction.atomic():
        outcome = _replay_recorded(advertiser, click, event, txn_id, status, now, amounts)
        if outcome is not None:
            intake_outcome_log(
                advertiser=advertiser,
                click=click,
                event=event,
                txn_id=txn_id,
                result=outcome,
                test=test,
                now=now,
            )
        return outcome


def _replay_recorded(
    advertiser: Advertiser,
    click: Click,
    event: str,
    txn_id: str,
    status: str,
    now: datetime,
    amounts: _Amounts,
) -> ConversionOutcome | None:
    """The answer for a conversion recorded already (locked while its status may change), or
    None when there is none."""
    with transaction.atomic():
        existing = _existing_conversion(advertiser, click, event, txn_id)
        return None if existing is None else _replay(existing, click, status, now, amounts)


def _corrected(existing: Conversion, amounts: _Amounts) -> bool:
    """Whether the advertiser sent amounts that differ from those recorded (a correction).
    Amounts in another currency than the recorded one are not a correction (and ignored, as a
    repeat's always were): there is no rate to compare them at."""
    if amounts.currency and amounts.currency != existing.currency:
        return False
    return (amounts.revenue is not None and amounts.revenue != existing.revenue) or (
        amounts.payout is not None and amounts.payout != existing.payout
    )


def _payout_recompute(existing: Conversion, amounts: _Amounts) -> None:
    """Decide the payout again, with the amounts sent and the term in force when the
    conversion was recorded (a later term never rewrites it). Unpaid over a cap stays unpaid."""
    if amounts.currency and amounts.currency != existing.currency:
        return
    if amounts.revenue is not None:
        existing.revenue = amounts.revenue
    if existing.reason == Conversion.Reason.CAP_REACHED:
        return
    term = payouts.payout_term_in_force(
        campaign_id=existing.campaign_id, publisher_id=existing.publisher_id, at=existing.created_at
    )
    existing.payout = payouts.payout_decide(
        campaign=existing.campaign,
        term=term,
        revenue=existing.revenue,
        sent_payout=amounts.payout,
        fallback=existing.payout,
    )


def _replay(
    existing: Conversion, click: Click, status: str, now: datetime, amounts: _Amounts
) -> ConversionOutcome:
    if existing.click_id != click.pk:
        raise IntakeError(
            409,
            "txn_id_conflict",
            f"Transaction {existing.txn_id!r} was already recorded for another click.",
        )
    if existing.reason in STATUS_GUARD_REASONS and status != Conversion.Status.REJECTED:
        # A guard decided this conversion's status; sending it again can't overrule that.
        status = existing.status
    corrected = _corrected(existing, amounts)
    if status == existing.status and not corrected:
        return ConversionOutcome(existing, created=False, postbacks=list(existing.postbacks.all()))
    if status != existing.status and (existing.status, status) not in ALLOWED_TRANSITIONS:
        raise IntakeError(
            409,
            "status_change_not_allowed",
            f"A conversion can't go from {existing.status} to {status}.",
        )
    status_changed = status != existing.status
    old_payout, old_revenue = existing.payout, existing.revenue
    _payout_recompute(existing, amounts)
    if not status_changed and (existing.payout, existing.revenue) == (old_payout, old_revenue):
        # Amounts the terms overrule (a payout sent for a campaign with a term): no change.
        return ConversionOutcome(existing, created=False, postbacks=list(existing.postbacks.all()))
    existing.status = status
    existing.updated_at = now
    existing.save(update_fields=["status", "payout", "revenue", "updated_at"])
    if status_changed:
        postbacks_create_for_conversion(existing, click=click, now=now)
    elif existing.payout != old_payout:
        # Same status, new payout: the status's postbacks go out again with it (new event
        # ids), so the publisher's books follow the correction.
        revision = 1 + max(existing.postbacks.values_list("revision", flat=True), default=0)
        postbacks_create_for_conversion(existing, click=click, now=now, revision=revision)
    stats_mark_conversion(existing, click=click)
    return ConversionOutcome(
        existing, created=False, postbacks=list(existing.postbacks.all()), changed=True
    )


# --- Advertiser credentials -----------------------------------------------------------------


def advertiser_key_create(
    *, advertiser: Advertiser, kind: str = "api", name: str = ""
) -> tuple[AdvertiserAPIKey, str]:
    """Create an API key (kind "api") or GET postback token (kind "token"); returns the row
    and the plaintext, which is shown once and never stored."""
    generated = generate_key(AdvertiserAPIKey.PREFIXES[kind])
    key = AdvertiserAPIKey.objects.create(
        advertiser=advertiser,
        kind=kind,
        name=name,
        lookup=generated.lookup,
        digest=generated.digest,
    )
    return key, generated.plaintext
