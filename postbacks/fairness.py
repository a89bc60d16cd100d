"""Fairness between publisher endpoints: a cap on requests in flight per destination host and
a circuit breaker per host, shared by every worker through Redis.

Why: one publisher whose server hangs would otherwise hold every connection of every worker for
the whole HTTP timeout, and everybody else's postbacks would wait behind it. With the cap it
holds at most `cap` requests at a time, whatever the number of workers; with the breaker, after
a run of failures it gets no request at all except one probe per cool-down.

A host is `name:port` as the dispatcher sees it (two receivers on one machine are two hosts).

State in Redis, per host (both keys expire by themselves, so a crashed worker leaks nothing):
- `<prefix>slots:<host>`: a sorted set of slot tokens scored by their expiry (ms). A worker
  takes slots before sending and gives them back when the requests end; a slot whose worker
  died expires after `slot_ttl` (longer than any request can take).
- `<prefix>breaker:<host>`: a hash `fails` (failures in a row), `state` (absent = closed,
  `open`, `half`), `until` (ms: when an open breaker lets a probe through), `probe` (ms: when a
  half-open probe that never reported back is given up), `opens` (how often it opened in a row;
  the cool-down doubles each time up to `max_cooldown`).

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

_ADMIT = """
local now = tonumber(ARGV[1])
local slot_ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local probe_ttl = tonumber(ARGV[4])
local prefix = ARGV[5]
local probe_poll = PROBE_POLL_MS
local out = {}
for i = 1, #KEYS / 2 do
  local slots = KEYS[2 * i - 1]
  local breaker = KEYS[2 * i]
  local allow = tonumber(ARGV[5 + i])
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
    if now < probe_until then
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
    granted = math.max(0, math.min(allow, cap - redis.call('ZCARD', slots)))
    for k = 1, granted do
      redis.call('ZADD', slots, now + slot_ttl, prefix .. ':' .. i .. ':' .. k)
    end
    if granted > 0 then
      redis.call('PEXPIRE', slots, slot_ttl)
      if probe == 1 then
        redis.call('HSET', breaker, 'state', 'half', 'probe', now + probe_ttl)
      end
    end
  end
  out[#out + 1] = granted
  out[#out + 1] = retry_at
  out[#out + 1] = probe * granted
end
return out
""".replace("PROBE_POLL_MS", str(_PROBE_POLL_MS))

_SETTLE = """
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
local max_cooldown = tonumber(ARGV[4])
local keep = tonumber(ARGV[5])
local pos = 6
for i = 1, #KEYS / 2 do
  local slots = KEYS[2 * i - 1]
  local breaker = KEYS[2 * i]
  local ok = tonumber(ARGV[pos])
  local failed = tonumber(ARGV[pos + 1])
  local n = tonumber(ARGV[pos + 2])
  pos = pos + 3
  for k = 0, n - 1 do
    redis.call('ZREM', slots, ARGV[pos + k])
  end
  pos = pos + n
  if ok > 0 then
    redis.call('DEL', breaker)
  elseif failed > 0 then
    local fails = redis.call('HINCRBY', breaker, 'fails', failed)
    local state = redis.call('HGET', breaker, 'state')
    if state == 'half' or (state ~= 'open' and fails >= threshold) then
      local opens = redis.call('HINCRBY', breaker, 'opens', 1)
      local pause = math.min(cooldown * 2 ^ (opens - 1), max_cooldown)
      redis.call('HSET', breaker, 'state', 'open', 'until', now + pause)
      redis.call('HDEL', breaker, 'probe')
    end
    redis.call('PEXPIRE', breaker, keep)
  end
end
return 1
"""


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
    tokens: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GateConfig:
    slot_ttl: float  # seconds a slot lives if its worker never gives it back
    failures: int  # failures in a row that open the breaker
    cooldown: float  # seconds an open breaker waits before its first probe
    max_cooldown: float

    @classmethod
    def from_settings(cls) -> "GateConfig":
        return cls(
            slot_ttl=slot_ttl_seconds(),
            failures=settings.POSTBACKS_BREAKER_FAILURES,
            cooldown=settings.POSTBACKS_BREAKER_COOLDOWN_SECONDS,
            max_cooldown=settings.POSTBACKS_BREAKER_MAX_COOLDOWN_SECONDS,
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


def _token_prefix() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{next(_token_counter)}"


class Gate(abc.ABC):
    """Admission and breaker bookkeeping; see the module docstring."""

    @abc.abstractmethod
    def admit(
        self, wanted: Mapping[str, int], *, cap: int, now: float | None = None
    ) -> dict[str, Admission]:
        """Take up to `wanted[host]` slots per host, at most `cap` in flight per host."""

    @abc.abstractmethod
    def settle(self, tallies: Mapping[str, HostTally], *, now: float | None = None) -> None:
        """Give slots back and feed the breakers with how the requests ended."""

    @abc.abstractmethod
    def states(self) -> dict[str, str]:
        """Breaker state per host that has one: "open", "half" (probing) or "closed"."""


class RedisGate(Gate):
    def __init__(self, client, *, prefix: str, config: GateConfig):
        self.client = client
        self.prefix = prefix
        self.config = config
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

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
        args = [now_ms, ttl_ms, cap, ttl_ms, prefix, *(wanted[h] for h in hosts)]
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

    def settle(self, tallies: Mapping[str, HostTally], *, now: float | None = None) -> None:
        hosts = [h for h, t in tallies.items() if t.ok or t.failed or t.tokens]
        if not hosts:
            return
        config = self.config
        args: list = [
            int((time.time() if now is None else now) * 1000),
            config.failures,
            int(config.cooldown * 1000),
            int(config.max_cooldown * 1000),
            _BREAKER_KEEP_MS,
        ]
        for host in hosts:
            tally = tallies[host]
            args += [tally.ok, tally.failed, len(tally.tokens), *tally.tokens]
        self._settle(keys=self._keys(hosts), args=args)

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
                    granted = max(0, min(allow, cap - len(entry.slots)))
                    tokens = tuple(f"{prefix}:{i}:{k}" for k in range(1, granted + 1))
                    for token in tokens:
                        entry.slots[token] = now + self.config.slot_ttl
                    if granted and probe:
                        entry.state, entry.probe = "half", now + self.config.slot_ttl
                admissions[host] = Admission(tokens, retry_at, probe and bool(tokens))
        return admissions

    def settle(self, tallies: Mapping[str, HostTally], *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        config = self.config
        with self._lock:
            for host, tally in tallies.items():
                entry = self._hosts.setdefault(host, _LocalHost())
                for token in tally.tokens:
                    entry.slots.pop(token, None)
                if tally.ok:
                    entry.fails, entry.state, entry.opens = 0, "closed", 0
                elif tally.failed:
                    entry.fails += tally.failed
                    if entry.state == "half" or (
                        entry.state != "open" and entry.fails >= config.failures
                    ):
                        entry.opens += 1
                        pause = min(config.cooldown * 2 ** (entry.opens - 1), config.max_cooldown)
                        entry.state, entry.until = "open", now + pause

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

    def settle(self, tallies: Mapping[str, HostTally], *, now: float | None = None) -> None:
        remote: dict[str, HostTally] = {}
        local: dict[str, HostTally] = {}
        for host, tally in tallies.items():
            is_local = any(token.startswith(_LOCAL_TOKEN) for token in tally.tokens)
            (local if is_local else remote)[host] = tally
        if local:
            self.local_gate.settle(local, now=now)
        if remote:
            try:
                self.redis_gate.settle(remote, now=now)
            except RedisError as exc:
                # The slots expire by themselves; the breaker misses these outcomes.
                logger.warning("Could not settle postback slots in Redis: %s", exc)

    def states(self) -> dict[str, str]:
        try:
            return self.redis_gate.states()
        except RedisError:
            return self.local_gate.states()


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
