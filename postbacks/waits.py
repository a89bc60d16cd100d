"""Endpoints waiting for room: destination hosts whose due postbacks the fair claim leaves
alone now (at their in-flight cap, hanging, or held by their breaker: postbacks/fairness.py),
with those postbacks. Read by /metrics and by the publisher's Deliveries page."""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone

from postbacks import fairness
from postbacks.models import Postback


@dataclass(frozen=True)
class EndpointWait:
    """A destination host whose due postbacks are not sent now (postbacks/fairness.py)."""

    host: str
    reason: str  # a key of fairness.WAIT_REASONS
    in_flight: int
    waiting: int  # due pending postbacks (of the publisher asked about, if one was)
    oldest_due: datetime | None

    @property
    def explanation(self) -> str:
        return fairness.WAIT_REASONS[self.reason]


def waiting_hosts() -> dict[str, str]:
    """Every host the claim leaves alone now, with why (a key of fairness.WAIT_REASONS): one
    Redis script, for a page of postbacks that each say whether their endpoint holds them."""
    return _reasons(fairness.get_gate().rooms())


def _reasons(rooms: dict[str, fairness.HostRoom]) -> dict[str, str]:
    cap = settings.POSTBACKS_HOST_MAX_IN_FLIGHT
    caps = settings.POSTBACKS_HOST_MAX_IN_FLIGHT_BY_HOST
    return {
        host: reason
        for host, room in rooms.items()
        if (reason := room.reason(caps.get(host, cap))) is not None
    }


def endpoint_waits(
    *, publisher_id: int | None = None, now: datetime | None = None
) -> list[EndpointWait]:
    """Hosts the claim leaves alone now (at their cap, hanging, or held by their breaker), with
    their due postbacks: for /metrics and the publisher's Deliveries page. One Redis script
    and one query over the pending-by-host index."""
    now = now or timezone.now()
    rooms = fairness.get_gate().rooms()
    reasons = _reasons(rooms)
    if not reasons:
        return []
    due = Postback.objects.filter(
        status=Postback.Status.PENDING, next_attempt_at__lte=now, host__in=list(reasons)
    )
    if publisher_id is not None:
        due = due.filter(publisher_id=publisher_id)
    found = {
        row["host"]: row
        for row in due.values("host").annotate(n=Count("pk"), oldest=Min("next_attempt_at"))
    }
    if publisher_id is not None:
        reasons = {host: reason for host, reason in reasons.items() if host in found}
    return [
        EndpointWait(
            host=host,
            reason=reason,
            in_flight=rooms[host].in_flight,
            waiting=found.get(host, {}).get("n", 0),
            oldest_due=found.get(host, {}).get("oldest"),
        )
        for host, reason in sorted(reasons.items())
    ]
