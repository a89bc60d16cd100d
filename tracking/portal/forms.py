"""Forms of the advertiser portal: bad input is a form error, never a 500."""

from datetime import date

from django import forms

from tracking.models import AdvertiserAPIKey, Campaign

# Days outside these years are typos or probes; refusing them keeps date arithmetic in range.
_FIRST_YEAR, _LAST_YEAR = 2000, 2100


# Not "X is not one of the available choices": a campaign id typed in is not echoed back.
_NOT_YOURS = {"invalid_choice": "Pick one of your campaigns."}


def _campaign_choices(campaigns: list[Campaign]) -> list[tuple[str, str]]:
    return [(c.public_id, f"{c.name} ({c.public_id})") for c in campaigns]


class KeyForm(forms.Form):
    kind = forms.ChoiceField(choices=AdvertiserAPIKey.Kind.choices)
    name = forms.CharField(max_length=100, required=False, strip=True)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if "\x00" in name:
            raise forms.ValidationError("Use printable characters.")
        return name


class ConversionFilterForm(forms.Form):
    campaign = forms.ChoiceField(required=False, error_messages=_NOT_YOURS)
    start = forms.DateField(required=False)
    end = forms.DateField(required=False)

    def __init__(self, *args, campaigns: list[Campaign], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["campaign"].choices = [("", "All campaigns"), *_campaign_choices(campaigns)]

    def clean(self) -> dict:
        data = super().clean()
        for name in ("start", "end"):
            day: date | None = data.get(name)
            if day is not None and not _FIRST_YEAR <= day.year <= _LAST_YEAR:
                self.add_error(name, f"Pick a day between {_FIRST_YEAR} and {_LAST_YEAR}.")
        start, end = data.get("start"), data.get("end")
        if start and end and start > end:
            self.add_error("end", "The last day comes before the first.")
        return data


class ConversionTestForm(forms.Form):
    campaign = forms.ChoiceField(error_messages=_NOT_YOURS)
    event = forms.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$",
        initial="conversion",
        error_messages={"invalid": "Use 1-50 letters, digits, '_', '.' or '-'."},
    )

    def __init__(self, *args, campaigns: list[Campaign], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["campaign"].choices = _campaign_choices(campaigns)

    def clean_event(self) -> str:
        return self.cleaned_data["event"].lower()
