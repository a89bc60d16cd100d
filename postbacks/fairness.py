"""Fairness between publisher endpoints: a cap on requests in flight per destination host and
a circuit breaker per host, shared by every worker through Redis.

Why: one publisher whose server hangs would otherwise hold every connection of every worker for
the whole HTTP timeout, and everybody else's postbacks would wait behind it. With the cap it
holds at most `cap` requests at a time, whatever the number of workers; with the breaker, after
a run of failures it gets no request at all except one probe per cool-down.

Recovery is adaptive: the cool-down starts short and doubles while the probes fail, capped at
`max_cooldown` (a few seconds by default), so a dead host costs one request per cool-down and a
healed one is noticed within one. `settle` says which hosts healed (a success after the
breaker had opened) and when a breaker that opened will probe next; the dispatcher then makes
the healed host's held-back rows due at once and wakes a claim for the next probe.

A host is `name:port` as the dispatcher sees it (two receivers on one machine are two hosts).

State in Redis, per host (both keys expire by themselves, so a crashed worker leaks nothing):
- `<prefix>slots:<host>`: a sorted set of slot tokens scored by their expiry (ms). A worker
  takes slots before sending and gives them back when the requests end. A slot whose worker
  died is dropped as soon as that process's liveness key `<prefix>alive:<hostname>:<pid>`
  (renewed while it holds rows, expiring after half a lease) is gone, and expires after
  `slot_ttl` (longer than any request can take) in any case.
- `<prefix>breaker:<host>`: a hash `fails` (failures in a row), `state` (absent = closed,
  `open`, `half`), `until` (ms: when an open breaker lets a probe through), `probe` (ms: when a
  half-open probe that never reported back is given up; sooner if its process, `prober`, died),
  `opens` (how often it opened in a row; the cool-down doubles each time up to `max_cooldown`).

Both scripts run atomically in Redis, so two workers can never take the same last slot or both
send the one half-open probe. Without Redis (local mode: SQLite and the file-system broker) a
`LocalGate` keeps the same state in the process; if Redis fails, `ResilientGate` falls back to
it rather than stop delivering.
"""

import abc
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from redis.exceptions import RedisError

from config.redis import get_redis

logger = logging.getLogger(__name__)

# Marks tokens a LocalGate issued, so settle() hands them back to it.
_LOCAL_TOKEN = "L|"  # noqa: S105

# Breaker keys outlive their last failure by this long, then a quiet host starts afresh.
_BREAKER_KEEP_MS = 24 * 3600 * 1000

# While a probe is out, a host's other rows come back this soon (ms): the probe usually answers
# within milliseconds, and waiting for its give-up time (a slot's TTL, ~30 s) stalled recovery.
_PROBE_POLL_MS = 1000

# Slots of a process that stopped renewing its liveness key (killed: its requests died with
# it) are dropped at once instead of waiting out their TTL. A token is "<owner>:<n>:<i>:<k>",
# its owner "<hostname>:<pid>", whose key `<prefix>alive:<owner>` the process keeps alive
# (`Gate.heartbeat`) while it holds rows.
_PRUNE_DEAD = """
local alive = {}
local function prune_dead(slots, owners)
  for _, member in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
    local owner = string.match(member, '^(.*):%d+:%d+:%d+$')
    if owner then
      local live = alive[owner]
      if live == nil then
        live = redis.call('EXISTS', owners .. owner) == 1
        alive[owner] = live
      end
      if not live then
        redis.call('ZREM', slots, member)
      end
    end
  end
end
-- A half-open probe whose process died will never report back: give it up.
local function prober_alive(breaker, owners)
  local prober = redis.call('HGET', breaker, 'prober')
  return (not prober) or redis.call('EXISTS', owners .. prober) == 1
end
"""

_ADMIT = """
local now = tonumber(ARGV[1])
local slot_ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local probe_ttl = tonumber(ARGV[4])
local prefix = ARGV[5]
local registry = ARGV[6]
local slow = tonumber(ARGV[7])
local owners = ARGV[8]
local owner = ARGV[9]
local owner_ttl = tonumber(ARGV[10])
local probe_poll = PROBE_POLL_MS
local out = {}
redis.call('SET', owners .. owner, 1, 'PX', owner_ttl)
for i = 1, #KEYS / 2 do
  local slots = KEYS[2 * i - 1]
  local breaker = KEYS[2 * i]
  local allow = tonumber(ARGV[10 + 2 * i - 1])
  local host = ARGV[10 + 2 * i]
  local retry_at = 0
  local probe = 0
  local state = redis.call('HGET', breaker, 'state')
  if state == 'open' then
    local reopen = tonumber(redis.call('HGET', breaker, 'until') or 0)
    if now < reopen then
      allow = 0
      retry_at = reopen
    else
      allow = 1
      probe = 1
    end
  elseif state == 'half' then
    local probe_until = tonumber(redis.call('HGET', breaker, 'probe') or 0)
    if now < probe_until and prober_alive(breaker, owners) then
      allow = 0
      retry_at = math.min(probe_until, now + probe_poll)
    else
      allow = 1
      probe = 1
    end
  end
  local granted = 0
  if allow > 0 then
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    prune_dead(slots, owners)
    local limit = cap
    local oldest = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
    if probe == 0 and oldest[2] and now - (tonumber(oldest[2]) - slot_ttl) > slow then
      limit = 1  -- hanging: one request at a time until it answers
    end
    granted = math.max(0, math.min(allow, limit - redis.call('ZCARD', slots)))
    for k = 1, granted do
      redis.call('ZADD', slots, now + slot_ttl, prefix .. ':' .. i .. ':' .. k)
    end
    if granted > 0 then
      redis.call('PEXPIRE', slots, slot_ttl)
      redis.call('ZADD', registry, 'GT', now + slot_ttl, host)
      redis.call('PEXPIRE', registry, KEEP_MS)
      if probe == 1 then
        redis.call('HSET', breaker, 'state', 'half', 'probe', now + probe_ttl, 'prober', owner)
      end
    end
  end
  out[#out + 1] = granted
  out[#out + 1] = retry_at
  out[#out + 1] = probe * granted
end
return out
"""
_ADMIT = (_PRUNE_DEAD + _ADMIT).replace("PROBE_POLL_MS", str(_PROBE_POLL_MS))
_ADMIT = _ADMIT.replace("KEEP_MS", str(_BREAKER_KEEP_MS))

_SETTLE = """
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
local max_cooldown = tonumber(ARGV[4])
local keep = tonumber(ARGV[5])
local registry = ARGV[6]
local pos = 7
local out = {}
for i = 1, #KEYS / 2 do
  local slots = KEYS[2 * i - 1]
  local breaker = KEYS[2 * i]
  local host = ARGV[pos]
  local ok = tonumber(ARGV[pos + 1])
  local failed = tonumber(ARGV[pos + 2])
  local hung = tonumber(ARGV[pos + 3])
  local n = tonumber(ARGV[pos + 4])
  pos = pos + 5
  for k = 0, n - 1 do
    redis.call('ZREM', slots, ARGV[pos + k])
  end
  pos = pos + n
  if ok > 0 then
    local state = redis.call('HGET', breaker, 'state')
    if state == 'open' or state == 'half' then
      out[#out + 1] = host  -- healed: it answers again after its breaker had opened
      out[#out + 1] = 0
    end
    redis.call('DEL', breaker)
    if redis.call('ZCARD', slots) == 0 then
      redis.call('ZREM', registry, host)
    end
  elseif failed > 0 then
    local fails = redis.call('HINCRBY', breaker, 'fails', failed)
    local state = redis.call('HGET', breaker, 'state')
    -- A time-out opens it at once: a hanging host gets one probe at a time until it answers.
    if state == 'half' or (state ~= 'open' and (fails >= threshold or hung > 0)) then
      local opens = redis.call('HINCRBY', breaker, 'opens', 1)
      local pause = math.min(cooldown * 2 ^ (opens - 1), max_cooldown)
      redis.call('HSET', breaker, 'state', 'open', 'until', now + pause)
      redis.call('HDEL', breaker, 'probe', 'prober')
      redis.call('ZADD', registry, 'GT', now + keep, host)
      redis.call('PEXPIRE', registry, keep)
      out[#out + 1] = host  -- (re)opened: its next probe is due then
      out[#out + 1] = now + pause
    end
    redis.call('PEXPIRE', breaker, keep)
  end
end
return out
"""


# Every host with something to say to the claim (requests in flight, a breaker not closed),
# read in one go: the claim leaves out the rows of hosts that have no room.
_ROOMS = """
local now = tonumber(ARGV[1])
local slot_ttl = tonumber(ARGV[2])
local slow = tonumber(ARGV[3])
local prefix = ARGV[4]
local owners = prefix .. 'alive:'
local registry = KEYS[1]
local probe_poll = PROBE_POLL_MS
redis.call('ZREMRANGEBYSCORE', registry, '-inf', now)
local out = {}
for _, host in ipairs(redis.call('ZRANGE', registry, 0, -1)) do
  local slots = prefix .. 'slots:' .. host
  local breaker = prefix .. 'breaker:' .. host
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  prune_dead(slots, owners)
  local in_flight = redis.call('ZCARD', slots)
  local started = 0
  if in_flight > 0 then
    started = tonumber(redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')[2]) - slot_ttl
  end
  local held = 0
  local probe = 0
  local state = redis.call('HGET', breaker, 'state')
  if state == 'open' then
    local reopen = tonumber(redis.call('HGET', breaker, 'until') or 0)
    if now < reopen then held = reopen else probe = 1 end
  elseif state == 'half' then
    local probe_until = tonumber(redis.call('HGET', breaker, 'probe') or 0)
    if now < probe_until and prober_alive(breaker, owners) then
      held = math.min(probe_until, now + probe_poll)
    else
      probe = 1
    end
  end
  if in_flight > 0 or held > 0 or probe > 0 then
    out[#out + 1] = host
    out[#out + 1] = in_flight
    out[#out + 1] = started
    out[#out + 1] = held
    out[#out + 1] = probe
  end
end
return out
"""
_ROOMS = (_PRUNE_DEAD + _ROOMS).replace("PROBE_POLL_MS", str(_PROBE_POLL_MS))


# Why a host's due postbacks are not claimed now, in words a publisher reads.
WAIT_REASONS = {
    "breaker": "not answering: one test request at a time until it does",
    "hanging": "slow: a request has been waiting for its answer, one at a time until it comes",
    "busy": "at its limit of requests at once",
}


@dataclass(frozen=True)
class HostRoom:
    """What the gate knows of one host that is not simply idle (see `Gate.rooms`)."""

    in_flight: int = 0
    oldest_started: float | None = None  # epoch seconds: its oldest request in flight began
    held_until: float | None = None  # epoch seconds: an open breaker (or a probe out) holds it
    probe: bool = False  # its breaker lets one probe through now
    slow: bool = False  # its oldest request in flight has run longer than the slow threshold

    def limit(self, cap: int) -> int:
        """Requests it may have in flight: none while held, one while probing or hanging."""
        if self.held_until is not None:
            return 0
        return 1 if self.probe or self.slow else cap

    def free(self, cap: int) -> int:
        """Slots of this host a batch may take now."""
        return max(0, self.limit(cap) - self.in_flight)

    def reason(self, cap: int) -> str | None:
        """Why its rows wait (see WAIT_REASONS), or None when it has room for more."""
        if self.held_until is not None:
            return "breaker"
        if self.slow and not self.free(cap):
            return "hanging"
        return None if self.free(cap) else "busy"

    @property
    def busy(self) -> bool:
        """At its cap but answering: its slots come back within moments."""
        return self.held_until is None and not self.slow and not self.probe


@dataclass(frozen=True)
class Admission:
    """What a host was granted: `tokens` (one per slot, hand them back to `settle`)."""

    tokens: tuple[str, ...] = ()
    # Epoch seconds at which an open breaker lets a probe through; None when the host is
    # merely at its cap (or everything asked for was granted).
    retry_at: float | None = None
    probe: bool = False

    @property
    def granted(self) -> int:
        return len(self.tokens)


@dataclass
class HostTally:
    """How a host's requests ended, for its breaker, as `retry.host_verdict` counts them."""

    ok: int = 0
    failed: int = 0
    hung: int = 0  # of the failures, time-outs (retry.HOST_HUNG): the breaker opens at once
    tokens: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settled:
    """What settling said about breakers. `healed`: hosts that answered again after their
    breaker had opened (their rows held back by the outage may go now). `reopened`: host ->
    epoch seconds at which a breaker that just opened (again) lets its next probe through."""

    healed: frozenset[str] = frozenset()
    reopened: Mapping[str, float] = field(default_factory=dict)

    def __or__(self, other: "Settled") -> "Settled":
        return Settled(self.healed | other.healed, {**self.reopened, **other.reopened})


@dataclass(frozen=True)
class GateConfig:
    slot_ttl: float  # seconds a slot lives if its worker never gives it back
    failures: int  # failures in a row that open the breaker
    cooldown: float  # seconds an open breaker waits before its first probe
    max_cooldown: float
    slow: float = 2.0  # seconds a request may run before its host counts as hanging
    # Seconds a process's slots outlive its last heartbeat (sent every quarter of the lease
    # while it holds rows): half the lease, so a killed worker's slots are free by the time
    # its rows are.
    owner_ttl: float = 4.0

    @classmethod
    def from_settings(cls) -> "GateConfig":
        return cls(
            slot_ttl=slot_ttl_seconds(),
            failures=settings.POSTBACKS_BREAKER_FAILURES,
            cooldown=settings.POSTBACKS_BREAKER_COOLDOWN_SECONDS,
            max_cooldown=settings.POSTBACKS_BREAKER_MAX_COOLDOWN_SECONDS,
            slow=settings.POSTBACKS_HOST_SLOW_SECONDS,
            owner_ttl=settings.POSTBACKS_LEASE_SECONDS / 2,
        )


def slot_ttl_seconds() -> float:
    """Longer than one request can possibly hold a slot: waiting for it, DNS, the HTTP total."""
    return (
        settings.POSTBACKS_DISPATCH_WAIT_SECONDS
        + settings.POSTBACKS_CONNECT_TIMEOUT
        + settings.POSTBACKS_TOTAL_TIMEOUT
        + 10.0
    )


_token_counter = itertools.count()


def _owner() -> str:
    """This process, as its slot tokens name it (no ":" inside a host name)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _token_prefix() -> str:
    return f"{_owner()}:{next(_token_counter)}"


class Gate(abc.ABC):
    """Admission and breaker bookkeeping; see the module docstring."""

    @abc.abstractmethod
    def admit(
        self, wanted: Mapping[str, int], *, cap: int, now: float | None = None
    ) -> dict[str, Admission]:
        """Take up to `wanted[host]` slots per host, at most `cap` in flight per host."""

    @abc.abstractmethod
    def settle(self, tallies: Mapping[str, HostTally], *, now: float | None = None) -> Settled:
        """Give slots back and feed the breakers with how the requests ended; say which
        hosts healed and when the breakers that opened will probe."""

    @abc.abstractmethod
    def rooms(self, *, now: float | None = None) -> dict[str, HostRoom]:
        """Every host with requests in flight or a breaker not closed (an idle host is absent:
        it has its whole cap). The claim takes no row of a host without room."""

    @abc.abstractmethod
    def states(self) -> dict[str, str]:
        """Breaker state per host that has one: "open", "half" (probing) or "closed"."""

    def heartbeat(self) -> None:  # noqa: B027 (a gate in one process has nobody to tell)
        """This process is alive and holds rows: its slots stay taken (see _PRUNE_DEAD)."""


class RedisGate(Gate):
    def __init__(self, client, *, prefix: str, config: GateConfig):
        self.client = client
        self.prefix = prefix
        self.config = config
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)
        self._rooms = client.register_script(_ROOMS)
        self.registry = f"{prefix}hosts"
        self.owners = f"{prefix}alive:"

    def heartbeat(self) -> None:
        ttl_ms = int(self.config.owner_ttl * 1000)
        self.client.set(f"{self.owners}{_owner()}", 1, px=ttl_ms)

    def _keys(self, hosts: Sequence[str]) -> list[str]:
        keys = []
        for host in hosts:
            keys += [f"{self.prefix}slots:{host}", f"{self.prefix}breaker:{host}"]
        return keys

    def admit(
        self, wanted: Mapping[str, int], *, cap: int, now: float | None = None
    ) -> dict[str, Admission]:
        hosts = [host for host, count in wanted.items() if count > 0]
        if not hosts:
            return {}
        now_ms = int((time.time() if now is None else now) * 1000)
        ttl_ms = int(self.config.slot_ttl * 1000)
        prefix = _token_prefix()
        slow_ms = int(self.config.slow * 1000)
        args = [now_ms, ttl_ms, cap, ttl_ms, prefix, self.registry, slow_ms]
        args += [self.owners, _owner(), int(self.config.owner_ttl * 1000)]
        for host in hosts:
            args += [wanted[host], host]
        flat = self._admit(keys=self._keys(hosts), args=args)
        admissions = {}
        for i, host in enumerate(hosts):
            granted, retry_at, probe = (int(v) for v in flat[3 * i : 3 * i + 3])
            admissions[host] = Admission(
                tokens=tuple(f"{prefix}:{i + 1}:{k}" for k in range(1, granted + 1)),
                retry_at=retry_at / 1000 if retry_at else None,
                probe=bool(probe),
            )
        return admissions

    def settle(self, tallies: Mapping[str, HostTally], *, now: float | None = None) -> Settled:
        hosts = [h for h, t in tallies.items() if t.ok or t.failed or t.tokens]
        if not hosts:
            return Settled()
        config = self.config
        args: list = [
            int((time.time() if now is None else now) * 1000),
            config.failures,
            int(config.cooldown * 1000),
            int(config.max_cooldown * 1000),
            _BREAKER_KEEP_MS,
            self.registry,
        ]
        for host in hosts:
            tally = tallies[host]
            args += [host, tally.ok, tally.failed, tally.hung, len(tally.tokens), *tally.tokens]
        flat = self._settle(keys=self._keys(hosts), args=args)
        healed, reopened = set(), {}
        for i in range(0, len(flat), 2):
            host = flat[i].decode() if isinstance(flat[i], bytes) else flat[i]
            until = int(flat[i + 1])
            if until:
                reopened[host] = until / 1000
            else:
                healed.add(host)
        return Settled(frozenset(healed), reopened)

    def rooms(self, *, now: float | None = None) -> dict[str, HostRoom]:
        now_ms = int((time.time() if now is None else now) * 1000)
        args = [now_ms, int(self.config.slot_ttl * 1000), int(self.config.slow * 1000)]
        flat = self._rooms(keys=[self.registry], args=[*args, self.prefix])
        found = {}
        for i in range(0, len(flat), 5):
            host = flat[i].decode() if isinstance(flat[i], bytes) else flat[i]
            in_flight, started, held, probe = (int(v) for v in flat[i + 1 : i + 5])
            found[host] = HostRoom(
                in_flight=in_flight,
                oldest_started=started / 1000 if in_flight else None,
                held_until=held / 1000 if held else None,
                probe=bool(probe),
                slow=bool(in_flight) and now_ms - started > self.config.slow * 1000,
            )
        return found

    def states(self) -> dict[str, str]:
        found = {}
        marker = f"{self.prefix}breaker:"
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", marker) + "*"  # the prefix, literally
        for key in self.client.scan_iter(match=pattern, count=500):
            name = key.decode() if isinstance(key, bytes) else key
            state = self.client.hget(key, "state")
            found[name[len(marker) :]] = state.decode() if state else "closed"
        return found

    def in_flight(self, host: str, *, now: float | None = None) -> int:
        """Live slots of a host (tests and metrics)."""
        now_ms = int((time.time() if now is None else now) * 1000)
        return int(self.client.zcount(f"{self.prefix}slots:{host}", now_ms + 1, "+inf"))


@dataclass
class _LocalHost:
    slots: dict[str, float] = field(default_factory=dict)  # token -> expiry (epoch seconds)
    fails: int = 0
    state: str = "closed"
    until: float = 0.0
    probe: float = 0.0
    opens: int = 0


def _started(entry: _LocalHost, config: GateConfig) -> float:
    """When the host's oldest live request began (a slot's expiry is its start + slot_ttl)."""
    return min(entry.slots.values()) - config.slot_ttl


class LocalGate(Gate):
    """The same rules for one process, for local mode (no Redis) and as a fallback."""

    def __init__(self, *, config: GateConfig):
        self.config = config
        self._hosts: dict[str, _LocalHost] = {}
        self._lock = threading.Lock()

    def admit(
        self, wanted: Mapping[str, int], *, cap: int, now: float | None = None
    ) -> dict[str, Admission]:
        now = time.time() if now is None else now
        prefix = _LOCAL_TOKEN + _token_prefix()
        admissions = {}
        with self._lock:
            for i, (host, allow) in enumerate(wanted.items(), start=1):
                if allow <= 0:
                    continue
                entry = self._hosts.setdefault(host, _LocalHost())
                retry_at = None
                probe = False
                if entry.state == "open":
                    if now < entry.until:
                        allow, retry_at = 0, entry.until
                    else:
                        allow, probe = 1, True
                elif entry.state == "half":
                    if now < entry.probe:
                        allow, retry_at = 0, min(entry.probe, now + _PROBE_POLL_MS / 1000)
                    else:
                        allow, probe = 1, True
                tokens: tuple[str, ...] = ()
                if allow > 0:
                    entry.slots = {t: exp for t, exp in entry.slots.items() if exp > now}
                    limit = cap
                    started = _started(entry, self.config) if entry.slots else now
                    if not probe and now - started > self.config.slow:
                        limit = 1  # hanging: one request at a time until it answers
                    granted = max(0, min(allow, limit - len(entry.slots)))
                    tokens = tuple(f"{prefix}:{i}:{k}" for k in range(1, granted + 1))
                    for token in tokens:
                        entry.slots[token] = now + self.config.slot_ttl
                    if granted and probe:
                        entry.state, entry.probe = "half", now + self.config.slot_ttl
                admissions[host] = Admission(tokens, retry_at, probe and bool(tokens))
        return admissions

    def settle(self, tallies: Mapping[str, HostTally], *, now: float | None = None) -> Settled:
        now = time.time() if now is None else now
        config = self.config
        healed, reopened = set(), {}
        with self._lock:
            for host, tally in tallies.items():
                entry = self._hosts.setdefault(host, _LocalHost())
                for token in tally.tokens:
                    entry.slots.pop(token, None)
                if tally.ok:
                    if entry.state != "closed":
                        healed.add(host)
                    entry.fails, entry.state, entry.opens = 0, "closed", 0
                elif tally.failed:
                    entry.fails += tally.failed
                    if entry.state == "half" or (
                        entry.state != "open" and (entry.fails >= config.failures or tally.hung)
                    ):
                        entry.opens += 1
                        pause = min(config.cooldown * 2 ** (entry.opens - 1), config.max_cooldown)
                        entry.state, entry.until = "open", now + pause
                        reopened[host] = entry.until
        return Settled(frozenset(healed), reopened)

    def rooms(self, *, now: float | None = None) -> dict[str, HostRoom]:
        now = time.time() if now is None else now
        found = {}
        with self._lock:
            for host, entry in self._hosts.items():
                entry.slots = {t: exp for t, exp in entry.slots.items() if exp > now}
                held, probe = None, False
                if entry.state == "open":
                    held, probe = (entry.until, False) if now < entry.until else (None, True)
                elif entry.state == "half":
                    if now < entry.probe:
                        held = min(entry.probe, now + _PROBE_POLL_MS / 1000)
                    else:
                        probe = True
                if not entry.slots and held is None and not probe:
                    continue
                started = _started(entry, self.config) if entry.slots else None
                found[host] = HostRoom(
                    in_flight=len(entry.slots),
                    oldest_started=started,
                    held_until=held,
                    probe=probe,
                    slow=started is not None and now - started > self.config.slow,
                )
        return found

    def states(self) -> dict[str, str]:
        with self._lock:
            return {
                host: entry.state
                for host, entry in self._hosts.items()
                if entry.state != "closed" or entry.fails
            }

    def in_flight(self, host: str, *, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            entry = self._hosts.get(host)
            return sum(1 for exp in entry.slots.values() if exp > now) if entry else 0


class ResilientGate(Gate):
    """Redis first; while Redis fails, this process's LocalGate (caps then hold per process,
    which is weaker but keeps postbacks flowing). Tokens go back to whoever issued them."""

    def __init__(self, redis_gate: RedisGate, local_gate: LocalGate):
        self.redis_gate = redis_gate
        self.local_gate = local_gate

    def admit(
        self, wanted: Mapping[str, int], *, cap: int, now: float | None = None
    ) -> dict[str, Admission]:
        try:
            return self.redis_gate.admit(wanted, cap=cap, now=now)
        except RedisError as exc:
            logger.warning("Fairness state in Redis unavailable (%s); using local limits", exc)
            return self.local_gate.admit(wanted, cap=cap, now=now)

    def settle(self, tallies: Mapping[str, HostTally], *, now: float | None = None) -> Settled:
        remote: dict[str, HostTally] = {}
        local: dict[str, HostTally] = {}
        for host, tally in tallies.items():
            is_local = any(token.startswith(_LOCAL_TOKEN) for token in tally.tokens)
            (local if is_local else remote)[host] = tally
        settled = Settled()
        if local:
            settled |= self.local_gate.settle(local, now=now)
        if remote:
            try:
                settled |= self.redis_gate.settle(remote, now=now)
            except RedisError as exc:
                # The slots expire by themselves; the breaker misses these outcomes.
                logger.warning("Could not settle postback slots in Redis: %s", exc)
        return settled

    def rooms(self, *, now: float | None = None) -> dict[str, HostRoom]:
        try:
            remote = self.redis_gate.rooms(now=now)
        except RedisError as exc:
            logger.warning("Fairness state in Redis unavailable (%s); using local limits", exc)
            remote = {}
        # Slots this process took from its local gate while Redis failed are still in flight.
        return self.local_gate.rooms(now=now) | remote

    def states(self) -> dict[str, str]:
        try:
            return self.redis_gate.states()
        except RedisError:
            return self.local_gate.states()

    def heartbeat(self) -> None:
        try:
            self.redis_gate.heartbeat()
        except RedisError as exc:
            logger.warning("Could not renew this process's slots in Redis: %s", exc)


_gates: dict[int, Gate] = {}
_gates_lock = threading.Lock()


def get_gate() -> Gate:
    """This process's gate: Redis-backed when REDIS_URL is set, local otherwise."""
    pid = os.getpid()
    with _gates_lock:
        gate = _gates.get(pid)
        if gate is None:
            config = GateConfig.from_settings()
            client = get_redis()
            local = LocalGate(config=config)
            if client is None:
                gate = local
            else:
                prefix = settings.POSTBACKS_REDIS_PREFIX
                gate = ResilientGate(RedisGate(client, prefix=prefix, config=config), local)
            _gates.clear()  # a forked child must not reuse its parent's gate
            _gates[pid] = gate
        return gate


def reset_gate() -> None:
    """Forget this process's gate (tests change the settings it was built from)."""
    with _gates_lock:
        _gates.clear()


def breaker_states() -> dict[str, str]:
    """Breaker state per host, for /metrics and the admin."""
    return get_gate().states()
