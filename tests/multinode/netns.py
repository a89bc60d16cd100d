"""Separate "hosts" on one Linux machine: network namespaces joined by veth pairs to a bridge.

Every namespace of a run is named `rtmn-<pytest pid>-<role>`, so runs never collide and a later
run can remove what a killed one left behind (`remove_stale`). The bridge lives in a namespace
of its own (the "hub"), and both ends of every veth pair are created directly inside their
namespaces: nothing of the test network, no address and no interface, ever appears in the
machine's own namespace.

A process joins a host with `ip netns exec`; a thread of this process joins one with
`Network.inside(host)` (`setns(2)` is per thread, and a socket stays in the namespace it was
created in, so a server socket opened inside keeps serving there from any thread).
"""

import contextlib
import ipaddress
import os
import random
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "rtmn-"
NETNS_DIR = Path("/run/netns")


def ip(*args: str) -> str:
    """Run `ip …` and return its output; fail with its error message."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _namespace_pids(name: str) -> list[int]:
    with contextlib.suppress(RuntimeError):
        return [int(pid) for pid in ip("netns", "pids", name).split()]
    return []


def delete_namespace(name: str) -> None:
    """Kill whatever still runs in the namespace, then delete it (and its interfaces)."""
    for pid in _namespace_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        ip("netns", "delete", name)


def remove_stale() -> list[str]:
    """Delete namespaces of earlier runs whose pytest process is gone (a run that was killed
    before its finalizers ran). Returns their names."""
    removed = []
    for path in NETNS_DIR.glob(f"{PREFIX}*") if NETNS_DIR.exists() else []:
        owner = path.name[len(PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            delete_namespace(path.name)
            removed.append(path.name)
    return removed


@dataclass(frozen=True)
class Host:
    role: str
    namespace: str
    address: str

    def exec_prefix(self) -> list[str]:
        """Prefix an argv with this to run it on the host."""
        return ["ip", "netns", "exec", self.namespace]


@dataclass
class Network:
    """A /24 from 10.0.0.0/8 on a bridge, and the hosts attached to it."""

    run_id: str = field(default_factory=lambda: str(os.getpid()))
    subnet: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.ip_network(
            f"10.{random.randint(200, 254)}.{random.randint(1, 254)}.0/24"
        )
    )
    hosts: dict[str, Host] = field(default_factory=dict)
    _namespaces: list[str] = field(default_factory=list)

    def _name(self, role: str) -> str:
        return f"{PREFIX}{self.run_id}-{role}"

    @property
    def hub(self) -> str:
        return self._name("hub")

    def _add_namespace(self, name: str) -> None:
        delete_namespace(name)  # a leftover of this very pid (reused) would block the add
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def create(self) -> "Network":
        remove_stale()
        self._add_namespace(self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")
        return self

    def add_host(self, role: str, last_octet: int) -> Host:
        namespace = self._name(role)
        self._add_namespace(namespace)
        address = str(self.subnet.network_address + last_octet)
        # Interface names are per namespace: every host has "eth0"; its peer on the hub is
        # named after the role (at most 15 characters).
        peer = f"v{role}"[:15]
        ip("-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", peer)
        ip("-n", namespace, "link", "set", peer, "netns", self.hub)
        ip("-n", self.hub, "link", "set", peer, "master", "br0", "up")
        ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        host = Host(role, namespace, address)
        self.hosts[role] = host
        return host

    def destroy(self) -> None:
        """Kill every process left in our namespaces and delete them. Safe to call twice."""
        for name in reversed(self._namespaces):
            delete_namespace(name)
        self._namespaces.clear()

    @contextlib.contextmanager
    def inside(self, host: Host) -> Iterator[None]:
        """Run the calling thread inside `host`'s namespace for the block (sockets created in
        it stay there), then return it to the namespace it came from."""
        with (
            open("/proc/thread-self/ns/net") as original,
            open(NETNS_DIR / host.namespace) as target,
        ):
            os.setns(target.fileno(), os.CLONE_NEWNET)
            try:
                yield
            finally:
                os.setns(original.fileno(), os.CLONE_NEWNET)
