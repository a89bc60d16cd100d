"""Template helpers of the dashboard pages."""

from django import template
from django.conf import settings
from django.utils.http import urlencode

from publishers.views.common import chosen_timezone

register = template.Library()


@register.simple_tag(takes_context=True)
def keep_tz(context: template.Context, joiner: str = "?") -> str:
    """The page's time zone for a link to another dashboard page ("?tz=Asia%2FKolkata", or
    "&tz=…" after a query), so a zone chosen once stays while the publisher moves between
    pages; "" in UTC, the default. Zones are checked like every page checks them."""
    request = context.get("request")
    tz = chosen_timezone(request) if request is not None else "UTC"
    return "" if tz == "UTC" else joiner + urlencode({"tz": tz})


@register.simple_tag
def signup_open() -> bool:
    """Whether publisher sign-up is open (`PUBLISHER_SIGNUP_OPEN`): the sign-in page links to
    it only then."""
    return settings.PUBLISHER_SIGNUP_OPEN
