"""`manage.py seed_demo`: a working demo (idempotent), and the credentials to drive it.

Keys are stored hashed, so each run issues fresh demo credentials and revokes the previous
ones; everything else is created once and updated in place.
"""

import contextlib
import json
import shlex
from datetime import timedelta
from decimal import Decimal
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from publishers.models import CallbackTemplate, Membership, Publisher, PublisherAPIKey
from publishers.services import api_key_create
from publishers.signup import SignupClaim, SignupError, signup_complete
from tracking.models import (
    Advertiser,
    AdvertiserAPIKey,
    AdvertiserUser,
    Campaign,
    CampaignPolicy,
    ConversionCap,
    Creative,
    PayoutTerm,
    SmartAd,
    TrackingLink,
)
from tracking.services import advertiser_key_create

DEMO_KEY_NAME = "seed_demo"
ADMIN = ("admin", "roundtrip-admin")
PUBLISHER_USER = ("publisher", "roundtrip-demo")
# A publisher who signed up and waits for staff (Admin → Signup applications).
APPLICANT = ("applicant@example.com", "roundtrip-applicant")
ADVERTISER_USER = ("advertiser", "roundtrip-advertiser")
LINK_CODE = "demo"
STRICT_LINK_CODE = "demo-strict"
CAPPED_LINK_CODE = "demo-capped"
SMART_AD_ID = 1491
EXAMPLE_SPID = 'a b&c/d?e#f%g"ü'


class Command(BaseCommand):
    help = (
        "Create (or refresh) a demo admin, publisher, advertiser, campaign, link, a GET callback "
        "and a JSON webhook callback."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--callback-url",
            help="The demo publisher's callback URL template (default: the built-in demo receiver).",
        )
        parser.add_argument(
            "--webhook-url",
            help="Where the demo publisher's JSON webhooks go (default: the built-in demo "
            "receiver).",
        )
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args, **options) -> None:
        site = settings.SITE_URL
        callback_url = options["callback_url"] or (
            f"{site}/demo/receiver/callback?spid=[spid]&payout=[payout]&currency=[currency]"
            "&status=[status]&reason=[reason]&event_id=[event_id]"
        )
        webhook_url = options["webhook_url"] or f"{site}/demo/receiver/webhook"
        with transaction.atomic():
            result = self._seed(site, callback_url, webhook_url)
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.stdout.write(self._human(result))

    def _seed(self, site: str, callback_url: str, webhook_url: str) -> dict:
        user_model = get_user_model()
        admin, _ = user_model.objects.get_or_create(
            username=ADMIN[0], defaults={"is_staff": True, "is_superuser": True}
        )
        admin.is_staff = admin.is_superuser = True
        admin.set_password(ADMIN[1])
        admin.save()

        publisher, _ = Publisher.objects.get_or_create(name="Demo Publisher")
        pub_user, _ = user_model.objects.get_or_create(username=PUBLISHER_USER[0])
        pub_user.set_password(PUBLISHER_USER[1])
        pub_user.save()
        Membership.objects.update_or_create(
            publisher=publisher, user=pub_user, defaults={"role": Membership.Role.OWNER}
        )

        advertiser, _ = Advertiser.objects.get_or_create(name="Demo Advertiser")
        # The advertiser portal's login (/advertiser/): an owner, so the keys page works too.
        adv_user, _ = user_model.objects.get_or_create(username=ADVERTISER_USER[0])
        adv_user.set_password(ADVERTISER_USER[1])
        adv_user.save()
        AdvertiserUser.objects.update_or_create(
            user=adv_user,
            defaults={"advertiser": advertiser, "role": AdvertiserUser.Role.OWNER},
        )
        campaign, _ = Campaign.objects.get_or_create(
            advertiser=advertiser,
            name="Demo Campaign",
            defaults={
                "landing_url": "https://advertiser.example/landing?click_id=[click_id]",
                "default_payout": Decimal("1.50"),
                "default_revenue": Decimal("3.00"),
                "currency": "USD",
                "attribution_window": timedelta(days=30),
            },
        )
        if campaign.default_revenue is None:
            campaign.default_revenue = Decimal("3.00")
            campaign.save(update_fields=["default_revenue"])
        # The demo publisher is on revenue share: half of what the advertiser pays (the
        # campaign's default revenue of 3.00 USD unless it reports another), so a conversion
        # pays it 1.50 USD.
        if not PayoutTerm.objects.filter(campaign=campaign, publisher=publisher).exists():
            PayoutTerm.objects.create(
                campaign=campaign,
                publisher=publisher,
                kind=PayoutTerm.Kind.REVSHARE,
                percent=Decimal("50"),
                effective_from=timezone.now(),
            )
        # A capped offer: 5 paid conversions a day (days in Berlin), later ones recorded unpaid.
        capped, _ = Campaign.objects.get_or_create(
            advertiser=advertiser,
            name="Demo Capped Offer",
            defaults={
                "landing_url": "https://advertiser.example/offer?click_id=[click_id]",
                "default_payout": Decimal("2.00"),
                "currency": "EUR",
                "time_zone": "Europe/Berlin",
                "cap_policy": Campaign.CapPolicy.ACCEPT_UNPAID,
            },
        )
        ConversionCap.objects.get_or_create(
            campaign=capped,
            publisher=None,
            period=ConversionCap.Period.DAILY,
            defaults={"max_conversions": 5},
        )
        TrackingLink.objects.update_or_create(
            code=CAPPED_LINK_CODE,
            defaults={"publisher": publisher, "campaign": capped, "name": "Demo capped offer"},
        )
        text_ad, _ = Creative.objects.get_or_create(
            campaign=campaign,
            name="Demo text ad",
            defaults={"headline": "Try the demo product", "body": "Fast, simple, free to start."},
        )
        Creative.objects.get_or_create(
            campaign=campaign,
            name="Demo running shoes",
            defaults={
                "headline": "Running shoes, 30 % off",
                "body": "Light, fast, delivered tomorrow.",
                "keywords": "shoes, running, sneakers",
            },
        )
        # The brief's example unit: smart_ad_id=1491, 200x200.
        smart_ad, _ = SmartAd.objects.get_or_create(
            pk=SMART_AD_ID,
            defaults={"name": "Demo smart ad", "width": 200, "height": 200},
        )
        smart_ad.campaigns.add(campaign)
        if smart_ad.fallback_creative_id is None:
            smart_ad.fallback_creative = text_ad
            smart_ad.save(update_fields=["fallback_creative"])
        TrackingLink.objects.update_or_create(
            code=LINK_CODE,
            defaults={"publisher": publisher, "campaign": campaign, "name": "Demo link"},
        )
        premium, strict = self._seed_policies(advertiser, publisher)
        self._callback(publisher, "Demo receiver", callback_url, CallbackTemplate.Method.GET)
        # The same conversions as a signed JSON webhook (Standard Webhooks), to the same inbox.
        webhook = self._callback(
            publisher, "Demo JSON webhook", webhook_url, CallbackTemplate.Method.POST
        )

        # Made once: on later runs the address is taken (and staff may have decided since).
        with contextlib.suppress(SignupError):
            signup_complete(
                claim=SignupClaim(email=APPLICANT[0], name="Demo Applicant Media"),
                password=APPLICANT[1],
                website="https://applicant.example",
                about="A cooking blog with a weekly newsletter (demo application).",
            )

        now = timezone.now()
        AdvertiserAPIKey.objects.filter(
            advertiser=advertiser, name=DEMO_KEY_NAME, revoked_at__isnull=True
        ).update(revoked_at=now)
        PublisherAPIKey.objects.filter(
            publisher=publisher, name=DEMO_KEY_NAME, revoked_at__isnull=True
        ).update(revoked_at=now)
        _, advertiser_key = advertiser_key_create(
            advertiser=advertiser, kind=AdvertiserAPIKey.Kind.API, name=DEMO_KEY_NAME
        )
        _, advertiser_token = advertiser_key_create(
            advertiser=advertiser, kind=AdvertiserAPIKey.Kind.POSTBACK_TOKEN, name=DEMO_KEY_NAME
        )
        _, publisher_key = api_key_create(publisher=publisher, name=DEMO_KEY_NAME)

        tracking_link = f"{site}/click?ref={LINK_CODE}&spid=123456789"
        capped_link = f"{site}/click?ref={CAPPED_LINK_CODE}&spid=123456789"
        example_link = f"{site}/click?ref={LINK_CODE}&spid={quote(EXAMPLE_SPID, safe='')}"
        smart_src = f"{site}/smart?ref={LINK_CODE}&q=shoes&smart_ad_id={SMART_AD_ID}&spid=123456789"
        smart_iframe = (
            f'<iframe src="{smart_src.replace("&", "&amp;")}" width="200" height="200" '
            'frameborder="0" scrolling="no" allowtransparency="true"></iframe>'
        )
        return {
            "site_url": site,
            "smart_ad_url": smart_src,
            "smart_ad_iframe": smart_iframe,
            "tracking_link": tracking_link,
            "capped_tracking_link": capped_link,
            "example_tracking_link": example_link,
            "example_spid": EXAMPLE_SPID,
            "advertiser_api_key": advertiser_key,
            "advertiser_token": advertiser_token,
            "publisher_api_key": publisher_key,
            "callback_url_template": callback_url,
            "webhook_url": webhook_url,
            "webhook_secret": webhook.webhook_secret,
            "dashboard_url": f"{site}/dashboard/",
            "advertiser_portal_url": f"{site}/advertiser/",
            "admin_url": f"{site}/admin/",
            "signup_url": f"{site}/signup/",
            "signup_applications_url": f"{site}/admin/publishers/signupapplication/",
            "demo_receiver_url": f"{site}/demo/receiver/",
            "conversion_api_url": f"{site}/api/v1/conversions",
            "get_postback_url": (
                f"{site}/postback?token={advertiser_token}&click_id=CLICK_ID&txn_id=T1&payout=1.50"
            ),
            "logins": {
                "admin": {"username": ADMIN[0], "password": ADMIN[1]},
                "publisher": {"username": PUBLISHER_USER[0], "password": PUBLISHER_USER[1]},
                "applicant": {"username": APPLICANT[0], "password": APPLICANT[1]},
                "advertiser": {"username": ADVERTISER_USER[0], "password": ADVERTISER_USER[1]},
            },
            "conversion_curl": self._curl(site, example_link, advertiser_key),
            "offers_url": f"{site}/dashboard/offers/",
            "approval_offer": {"id": premium.public_id, "name": premium.name},
            "strict_campaign": {
                "id": strict.public_id,
                "name": strict.name,
                "bot_action": CampaignPolicy.BotAction.FLAG.value,
                "blocked_ips": "192.0.2.0/24",
                "max_clicks_per_ip_per_minute": 20,
                "tracking_link": f"{site}/click?ref={STRICT_LINK_CODE}&spid=123456789",
            },
        }

    @staticmethod
    def _seed_policies(advertiser: Advertiser, publisher: Publisher) -> tuple[Campaign, Campaign]:
        """An offer that needs approval (the demo publisher requests it on the Offers page,
        staff approve it under Offer access), and a campaign with a non-default bot and
        fraud policy and a link of the demo publisher's."""
        premium, _ = Campaign.objects.update_or_create(
            advertiser=advertiser,
            name="Demo Premium Offer",
            defaults={
                "landing_url": "https://advertiser.example/premium?click_id=[click_id]",
                "default_payout": Decimal("12.00"),
                "currency": "USD",
                "access": Campaign.Access.APPROVAL,
            },
        )
        strict, _ = Campaign.objects.update_or_create(
            advertiser=advertiser,
            name="Demo Strict Campaign",
            defaults={
                "landing_url": "https://advertiser.example/strict?click_id=[click_id]",
                "default_payout": Decimal("2.00"),
                "currency": "USD",
            },
        )
        CampaignPolicy.objects.update_or_create(
            campaign=strict,
            defaults={
                # Conversions of bot clicks (curl's user agent, say) are approved and marked
                # bot_flagged instead of held; clicks from TEST-NET-1 are refused; at most 20
                # clicks per IP per minute.
                "bot_action": CampaignPolicy.BotAction.FLAG,
                "blocked_ips": "192.0.2.0/24",
                "max_clicks_per_ip_per_minute": 20,
            },
        )
        TrackingLink.objects.update_or_create(
            code=STRICT_LINK_CODE,
            defaults={"publisher": publisher, "campaign": strict, "name": "Demo strict link"},
        )
        return premium, strict

    @staticmethod
    def _callback(publisher, name: str, url: str, method: str) -> CallbackTemplate:
        template, _ = CallbackTemplate.objects.get_or_create(
            publisher=publisher, name=name, defaults={"url_template": url}
        )
        template.url_template = url
        template.method = method
        if not template.is_active:  # resumed: the demo's callbacks are on
            template.is_active, template.paused_at, template.paused_reason = True, None, ""
        try:
            template.full_clean()
        except ValidationError as exc:
            raise CommandError(
                f"The callback URL {url} is refused: {'; '.join(exc.messages)} "
                "For the local demo receiver set POSTBACKS_ALLOW_PRIVATE_DESTINATIONS=true "
                "(make run does)."
            ) from None
        template.save()
        return template

    @staticmethod
    def _curl(site: str, link: str, key: str) -> str:
        # The click stands in for a visitor's browser: curl's own user agent marks a bot
        # click, whose conversion is held for review and never calls the publisher back.
        browser = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
        return (
            f"CLICK_ID=$(curl -s -A {shlex.quote(browser)} -o /dev/null -w '%{{redirect_url}}' "
            f"{shlex.quote(link)}"
            " | sed 's/.*click_id=//') && echo \"click_id=$CLICK_ID\" && \\\n"
            f"curl -s -X POST {site}/api/v1/conversions -H {shlex.quote('Authorization: Bearer ' + key)}"
            " -H 'Content-Type: application/json' \\\n"
            '  -d "{\\"click_id\\": \\"$CLICK_ID\\", \\"txn_id\\": \\"order-$RANDOM\\", '
            '\\"payout\\": \\"1.50\\"}"; echo'
        )

    @staticmethod
    def _human(r: dict) -> str:
        return f"""
Roundtrip demo is ready.

  Dashboard      {r["dashboard_url"]}   (login {r["logins"]["publisher"]["username"]} / {r["logins"]["publisher"]["password"]})
  Advertisers    {r["advertiser_portal_url"]}  (login {r["logins"]["advertiser"]["username"]} / {r["logins"]["advertiser"]["password"]})
  Admin          {r["admin_url"]}       (login {r["logins"]["admin"]["username"]} / {r["logins"]["admin"]["password"]})
  Demo receiver  {r["demo_receiver_url"]}   (the demo publisher's callbacks land here:
                 a GET postback and a signed JSON webhook for each conversion)
  Webhook secret {r["webhook_secret"]}   (verifies the demo's JSON webhooks)
  Sign-up        {r["signup_url"]}   (an application waits for approval at
                 {r["signup_applications_url"]}; its owner: {r["logins"]["applicant"]["username"]} / {r["logins"]["applicant"]["password"]})

  Tracking link  {r["tracking_link"]}
                 (revenue share: the demo publisher earns 50 % of the revenue, 1.50 USD by default)
  Capped offer   {r["capped_tracking_link"]}
                 (5 paid conversions a day, Berlin time; later ones are recorded unpaid)
  With a tricky spid ({r["example_spid"]}):
                 {r["example_tracking_link"]}

  Smart ad       {r["smart_ad_url"]}
  Embed code     {r["smart_ad_iframe"]}

  Advertiser API key   {r["advertiser_api_key"]}
  GET postback token   {r["advertiser_token"]}
  Publisher API key    {r["publisher_api_key"]}
  (keys are shown once; run seed_demo again for fresh ones)

Click the tricky link and report a conversion in one paste:

{r["conversion_curl"]}

then open {r["demo_receiver_url"]} to see the spid come back.

Offer access and fraud policy:
  Offers         {r["offers_url"]}   ({r["approval_offer"]["name"]} needs approval: request
                 it there, approve it in the admin under Offer access, then create a link)
  Strict link    {r["strict_campaign"]["tracking_link"]}
                 ({r["strict_campaign"]["name"]}: bot clicks' conversions flagged, not held;
                 clicks from {r["strict_campaign"]["blocked_ips"]} refused; at most
                 {r["strict_campaign"]["max_clicks_per_ip_per_minute"]} clicks per IP per minute)
"""
