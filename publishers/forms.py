"""Dashboard forms. Choices that name tenant data (campaigns, creatives) are built from the
signed-in publisher's own rows, so a form can't be pointed at another publisher's objects."""

from datetime import date, timedelta

from django import forms
from django.contrib.auth import get_user_model, password_validation

from config.hostile import validate_day
from publishers.models import CallbackTemplate, Membership, Publisher
from tracking.models import Conversion
from tracking.selectors import (
    ATTRIBUTIONS,
    CONVERSION_GROUPS,
    REPORT_GROUPS,
    REPORT_SORTS,
    REPORT_TIMEZONES,
    SPID_MATCHES,
    ConversionFilters,
)
from tracking.selectors.visible import campaigns_for_publisher, creatives_for_publisher

TIMEZONE_CHOICES = [(tz, tz.replace("_", " ")) for tz in REPORT_TIMEZONES]
MAX_REPORT_DAYS = 400


class ConversionStatusesField(forms.MultipleChoiceField):
    """The conversion statuses that fire a callback, as checkboxes (dashboard and admin)."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault(
            "help_text",
            "A postback is sent when a conversion is recorded or changes to one of these.",
        )
        super().__init__(choices=Conversion.Status.choices, **kwargs)


class EventNamesField(forms.CharField):
    """The event names that fire a callback, typed as one comma-separated line and held as a
    list (empty: every event), in the dashboard and the admin."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 500)
        kwargs.setdefault(
            "help_text", "Comma-separated event names (e.g. sale, lead); empty for every event."
        )
        super().__init__(**kwargs)

    def prepare_value(self, value: object) -> object:
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def clean(self, value: object) -> list[str]:
        return self.names(super().clean(value))

    def has_changed(self, initial: object, data: object) -> bool:
        return self.names(initial) != self.names(data)

    @staticmethod
    def names(value: object) -> list[str]:
        if isinstance(value, list | tuple):
            return [str(name) for name in value]
        return [name.strip() for name in str(value or "").split(",") if name.strip()]


class CallbackTemplateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    url_template = forms.CharField(
        label="Callback URL",
        max_length=2048,
        widget=forms.TextInput(
            attrs={
                "placeholder": "https://your-site.example/postback?spid=[spid]&payout=[payout]",
                "autocomplete": "off",
                "spellcheck": "false",
                "data-preview-source": "1",
            }
        ),
    )
    method = forms.ChoiceField(
        label="Send as",
        choices=CallbackTemplate.Method.choices,
        initial=CallbackTemplate.Method.GET,
        required=False,  # not sent (an older page, a script): a new one is GET, an edit keeps it
        widget=forms.RadioSelect,
        help_text="GET calls the URL with the placeholders filled in, signed with your "
        "publisher secret. POST sends every value as JSON to the URL, signed as Standard "
        "Webhooks says with this callback's own secret (docs: JSON webhooks).",
    )
    statuses = ConversionStatusesField(initial=[Conversion.Status.APPROVED])
    events = EventNamesField()
    campaign = forms.ChoiceField(required=False, help_text="Only this campaign's conversions.")
    is_active = forms.BooleanField(required=False, initial=True, label="Active")

    def __init__(self, *args, publisher: Publisher, **kwargs):
        super().__init__(*args, **kwargs)
        self.campaigns = {c.public_id: c for c in campaigns_for_publisher(publisher)}
        self.fields["campaign"].choices = [("", "All campaigns")] + [
            (public_id, c.name) for public_id, c in self.campaigns.items()
        ]

    @classmethod
    def initial_for(cls, template: CallbackTemplate) -> dict:
        return {
            "name": template.name,
            "url_template": template.url_template,
            "method": template.method,
            "statuses": template.statuses,
            "events": template.events or [],
            "campaign": template.campaign.public_id if template.campaign else "",
            "is_active": template.is_active,
        }

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "url_template": data["url_template"].strip(),
            "method": data["method"] or None,
            "statuses": list(data["statuses"]),
            "events": data["events"],
            "campaign": self.campaigns.get(data["campaign"]),
        }


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "e.g. reconciliation job"}),
    )


class OfferRequestForm(forms.Form):
    """Asking for access to an offer that needs approval (publishers/views/offers.py)."""

    message = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "Your traffic: sources, countries, volume"}),
    )


class LinkCreateForm(forms.Form):
    """A new tracking link to an offer the publisher may run."""

    name = forms.CharField(
        max_length=200,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "e.g. newsletter"}),
    )
    default_placement = forms.CharField(
        max_length=100,
        required=False,
        help_text="Used for clicks that carry no placement= of their own.",
    )


class InviteForm(forms.Form):
    email = forms.EmailField(widget=forms.EmailInput(attrs={"placeholder": "name@example.com"}))
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class InvitationSignupForm(forms.Form):
    """A password for the account an invitation creates (the address has none yet)."""

    password1 = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput)
    password2 = forms.CharField(label="Password again", strip=False, widget=forms.PasswordInput)

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self):
        data = super().clean()
        first, second = data.get("password1"), data.get("password2")
        if first and second:
            if first != second:
                raise forms.ValidationError("The two passwords differ.")
            candidate = get_user_model()(username=self.email, email=self.email)
            password_validation.validate_password(first, candidate)
        return data


class SignupForm(forms.Form):
    """The public sign-up form: an address to verify and the publisher's name."""

    email = forms.EmailField(
        label="Work e-mail",
        max_length=254,
        widget=forms.EmailInput(attrs={"placeholder": "name@example.com", "autocomplete": "email"}),
        help_text="We send a link to confirm it; you will sign in with it.",
    )
    name = forms.CharField(
        label="Publisher name",
        max_length=200,
        widget=forms.TextInput(
            attrs={"placeholder": "e.g. Example Media", "autocomplete": "organization"}
        ),
        help_text="Your company, site or app, as advertisers will see it.",
    )

    def clean_name(self) -> str:
        # The name goes into e-mail subjects and the admin: one line of printable text.
        name = self.cleaned_data["name"]
        if any(ord(char) < 32 or ord(char) == 127 for char in name):
            raise forms.ValidationError("Use one line of text, without control characters.")
        return name


class SignupCompleteForm(InvitationSignupForm):
    """The verification link's page: a password, and what staff need to decide."""

    website = forms.URLField(
        label="Website or app store page",
        max_length=300,
        assume_scheme="https",
        # A text input (styled like the others) that phones still open with a URL keyboard.
        widget=forms.TextInput(
            attrs={"placeholder": "https://example.com", "inputmode": "url", "autocomplete": "url"}
        ),
    )
    about = forms.CharField(
        label="How will you promote our campaigns?",
        max_length=1000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Traffic sources, audience, countries (optional; helps us decide faster).",
    )


class DayField(forms.DateField):
    """Every date the dashboard's forms accept: a calendar picker, within bounds."""

    default_validators = [validate_day]
    widget = forms.DateInput(attrs={"type": "date"})


class DateRangeMixin:
    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end:
            if end < start:
                raise forms.ValidationError("The end date is before the start date.")
            if (end - start).days > MAX_REPORT_DAYS:
                raise forms.ValidationError(f"Choose at most {MAX_REPORT_DAYS} days.")
        return data


class ReportForm(DateRangeMixin, forms.Form):
    start = DayField()
    end = DayField()
    group_by = forms.ChoiceField(choices=list(REPORT_GROUPS.items()), initial="day")
    tz = forms.ChoiceField(choices=TIMEZONE_CHOICES, initial="UTC", label="Time zone")
    attribution = forms.ChoiceField(
        choices=[("conversion", "Conversion time"), ("click", "Click time")],
        initial="conversion",
        label="Count conversions by",
    )
    campaign = forms.ChoiceField(required=False)
    creative = forms.ChoiceField(required=False)
    country = forms.CharField(required=False, max_length=2)
    placement = forms.CharField(required=False, max_length=100)
    smart_ad = forms.CharField(required=False, max_length=32, label="Smart ad")
    keyword = forms.CharField(required=False, max_length=100)
    sort = forms.ChoiceField(choices=[(s, s) for s in REPORT_SORTS], required=False)
    dir = forms.ChoiceField(choices=[("asc", "asc"), ("desc", "desc")], required=False)

    FILTERS = ("campaign", "creative", "country", "placement", "smart_ad", "keyword")
    ATTRIBUTIONS = ATTRIBUTIONS

    def __init__(self, data, *, publisher: Publisher, today: date, tz: str):
        defaults = {
            "start": (today - timedelta(days=6)).isoformat(),
            "end": today.isoformat(),
            "group_by": "day",
            "tz": tz,
            "attribution": "conversion",
        }
        merged = {**defaults, **{k: v for k, v in data.items() if v != ""}}
        super().__init__(merged)
        self.fields["campaign"].choices = [("", "All")] + [
            (c.public_id, c.name) for c in campaigns_for_publisher(publisher)
        ]
        self.fields["creative"].choices = [("", "All")] + [
            (c.public_id, f"{c.campaign.name} · {c.name}")
            for c in creatives_for_publisher(publisher)
        ]

    def clean_country(self) -> str:
        return self.cleaned_data["country"].strip().upper()

    def filters(self) -> dict[str, str]:
        return {
            name: self.cleaned_data[name] for name in self.FILTERS if self.cleaned_data.get(name)
        }


# A grouped view by hour lists every hour of the range: bounded so the page stays readable.
MAX_HOURLY_DAYS = 31
# A grouped view by day without dates: the last days up to today.
DEFAULT_GROUP_DAYS = 30


class ConversionFilterForm(DateRangeMixin, forms.Form):
    # Not stripped: a spid is matched exactly as it was sent, spaces included (unless the
    # publisher asks for a part of one).
    spid = forms.CharField(required=False, max_length=255, strip=False)
    spid_match = forms.ChoiceField(
        choices=list(SPID_MATCHES.items()), required=False, initial="exact", label="spid match"
    )
    click_id = forms.CharField(required=False, max_length=32, label="Click id")
    txn_id = forms.CharField(
        required=False, max_length=255, label="Transaction id", help_text="Or a part of one."
    )
    status = forms.ChoiceField(choices=[("", "Any"), *Conversion.Status.choices], required=False)
    event = forms.CharField(required=False, max_length=50)
    start = DayField(required=False)
    end = DayField(required=False)
    group_by = forms.ChoiceField(
        choices=[("", "None: each conversion"), *CONVERSION_GROUPS.items()],
        required=False,
        label="Group by",
    )
    tz = forms.ChoiceField(
        choices=TIMEZONE_CHOICES, required=False, initial="UTC", label="Time zone"
    )

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if (
            data.get("group_by") == "hour"
            and start
            and end
            and (end - start).days >= MAX_HOURLY_DAYS
        ):
            raise forms.ValidationError(
                f"Group by hour covers at most {MAX_HOURLY_DAYS} days; narrow the dates."
            )
        return data

    def conversion_filters(self, *, today: date) -> ConversionFilters:
        """The valid form as the selectors' filters. A grouping by day or hour needs both
        dates (every period of the range is a row): missing ones default to the last days."""
        data = self.cleaned_data
        start, end = data.get("start"), data.get("end")
        if data.get("group_by") == "hour":
            end = end or start or today
            start = start or end
        elif data.get("group_by") == "day":
            end = end or max(today, start or today)
            start = start or end - timedelta(days=DEFAULT_GROUP_DAYS - 1)
            start = max(start, end - timedelta(days=MAX_REPORT_DAYS))
        return ConversionFilters(
            spid=data.get("spid", ""),
            spid_match=data.get("spid_match") or "exact",
            click_id=data.get("click_id", ""),
            txn_id=data.get("txn_id", ""),
            status=data.get("status", ""),
            event=data.get("event", ""),
            start=start,
            end=end,
            tz=data.get("tz") or "UTC",
        )


class RetryRangeForm(DateRangeMixin, forms.Form):
    start = DayField()
    end = DayField()
    states = forms.MultipleChoiceField(
        choices=[("failing", "Failing"), ("pending", "Pending")],
        initial=["failing"],
        widget=forms.CheckboxSelectMultiple,
    )


class EmbedForm(forms.Form):
    smart_ad_id = forms.RegexField(
        regex=r"^[A-Za-z0-9_-]{1,32}$", required=False, initial="1491", label="Smart ad id"
    )
    keyword = forms.CharField(required=False, max_length=100, initial="KEYWORD")
    width = forms.IntegerField(min_value=50, max_value=2000, initial=200, required=False)
    height = forms.IntegerField(min_value=50, max_value=2000, initial=200, required=False)
