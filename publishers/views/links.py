"""Links & ads: text links and smart-ad embed codes, ready to copy."""

from datetime import timedelta
from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from publishers import selectors
from publishers.forms import EmbedForm
from publishers.views.common import member_view
from tracking import selectors as tracking_selectors
from tracking.selectors.visible import smart_ads_for_publisher


def text_link(code: str, spid: str = "YOUR_SPID") -> str:
    return f"{settings.SITE_URL}/click?ref={quote(code)}&spid={spid}"


def smart_ad_embed(code: str, *, smart_ad_id: str, keyword: str, width: int, height: int) -> str:
    keyword_value = quote(keyword, safe="") if keyword else "KEYWORD"
    src = (
        f"{settings.SITE_URL}/smart?ref={quote(code)}&q={keyword_value}"
        f"&smart_ad_id={quote(smart_ad_id, safe='')}&spid=YOUR_SPID"
    )
    return (
        f'<iframe src="{src}" width="{width}" height="{height}" frameborder="0" '
        f'scrolling="no" allowtransparency="true"></iframe>'
    )


@member_view
def links(request: HttpRequest) -> HttpResponse:
    form = EmbedForm(request.GET or None)
    smart_ads = list(smart_ads_for_publisher(request.publisher))
    options = {"smart_ad_id": "1491", "keyword": "KEYWORD", "width": 200, "height": 200}
    if smart_ads:
        first = smart_ads[0]
        options.update(smart_ad_id=str(first.pk), width=first.width, height=first.height)
    if form.is_bound and form.is_valid():
        options.update({k: v for k, v in form.cleaned_data.items() if v not in (None, "")})
    links = list(selectors.links_for_publisher(request.publisher))
    # This publisher's own terms and the caps that concern it (never another publisher's).
    now = timezone.now()
    campaigns = list({link.campaign_id: link.campaign for link in links}.values())
    offers = selectors.offer_terms_for_publisher(request.publisher, at=now, campaigns=campaigns)
    rows = [
        {
            "link": link,
            "text_link": text_link(link.code),
            "embed": smart_ad_embed(link.code, **options),
            "term": offers[link.campaign_id].term,
            "caps": offers[link.campaign_id].caps,
        }
        for link in links
    ]
    return render(
        request,
        "publishers/links.html",
        {
            "nav": "links",
            "rows": rows,
            "form": form if form.is_bound else EmbedForm(initial=options),
            "options": options,
            "smart_ads": smart_ads,
            "example_link": text_link(rows[0]["link"].code, "123456789") if rows else "",
            "refusals": tracking_selectors.click_refusals(
                request.publisher, since=timezone.now().date() - timedelta(days=29)
            ),
        },
    )
