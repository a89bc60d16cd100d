"""Hostile values against every URL pattern: 0 × 5xx, and no row changed by a refused request.

Each pattern of the URL configuration is visited as four callers (anonymous, a publisher's
owner signed in, a publisher API key, an advertiser API key), and the advertiser portal's
patterns also as an advertiser's owner signed in, with NUL characters, lone
surrogates, invalid UTF-8 percent-escapes, 100,000-character strings, JSON nested 5,000 deep,
JSON that is not an object, overflowing dates and integers and repeated parameters, in the
path, the query string, a form body and a JSON body. Bounded: one request carries a hostile
value in every parameter name the views read (docs/security.md lists the threats)."""

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.signals import got_request_exception
from django.db import connection, transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from tracking.models import AdvertiserUser, ConversionCap, PayoutTerm

pytestmark = pytest.mark.django_db

# Every parameter name the views, forms and serializers read (query, form and JSON).
NAMES = [
    *("q", "spid", "click_id", "ref", "token", "event", "event_id", "status", "statuses"),
    *("state", "states", "start", "end", "from", "to", "after", "cursor", "limit", "format"),
    *("group_by", "sort", "dir", "attribution", "period", "tz", "country", "device"),
    *("placement", "keyword", "creative", "campaign", "campaign_id", "smart_ad"),
    *("smart_ad_id", "action", "scope", "answer", "email", "role", "username", "password"),
    *("password1", "password2", "url_template", "name", "events", "is_active", "callback_id"),
    *("payout", "revenue", "currency", "txn_id", "updated_since", "sample_values", "next"),
    *("website", "about"),
    "kind",
    *("method", "callback"),
]
DATE_NAMES = ("start", "end", "from", "to", "updated_since")
INT_NAMES = ("limit", "payout", "revenue", "campaign_id", "callback_id", "smart_ad_id")

LONG = "x" * 100_000
# The 100,000-character value goes in the names that are stored or looked up (in every name it
# would make each request 5 MB and the walk several minutes longer).
LONG_NAMES = (
    *("q", "spid", "click_id", "ref", "token", "event", "event_id", "txn_id", "name"),
    *("url_template", "email", "username", "password", "campaign", "placement", "keyword"),
    *("website", "about"),
    *("method", "callback"),
)
# Raw (already percent-encoded) values for query strings, form bodies and path segments.
RAW_VALUES = {
    "nul": "a%00b",
    # Invalid UTF-8, and the UTF-8 spelling of a lone surrogate (also invalid).
    "invalid-utf8": "%FF%FE%ED%A0%80",
    "long": LONG,
    "overflow-int": "9" * 40,
}
RAW_DATES = ("9999-12-31", "0001-01-01", "99999-01-01")
# Values for JSON bodies (json.dumps escapes them: "\u0000", "\ud800").
JSON_VALUES = {
    "nul": "a\x00b",
    "surrogate": "\ud800",
    "long": LONG,
    "overflow-int": 10**40,
    "overflow-float": 1e308,
    "overflow-date": "9999-12-31T23:59:59Z",
    "nested-values": ["\x00", {"\ud800": None, "a": {"b": "\x00"}}],
}
JSON_BODIES = {
    "nested-list": "[" * 5000 + "]" * 5000,
    "nested-object": '{"a":' * 5000 + "1" + "}" * 5000,
    "list": "[1, 2]",
    "string": '"conversion"',
    "null": "null",
    "not-json": "{",
    "nul-key": '{"\\u0000": 1}',
}

# Tables a refused request may still write, by design: sign-in throttling (django-axes),
# sessions, the daily counters of refused clicks, and the last-used time of an API key.
BOOKKEEPING = re.compile(
    r"^(axes_.*|django_session|tracking_clickrejection|publishers_publisherapikey"
    r"|tracking_advertiserapikey)$"
)


@dataclass
class Outcome:
    statuses: Counter = field(default_factory=Counter)
    by_caller: Counter = field(default_factory=Counter)  # (caller, status class)
    errors: list = field(default_factory=list)  # (caller, method, url, status, exception)
    writes: list = field(default_factory=list)  # refused requests that changed rows

    def report(self) -> str:
        return "\n".join(repr(e)[:400] for e in (self.errors + self.writes)[:40])


def concrete_paths(fill: Callable[[str], str]) -> list[tuple[str, str]]:
    """(url name, path) of every pattern, each path parameter filled with `fill(its name)`."""
    found = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            text = prefix + _fill(str(pattern.pattern), fill)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, text)
            elif isinstance(pattern, URLPattern):
                found.append((pattern.name or text, "/" + text))

    walk(get_resolver().url_patterns, "")
    return found


def _fill(pattern: str, fill: Callable[[str], str]) -> str:
    pattern = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: fill(m.group(1)), pattern)  # path()
    pattern = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: fill(m.group(1)), pattern)  # re_path()
    pattern = pattern.replace("^", "").replace("$", "").replace("/?", "/")
    return pattern.replace("\\", "")


def row_writes() -> dict[str, int]:
    """Rows inserted, updated or deleted per table so far in this transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables"
        )
        return {name: count for name, count in cursor.fetchall() if count}


class Walker:
    def __init__(self, callers: dict[str, Client]):
        self.callers = callers
        self.outcome = Outcome()
        self.current: tuple = ()
        self.writes = row_writes()
        got_request_exception.connect(self._record_exception)

    def close(self) -> None:
        got_request_exception.disconnect(self._record_exception)

    def _record_exception(self, sender, request=None, **kwargs) -> None:
        import sys

        self.outcome.errors.append((*self.current, repr(sys.exc_info()[1])[:300]))

    def send(self, caller: str, method: str, url: str, **kwargs) -> None:
        client = self.callers[caller]
        self.current = (caller, method, url[:160], kwargs.get("content_type", ""))
        before = self.writes
        savepoint = transaction.savepoint_create()
        response = getattr(client, method)(url, **kwargs)
        if response.status_code >= 500:
            # Keep the test's transaction usable for the next request.
            transaction.savepoint_rollback(savepoint)
            self.outcome.errors.append((*self.current, response.status_code))
        else:
            transaction.savepoint_commit(savepoint)
        self.writes = row_writes()
        if 400 <= response.status_code < 500:
            changed = {
                table: count
                for table, count in self.writes.items()
                if count != before.get(table, 0) and not BOOKKEEPING.match(table)
            }
            if changed:
                self.outcome.writes.append((*self.current, response.status_code, changed))
        self.outcome.statuses[response.status_code // 100] += 1
        self.outcome.by_caller[(caller, response.status_code // 100)] += 1
        if caller in SESSION_USERS and "logout" in url:
            client.force_login(get_user_model().objects.get(username=SESSION_USERS[caller]))
            self.writes = row_writes()  # the sign-in's own writes are not the next request's


def query(names, value: str) -> str:
    if value is LONG:
        names = [name for name in names if name in LONG_NAMES]
    return "&".join(f"{name}={value}" for name in names)


def hostile_queries(names: list[str]) -> list[str]:
    queries = [query(names, value) for value in RAW_VALUES.values()]
    queries += [query(DATE_NAMES, value) for value in RAW_DATES]
    queries.append(query(INT_NAMES, "-" + "9" * 30))
    queries.append(query(names, "a") + "&" + query(names, "b"))  # repeated parameters
    return queries


def hostile_json(base: dict, *, full: bool) -> list[str]:
    """Bodies that are not what an endpoint wants; only three for pages that read no JSON."""
    if not full:
        return [JSON_BODIES["nested-list"], JSON_BODIES["list"], json.dumps({"q": "\x00"})]
    bodies = list(JSON_BODIES.values())
    for value in JSON_VALUES.values():
        names = LONG_NAMES if value is LONG else NAMES
        bodies.append(json.dumps({name: value for name in names}))
        if base:  # a body that passes the first checks, each other field hostile
            bodies.append(json.dumps({**{n: value for n in names if n not in base}, **base}))
    return bodies


# The signed-in callers and their accounts.
SESSION_USERS = {"session": "owner-a", "advertiser-session": "adv-owner"}
# The advertiser portal: the signed-in advertiser walks these paths (everyone else is refused
# at its door, so only its owner reaches the forms behind it).
PORTAL = "/advertiser/"


@pytest.fixture
def callers(publisher, advertiser, publisher_key, api_key) -> dict[str, Client]:
    session = Client(raise_request_exception=False)
    session.force_login(get_user_model().objects.get(username="owner-a"))
    account = get_user_model().objects.create_user("adv-owner", password="pw")
    AdvertiserUser.objects.create(
        advertiser=advertiser, user=account, role=AdvertiserUser.Role.OWNER
    )
    advertiser_session = Client(raise_request_exception=False)
    advertiser_session.force_login(account)
    return {
        "advertiser-session": advertiser_session,
        "anonymous": Client(raise_request_exception=False),
        "session": session,
        "publisher-key": Client(
            raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {publisher_key}"
        ),
        "advertiser-key": Client(
            raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {api_key}"
        ),
    }


def real_ids(data) -> dict[str, str]:
    """Path parameters that name real rows of publisher A, so the walk reaches past lookups."""
    return {
        "public_id": data.good_template.public_id,
        "callback_id": data.good_template.public_id,
        "click_id": data.clicks[0].click_id,
        "event_id": data.postbacks[0].event_id,
        "lookup": data.key_lookup,
    }


def base_queries(data, postback_token: str) -> dict[str, str]:
    """What a request to these paths needs to get past its first check (per path)."""
    click_id = data.clicks[0].click_id
    return {
        "/postback": f"token={postback_token}&click_id={click_id}",
        "/click": f"ref={data.link.code}",
        "/smart": f"ref={data.link.code}",
    }


def base_json(data) -> dict[str, dict]:
    return {
        "/api/v1/conversions/": {"click_id": data.clicks[1].click_id, "event": "sale"},
        "/api/v1/callbacks": {"url_template": "https://cb.example/?s=[spid]", "method": "POST"},
    }


def is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/postback"


def is_admin(name: str, path: str) -> bool:
    # The admin's own pages redirect every caller that is not staff to its sign-in page, and
    # ignore API keys: a lighter walk there (anonymous and signed in, fewer values), except
    # for the sign-in page itself.
    return path.startswith("/admin/") and path != "/admin/login/"


def money_rules(data) -> None:
    """A revenue-share term and roomy caps on the walked campaign, so the intake's hostile
    amounts go through payout terms and cap counters too (and the admin's inlines and the
    dashboard's offer cards have rows to show)."""
    campaign, publisher = data.link.campaign, data.link.publisher
    PayoutTerm.objects.create(
        campaign=campaign,
        publisher=publisher,
        kind=PayoutTerm.Kind.REVSHARE,
        percent=Decimal("33.33"),
        effective_from=timezone.now() - timedelta(days=400),
    )
    ConversionCap.objects.create(
        campaign=campaign, period="daily", max_conversions=100_000, max_payout=Decimal(10**12)
    )
    ConversionCap.objects.create(
        campaign=campaign, publisher=publisher, period="monthly", max_conversions=100_000
    )


def callers_of(path: str, callers: dict[str, Client]) -> list[str]:
    """Who walks `path`: everyone, and the signed-in advertiser only in its portal."""
    return [c for c in callers if c != "advertiser-session" or path.startswith(PORTAL)]


def test_it_never_answers_5xx_nor_writes_on_refusal(
    callers, dashboard_data, postback_token, settings
):
    settings.API_RATE_LIMIT = "1000000/min"
    money_rules(dashboard_data)
    ids = real_ids(dashboard_data)
    bases = base_queries(dashboard_data, postback_token)
    json_bases = base_json(dashboard_data)
    walker = Walker(callers)
    walked = set()
    try:
        for name, path in concrete_paths(lambda param: ids.get(param, "x1")):
            walked.add(name)
            light = is_admin(name, path)
            base = bases.get(path, "")
            names = [n for n in NAMES if f"{n}=" not in base]
            for caller in ("anonymous", "session") if light else callers_of(path, callers):
                for raw in hostile_queries(names)[: 2 if light else None]:
                    walker.send(caller, "get", f"{path}?{base}&{raw}")
                if base:  # the first check refused too
                    walker.send(caller, "get", f"{path}?{query(NAMES, RAW_VALUES['nul'])}")
                for raw in list(RAW_VALUES.values())[: 1 if light else None]:
                    walker.send(
                        caller,
                        "post",
                        f"{path}?{base}",
                        data=query(names, raw),
                        content_type="application/x-www-form-urlencoded",
                    )
                if light:
                    continue
                for body in hostile_json(json_bases.get(path, {}), full=is_api(path)):
                    walker.send(caller, "post", path, data=body, content_type="application/json")
        # Hostile path parameters, on the patterns that have some.
        marker = "\x01"
        with_params = {
            name for name, path in concrete_paths(lambda param: marker) if marker in path
        }
        for key, value in RAW_VALUES.items():
            for name, path in concrete_paths(lambda param, value=value: value):
                if name not in with_params:
                    continue
                light = is_admin(name, path)
                if light and key != "nul":
                    continue
                for caller in ("anonymous", "session") if light else callers_of(path, callers):
                    walker.send(caller, "get", path)
                    walker.send(caller, "post", path, data="{}", content_type="application/json")
    finally:
        walker.close()
    outcome = walker.outcome
    assert not outcome.errors, outcome.report()
    assert not outcome.writes, outcome.report()
    # Every named pattern was walked, and most answers were refusals.
    assert len(walked) > 150 and outcome.statuses[4] > outcome.statuses[2]
    # The signed-in advertiser got past the portal's door: its pages and forms were reached.
    assert outcome.by_caller[("advertiser-session", 2)] > 50
