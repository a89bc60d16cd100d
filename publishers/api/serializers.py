"""Serializers of the publisher API: query parameters in, representations out.

Output serializers read model rows prepared by the views (select_related / prefetch), so
rendering a page never queries per row.
"""

from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.hostile import validate_day
from postbacks.fairness import WAIT_REASONS
from postbacks.models import Postback, PostbackAttempt
from postbacks.values import format_amount
from postbacks.waits import waiting_hosts
from publishers.models import CallbackTemplate, Publisher
from tracking.models import Campaign, Conversion
from tracking.selectors import DEFINITIONS, REPORT_FILTERS, REPORT_GROUPS, REPORT_TIMEZONES
from tracking.selectors.visible import campaigns_for_publisher

MAX_PAGE_SIZE = 1000
EVENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$"


class Day(serializers.DateField):
    """A date parameter, within the bounds every date input has (config/hostile.py)."""

    default_validators = [validate_day]


class Moment(serializers.DateTimeField):
    """A date-time parameter, within the same bounds."""

    default_validators = [validate_day]


@extend_schema_field({"type": "string", "pattern": r"^\d+\.\d{2,6}$", "example": "2.50"})
class MoneyField(serializers.Field):
    """An amount as a decimal string with at least two decimals ("2.50"), as in postbacks."""

    def to_representation(self, value: Decimal) -> str:
        return format_amount(value)


class TimeZoneField(serializers.CharField):
    """An IANA time zone name (`Asia/Kolkata`); a plain string in the schema, not an enum of
    the whole tz database."""

    default_error_messages = {"unknown": "Not an IANA time zone name, e.g. Europe/Berlin."}

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("default", "UTC")
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("help_text", "Any IANA time zone name, e.g. `Asia/Kolkata`.")
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> str:
        name = super().to_internal_value(data)
        if name not in REPORT_TIMEZONES:
            self.fail("unknown")
        return name


class RefSerializer(serializers.Serializer):
    """A campaign or creative: public id and name."""

    id = serializers.CharField(source="public_id")
    name = serializers.CharField()


# --- Query parameters -----------------------------------------------------------------------


class PageQuerySerializer(serializers.Serializer):
    cursor = serializers.CharField(
        required=False, max_length=200, help_text="`next_cursor` of the previous page."
    )
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_PAGE_SIZE, default=100
    )


class ConversionQuerySerializer(PageQuerySerializer):
    # Not trimmed: a spid is matched exactly as it was sent, spaces included.
    spid = serializers.CharField(required=False, max_length=255, trim_whitespace=False)
    click_id = serializers.CharField(required=False, max_length=32)
    status = serializers.ChoiceField(choices=Conversion.Status.choices, required=False)
    event = serializers.CharField(required=False, max_length=50)
    updated_since = Moment(
        required=False,
        help_text="Only conversions created or changed at or after this instant (ISO 8601).",
    )


class PostbackQuerySerializer(PageQuerySerializer):
    status = serializers.ChoiceField(choices=Postback.Status.choices, required=False)
    conversion_id = serializers.CharField(required=False, max_length=40)
    created_from = Moment(required=False, help_text="Created at or after.")
    created_to = Moment(required=False, help_text="Created before.")


class TraceQuerySerializer(serializers.Serializer):
    spid = serializers.CharField(
        max_length=255,
        trim_whitespace=False,
        help_text="The spid exactly as you sent it, spaces included.",
    )


class StatsQuerySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=sorted(REPORT_GROUPS), default="day")
    # `from` is a Python keyword: the field is declared below under its wire name.
    to = Day(help_text="Last day, inclusive (in `tz`).")
    tz = TimeZoneField()
    attribution = serializers.ChoiceField(choices=["conversion", "click"], default="conversion")
    campaign = serializers.CharField(required=False, max_length=32)
    country = serializers.CharField(required=False, max_length=2)
    placement = serializers.CharField(required=False, max_length=100)
    creative = serializers.CharField(required=False, max_length=32)
    smart_ad = serializers.CharField(required=False, max_length=32)
    keyword = serializers.CharField(required=False, max_length=100)

    MAX_DAYS = 366

    def get_fields(self) -> dict:
        fields = super().get_fields()
        fields["from"] = Day(help_text="First day (in `tz`).")
        return fields

    def validate(self, attrs: dict) -> dict:
        if attrs["to"] < attrs["from"]:
            raise serializers.ValidationError({"to": ["Must not be before `from`."]})
        if (attrs["to"] - attrs["from"]).days >= self.MAX_DAYS:
            raise serializers.ValidationError({"to": [f"At most {self.MAX_DAYS} days."]})
        attrs["filters"] = {name: attrs.pop(name) for name in REPORT_FILTERS if name in attrs}
        return attrs


class ReconciliationQuerySerializer(serializers.Serializer):
    date = Day(help_text="The day, YYYY-MM-DD (in `tz`).")
    tz = TimeZoneField()


# --- Conversions and journeys ---------------------------------------------------------------


class AttemptSerializer(serializers.ModelSerializer):
    # Declared, not derived: a derived integer field's bounds come from the database backend,
    # and the committed schema must not depend on which one generated it.
    number = serializers.IntegerField(min_value=1)
    duration_ms = serializers.IntegerField(min_value=0)
    status_code = serializers.IntegerField(allow_null=True)

    class Meta:
        model = PostbackAttempt
        fields = [
            "number",
            "started_at",
            "duration_ms",
            "url",
            "status_code",
            "outcome",
            "error_kind",
            "error",
            "response_excerpt",
            "resolved_ip",
        ]


class PostbackSummarySerializer(serializers.ModelSerializer):
    """A postback as listed under its conversion."""

    callback_id = serializers.CharField(source="template.public_id", default=None, allow_null=True)
    # Declared for a backend-independent schema (see AttemptSerializer).
    attempts = serializers.IntegerField(min_value=0)
    last_status_code = serializers.IntegerField(allow_null=True)
    held = serializers.SerializerMethodField(
        help_text='Why this pending postback waits for its callback to be resumed: "gone" '
        '(410), "failing" or "manual"; null when it is not held.'
    )

    waiting_for_endpoint = serializers.SerializerMethodField(
        help_text="Why this pending postback is not sent now although it may be due: its "
        'endpoint is "busy" (at its limit of requests at once), "hanging" (a request has been '
        'waiting for its answer) or "breaker" (not answering: one test request at a time). '
        "It goes out, oldest first, as soon as the endpoint has room; other endpoints are not "
        "slowed down. Null when its endpoint has room."
    )

    class Meta:
        model = Postback
        fields = [
            "event_id",
            "callback_id",
            "conversion_status",
            "status",
            "held",
            "waiting_for_endpoint",
            "attempts",
            "last_status_code",
            "last_error",
            "next_attempt_at",
            "created_at",
            "delivered_at",
        ]

    @extend_schema_field(
        serializers.ChoiceField(choices=CallbackTemplate.PausedReason.values, allow_null=True)
    )
    def get_held(self, postback: Postback) -> str | None:
        template = postback.template
        if postback.status != Postback.Status.PENDING or template is None:
            return None
        return template.paused_reason or None

    @extend_schema_field(serializers.ChoiceField(choices=sorted(WAIT_REASONS), allow_null=True))
    def get_waiting_for_endpoint(self, postback: Postback) -> str | None:
        if postback.status != Postback.Status.PENDING or self.get_held(postback):
            return None  # a held postback waits for its callback's resume, not its endpoint
        # Read once per response (one Redis script), shared by every row and nested list.
        context = self.context
        if "waiting_hosts" not in context:
            context["waiting_hosts"] = waiting_hosts()
        return context["waiting_hosts"].get(postback.host)


class PostbackWithAttemptsSerializer(PostbackSummarySerializer):
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta(PostbackSummarySerializer.Meta):
        fields = [*PostbackSummarySerializer.Meta.fields, "attempt_log"]


class PostbackSerializer(PostbackSummarySerializer):
    """A postback in the delivery log, with its conversion, frozen URL and (a JSON webhook)
    frozen body."""

    conversion_id = serializers.CharField(source="conversion.public_id")
    click_id = serializers.CharField(source="conversion.click.click_id")
    spid = serializers.CharField(source="conversion.click.spid")
    method = serializers.ChoiceField(
        choices=CallbackTemplate.Method.choices,
        read_only=True,
        help_text='"POST" for a JSON webhook, else "GET".',
    )
    body = serializers.SerializerMethodField(
        help_text="A JSON webhook's body, the exact bytes every attempt sends (a re-send too); "
        "null for a GET."
    )

    class Meta(PostbackSummarySerializer.Meta):
        fields = [
            "event_id",
            "conversion_id",
            "click_id",
            "spid",
            "method",
            "url",
            "body",
            *PostbackSummarySerializer.Meta.fields[1:],
        ]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_body(self, postback: Postback) -> str | None:
        return postback.body or None


class PostbackDetailSerializer(PostbackSerializer):
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta(PostbackSerializer.Meta):
        fields = [*PostbackSerializer.Meta.fields, "attempt_log"]


POSTBACK_STATUSES = ["none", "pending", "failed", "succeeded"]


def postback_status_summary(postbacks: "list[Postback]") -> str:
    """One word for all postbacks of a conversion: "failed" when any failed, else "pending"
    when any is still waiting, "succeeded" when all arrived, "none" without any."""
    statuses = {postback.status for postback in postbacks}
    for status in ("failed", "pending", "succeeded"):
        if status in statuses:
            return status
    return "none"


class ConversionSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    click_id = serializers.CharField(source="click.click_id")
    spid = serializers.CharField(source="click.spid")
    campaign = RefSerializer()
    payout = MoneyField()
    postback_status = serializers.SerializerMethodField()
    postbacks = PostbackSummarySerializer(many=True)

    class Meta:
        model = Conversion
        fields = [
            "id",
            "click_id",
            "spid",
            "event",
            "txn_id",
            "status",
            "reason",
            "reason_detail",
            "payout",
            "currency",
            "campaign",
            "created_at",
            "updated_at",
            "postback_status",
            "postbacks",
        ]
        extra_kwargs = {
            "reason": {
                "help_text": "Why a guard or the campaign's bot policy set the status: "
                "`too_fast` (rejected), `bot_click` (held as pending for review), "
                "`bot_flagged` (the advertiser's status, marked) or `bot_rejected`; "
                "`cap_reached` when the conversion came over a cap of a campaign that accepts "
                "those unpaid (payout 0); empty when none of these applies."
            },
            "reason_detail": {"help_text": "The reason as a sentence (names the cap); or empty."},
        }

    @extend_schema_field(serializers.ChoiceField(choices=POSTBACK_STATUSES))
    def get_postback_status(self, conversion: Conversion) -> str:
        return postback_status_summary(conversion.postbacks.all())


class ConversionPageSerializer(serializers.Serializer):
    results = ConversionSerializer(many=True)
    next_cursor = serializers.CharField(
        allow_null=True,
        help_text="Pass as `cursor` to continue (also to poll later); null only when nothing "
        "was found and no cursor was given.",
    )
    has_more = serializers.BooleanField()


class PostbackPageSerializer(serializers.Serializer):
    results = PostbackSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


class JourneyConversionSerializer(ConversionSerializer):
    """A conversion with each postback's attempts (postbacks come from the trace)."""

    postbacks = serializers.SerializerMethodField()

    @extend_schema_field(PostbackWithAttemptsSerializer(many=True))
    def get_postbacks(self, conversion: Conversion) -> list:
        postbacks = self.context["postbacks"].get(conversion.pk, [])
        return PostbackWithAttemptsSerializer(postbacks, many=True).data

    def get_postback_status(self, conversion: Conversion) -> str:
        return postback_status_summary(self.context["postbacks"].get(conversion.pk, []))


class ClickJourneySerializer(serializers.Serializer):
    click_id = serializers.CharField()
    spid = serializers.CharField()
    campaign = RefSerializer()
    creative = RefSerializer(allow_null=True)
    placement = serializers.CharField()
    smart_ad_id = serializers.CharField()
    keyword = serializers.CharField()
    country = serializers.CharField()
    device = serializers.CharField()
    os = serializers.CharField()
    browser = serializers.CharField()
    created_at = serializers.DateTimeField()
    conversions = serializers.SerializerMethodField()

    @extend_schema_field(JourneyConversionSerializer(many=True))
    def get_conversions(self, click) -> list:
        conversions = [c for c in self.context["conversions"] if c.click_id == click.pk]
        return JourneyConversionSerializer(conversions, many=True, context=self.context).data


class TraceSerializer(serializers.Serializer):
    spid = serializers.CharField()
    clicks = ClickJourneySerializer(many=True)
    truncated = serializers.BooleanField(help_text="More clicks carry this spid than listed.")


# --- Postback actions -----------------------------------------------------------------------


class RetryResultSerializer(serializers.Serializer):
    queued = serializers.IntegerField()
    postback = PostbackSerializer()


class ReplayRequestSerializer(serializers.Serializer):
    status = serializers.ListField(
        child=serializers.ChoiceField(choices=["failed", "pending", "succeeded"]),
        default=["failed"],
        min_length=1,
        max_length=3,
        help_text='Postback statuses to send again; "succeeded" re-sends delivered ones (same '
        "event ids).",
    )
    callback_id = serializers.CharField(
        required=False, max_length=32, help_text="Only postbacks of this callback."
    )

    def get_fields(self) -> dict:
        fields = super().get_fields()
        # Wire names `from`/`to`: a time range on the postbacks' creation time.
        fields["from"] = Moment(help_text="Created at or after (ISO 8601).")
        fields["to"] = Moment(help_text="Created before (ISO 8601).")
        return fields

    def validate(self, attrs: dict) -> dict:
        if attrs["to"] <= attrs["from"]:
            raise serializers.ValidationError({"to": ["Must be after `from`."]})
        return attrs


class ReplayResultSerializer(serializers.Serializer):
    matched = serializers.IntegerField(help_text="Postbacks in the range with those statuses.")
    queued = serializers.IntegerField(help_text="Made due now and sent to the workers.")
    remaining = serializers.IntegerField(
        help_text="Matched but left for another request (over POSTBACKS_REPLAY_MAX, or in flight)."
    )


# --- Callbacks ------------------------------------------------------------------------------


class CallbackSerializer(serializers.ModelSerializer):
    """A callback template. Validation is the model's `clean()`, as in the dashboard."""

    id = serializers.CharField(source="public_id", read_only=True)
    events = serializers.ListField(
        child=serializers.RegexField(EVENT_NAME, max_length=50),
        required=False,
        max_length=50,
        help_text="Event names that fire it; empty for every event.",
    )
    statuses = serializers.ListField(
        child=serializers.ChoiceField(choices=Conversion.Status.choices),
        required=False,
        min_length=1,
        help_text='Conversion statuses that fire it; default ["approved"].',
    )
    campaign = serializers.SlugRelatedField(
        slug_field="public_id",
        queryset=Campaign.objects.none(),
        required=False,
        allow_null=True,
        help_text="Only this campaign's conversions (a campaign you have a link for); null "
        "for all.",
    )

    paused_reason = serializers.ChoiceField(
        choices=[("", "Not paused"), *CallbackTemplate.PausedReason.choices],
        read_only=True,
        help_text='Why: "gone" (410), "failing" or "manual" (you paused it); "" when not paused.',
    )

    class Meta:
        model = CallbackTemplate
        fields = [
            "id",
            "name",
            "url_template",
            "method",
            "events",
            "statuses",
            "campaign",
            "is_active",
            "paused_at",
            "paused_reason",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["paused_at", "paused_reason", "created_at", "updated_at"]
        extra_kwargs = {
            "paused_at": {
                "help_text": "Set while deliveries to this endpoint are paused (410 Gone, "
                "failing for days, or is_active set to false): its postbacks, those of new "
                "conversions too, are held until you resume it."
            },
            "method": {
                "help_text": '"GET" (default): the URL with the placeholders filled in, signed '
                'with your publisher secret. "POST": a JSON webhook to the URL (Standard '
                "Webhooks headers webhook-id, webhook-timestamp, webhook-signature), signed with "
                "the callback's own secret, which owners reveal and rotate in the dashboard; "
                "its body carries every placeholder's value (docs/delivery.md, JSON webhooks)."
            },
            "is_active": {
                "help_text": "false pauses the callback (its postbacks are held, not dropped); "
                "true resumes it, whatever paused it, and sends what it held, oldest first."
            },
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        publisher: Publisher | None = self.context.get("publisher")
        if publisher is not None:
            # Only campaigns the publisher runs: another's campaign id is "does not exist".
            self.fields["campaign"].queryset = campaigns_for_publisher(publisher)


def django_errors_to_drf(exc: DjangoValidationError) -> serializers.ValidationError:
    """A model's ValidationError as DRF's, keeping the per-field messages."""
    if hasattr(exc, "error_dict"):
        return serializers.ValidationError(exc.message_dict)
    return serializers.ValidationError({"non_field_errors": exc.messages})


class CallbackTestRequestSerializer(serializers.Serializer):
    sample_values = serializers.DictField(
        child=serializers.CharField(max_length=255, allow_blank=True),
        required=False,
        help_text='Placeholder values to use instead of the samples, e.g. {"spid": "abc"}.',
    )


# --- Reports --------------------------------------------------------------------------------


class CurrencyAmountSerializer(serializers.Serializer):
    currency = serializers.CharField(help_text="ISO 4217 code, e.g. USD.")
    amount = MoneyField()


class StatsRowSerializer(serializers.Serializer):
    key = serializers.CharField(
        help_text="The group: a date, a campaign or creative id, or the value as recorded."
    )
    label = serializers.CharField()
    impressions = serializers.IntegerField(
        allow_null=True,
        help_text="Smart-ad impressions (a bot's view is not one); null where the report can't know them (a time zone "
        "other than UTC, a placement or keyword grouping or filter).",
    )
    clicks = serializers.IntegerField(help_text=DEFINITIONS["clicks"])
    ctr = serializers.FloatField(
        allow_null=True,
        help_text="Smart-ad clicks per 100 impressions; null without impressions, or where "
        "the row's clicks aren't all from smart ads (group by or filter on smart_ad).",
    )
    unique_clicks = serializers.IntegerField(help_text=DEFINITIONS["unique_clicks"])
    bot_clicks = serializers.IntegerField(help_text=DEFINITIONS["bot_clicks"])
    conversions = serializers.IntegerField(help_text=DEFINITIONS["conversions"])
    conversion_rate = serializers.FloatField(
        allow_null=True, help_text="Conversions per 100 clicks."
    )
    payouts = CurrencyAmountSerializer(
        many=True,
        help_text="Payout of approved conversions, one entry per currency (by code): amounts "
        "in different currencies are never added up. Empty without conversions.",
    )


class RefusedClicksSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="The reason's code, e.g. `spid_too_long`.")
    label = serializers.CharField(help_text="The reason as a sentence.")
    clicks = serializers.IntegerField()


class ConversionOutcomeSerializer(serializers.Serializer):
    status = serializers.CharField()
    reason = serializers.CharField(help_text="The reason's code; empty when none was recorded.")
    label = serializers.CharField(help_text="The reason as a sentence; empty without one.")
    count = serializers.IntegerField()


class StatsSerializer(serializers.Serializer):
    group_by = serializers.CharField()
    tz = serializers.CharField()
    attribution = serializers.CharField()
    source = serializers.ChoiceField(choices=["rollup", "pairs", "raw"])
    truncated = serializers.BooleanField()
    currencies = serializers.ListField(
        child=serializers.CharField(), help_text="Every currency paid out in the report."
    )
    rows = StatsRowSerializer(many=True)
    totals = StatsRowSerializer()
    refused_clicks = RefusedClicksSerializer(
        many=True,
        help_text=DEFINITIONS["refused_clicks"] + " Counted per UTC day, from `from` to `to`; "
        "not narrowed by the filters.",
    )
    conversion_outcomes = ConversionOutcomeSerializer(
        many=True,
        help_text=DEFINITIONS["conversion_outcomes"] + " Not narrowed by the filters.",
    )

    def get_fields(self) -> dict:
        fields = super().get_fields()
        fields["from"] = Day()
        fields["to"] = Day()
        return fields


class ReconciliationRowSerializer(serializers.Serializer):
    conversion_id = serializers.CharField()
    click_id = serializers.CharField()
    spid = serializers.CharField()
    campaign_id = serializers.CharField()
    event = serializers.CharField()
    txn_id = serializers.CharField()
    status = serializers.CharField()
    payout = serializers.CharField()
    currency = serializers.CharField()
    created_at = serializers.CharField()
    updated_at = serializers.CharField()
    event_id = serializers.CharField(help_text='The postback\'s event id; "" without postback.')
    postback_conversion_status = serializers.CharField()
    delivery_status = serializers.CharField(help_text="succeeded, pending, failed or none.")
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    delivered_at = serializers.CharField(allow_null=True)


class ReconciliationSerializer(serializers.Serializer):
    publisher_id = serializers.CharField()
    date = serializers.DateField()
    tz = serializers.CharField()
    generated_at = serializers.DateTimeField()
    count = serializers.IntegerField()
    rows = ReconciliationRowSerializer(many=True)


# --- Payout terms and caps ------------------------------------------------------------------


class PayoutTermOutSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=["fixed", "revshare", "default"],
        help_text="`fixed`: `amount` per conversion; `revshare`: `percent` of each "
        "conversion's revenue; `default`: no terms, the campaign's `default_payout` (or what "
        "the advertiser reports).",
    )
    amount = serializers.CharField(allow_null=True, help_text="Fixed terms, in `currency`.")
    percent = serializers.CharField(allow_null=True, help_text="Revenue share, in percent.")
    effective_from = serializers.DateTimeField(
        allow_null=True, help_text="When these terms started; null for the default."
    )
    default_payout = serializers.CharField(help_text="The campaign's default, in `currency`.")


class CapStatusSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(
        choices=["campaign", "publisher"],
        help_text="`campaign`: counts every publisher's conversions; `publisher`: only yours.",
    )
    period = serializers.ChoiceField(choices=["daily", "monthly", "total"])
    period_start = serializers.DateField(
        allow_null=True,
        help_text="The current period's first day in the campaign's `time_zone`; null for "
        "total caps.",
    )
    max_conversions = serializers.IntegerField(allow_null=True, help_text="Null: no limit.")
    max_payout = serializers.CharField(
        allow_null=True, help_text="Payout budget in `currency`; null: none."
    )
    conversions = serializers.IntegerField(help_text="Conversions paid in the current period.")
    payout = serializers.CharField(help_text="Payout used in the current period, in `currency`.")
    reached = serializers.BooleanField()


class OfferTermsSerializer(serializers.Serializer):
    campaign = RefSerializer()
    currency = serializers.CharField()
    time_zone = serializers.CharField(help_text="Where daily and monthly caps start.")
    cap_policy = serializers.ChoiceField(
        choices=["reject", "accept_unpaid"],
        help_text="Over a cap: `reject` (the advertiser is answered 422 `cap_reached`; listed "
        "as refused) or `accept_unpaid` (recorded with payout 0, reason `cap_reached`).",
    )
    payout = PayoutTermOutSerializer()
    caps = CapStatusSerializer(many=True)


class OfferTermsListSerializer(serializers.Serializer):
    results = OfferTermsSerializer(many=True)
