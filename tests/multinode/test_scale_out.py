"""Scale-out, shown: two web nodes and two worker nodes on separate hosts (network namespaces),
one PostgreSQL and one Redis, nginx in front, all started from the files in `deploy/`.

Clicks and conversions go through nginx; midway one web node and one worker node are
SIGKILLed. nginx must route around the dead web node, every conversion the API acknowledged
must reach the publisher's server, and every click answered with a 302 must end up in the
database. Throughput with one and with two web nodes is printed (a figure, not an assertion).

Needs root on Linux (network namespaces), Debian's iproute2, nginx and PostgreSQL binaries;
wrk for the throughput figure when installed (else a slower Python client measures it).
"""

import json
import os
import shutil
import signal
import sys
import threading
import time

import pytest

from tests.e2e.processes import wait_until
from tests.multinode.cluster import POOLS, Cluster, click_throughput, pool_port
from tests.multinode.load import Load
from tests.multinode.netns import Network

CLICKS = 3000  # two in three are converted: 3,000 clicks and 2,000 conversions
BENCH_SECONDS = 4
MAIN_PORT = 80  # nginx with both web nodes
SINGLE_PORT = 8081  # the same config with one web node, for the throughput comparison


def missing_requirements() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nginx", "redis-server", "runuser"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed"
    return None


pytestmark = [
    pytest.mark.multinode,
    pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements())),
]


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(Network(), tmp_path)
    try:
        cluster.build_network()
        cluster.start_postgres()
        cluster.start_redis()
        cluster.install()
        for name in ("web1", "web2"):
            cluster.start_web(name)
        for name in ("wk1", "wk2"):
            cluster.start_worker(name)
        cluster.start_beat()
        cluster.start_nginx("nginx", upstreams=["web1", "web2"], port=MAIN_PORT)
        cluster.start_nginx("nginx-single", upstreams=["web1"], port=SINGLE_PORT)
        for name in ("web1", "web2"):
            for pool in POOLS:
                cluster.wait_http(name, pool_port(pool))
        cluster.wait_http("lb", MAIN_PORT)
        cluster.wait_http("lb", SINGLE_PORT)
        for name in ("wk1", "wk2"):
            cluster.services[name].wait_for_log(" ready.", timeout=60)
        cluster.services["beat"].wait_for_log("beat: Starting", timeout=30)
        yield cluster
    finally:
        cluster.stop()


def access_log(cluster: Cluster) -> list[dict]:
    """nginx's JSON access log (flushed first: SIGUSR1 reopens the files)."""
    nginx = cluster.services["nginx"]
    os.kill(nginx.process.pid, signal.SIGUSR1)
    time.sleep(0.5)
    path = cluster.workdir / "nginx-access.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def clicks_missing(cluster: Cluster, click_ids: set[str]) -> set[str]:
    rows = cluster.psql(
        "SELECT click_id FROM tracking_click WHERE click_id = ANY(%s)", [sorted(click_ids)]
    )
    return click_ids - {row[0] for row in rows}


def test_it_routes_around_dead_nodes_and_loses_nothing(cluster, capsys):
    hosts = cluster.network.hosts
    # nginx logs "address:port"; a node is its address, whichever pool answered.
    web1 = hosts["web1"].address
    web2 = hosts["web2"].address

    # Throughput of the click path through nginx: one web node, then two.
    one_node = click_throughput(cluster, port=SINGLE_PORT, seconds=BENCH_SECONDS)
    two_nodes = click_throughput(cluster, port=MAIN_PORT, seconds=BENCH_SECONDS)
    bench_end = time.time()

    load = Load(
        network=cluster.network,
        client=hosts["ext"],
        target=hosts["lb"].address,
        port=MAIN_PORT,
        link=cluster.seed["link"],
        api_key=cluster.seed["api_key"],
        clicks=CLICKS,
    )
    elapsed: list[float] = []
    runner = threading.Thread(target=lambda: elapsed.append(load.run()), daemon=True)
    runner.start()
    assert load.halfway.wait(timeout=120), "the load never got to the kill point"
    killed_at = time.time()
    cluster.kill("web1")
    # On a loaded machine finding and killing the node's processes takes a moment: web1 may
    # still answer until then.
    dead_at = time.time()
    cluster.kill("wk1")
    runner.join(timeout=240)
    assert not runner.is_alive(), "the load did not finish"

    # Every answer was the expected one (no 4xx: no conversion found its click missing).
    assert not load.unexpected, load.unexpected[:10]
    assert len(load.clicks_acked) == CLICKS
    assert len(load.conversions_acked) == CLICKS - (CLICKS + 2) // 3

    # nginx routed around the dead node: the only failures a client saw were requests in
    # flight on web1 when it died (a POST already sent is never retried by nginx), and
    # from shortly after the kill on, every request was answered by web2.
    assert len(load.failures) <= load.threads, load.failures
    assert all(killed_at - 0.5 <= f.at <= dead_at + 3 for f in load.failures), load.failures
    entries = [e for e in access_log(cluster) if e["time"] > bench_end]
    final = [(e, e["upstream"].split(", ")[-1].rpartition(":")[0]) for e in entries]
    before = {node for e, node in final if e["time"] < killed_at}
    after = [(e, node) for e, node in final if e["time"] > dead_at + 1]
    assert before == {web1, web2}
    assert after, "no request was served after the kill"
    assert {node for _, node in after} == {web2}
    assert all(e["status"] < 500 for e, _ in after)
    rerouted = sum(1 for e, _ in after if web1 in e["upstream"])

    # Every acknowledged conversion's postbacks reach the publisher's server.
    assert set(load.event_ids.values()) == load.conversions_acked
    wait_until(
        lambda: set(load.event_ids) <= set(cluster.receiver.received()),
        timeout=120,
        interval=0.5,
        what="every acknowledged conversion's callback",
    )
    received = cluster.receiver.received()
    arrivals = sorted(cluster.receiver.arrivals)
    delivery_seconds = max(arrivals[-1] - arrivals[0], 0.001)
    duplicates = sum(
        count - 1 for event_id, count in received.items() if event_id in load.event_ids
    )

    # Every click answered with a 302 is in the database once the buffer is flushed.
    wait_until(
        lambda: not clicks_missing(cluster, load.clicks_acked),
        timeout=90,
        interval=1,
        what="every acknowledged click in the database",
    )
    conversions = cluster.psql("SELECT count(*) FROM tracking_conversion")[0][0]
    assert conversions == len(load.conversions_acked)

    with capsys.disabled():
        print(
            f"\n[multinode] clicks through nginx ({'wrk -c32' if one_node['tool'] else 'Python client, 16 connections'}, "
            f"{BENCH_SECONDS}s each, all processes on this {os.cpu_count()}-core machine): "
            f"1 web node {one_node['rps']:.0f} req/s (p99 {one_node['p99_ms']:.1f} ms), "
            f"2 web nodes {two_nodes['rps']:.0f} req/s (p99 {two_nodes['p99_ms']:.1f} ms)\n"
            f"[multinode] load: {len(load.clicks_acked)} clicks + {len(load.conversions_acked)} "
            f"conversions in {elapsed[0]:.1f}s; web1+wk1 SIGKILLed after "
            f"{int(load.kill_at * 100)}%: {len(load.failures)} client-visible failures "
            f"(retried), {rerouted} requests nginx moved from web1 to web2, "
            f"{load.limited} conversions answered 429 (per-key limit) and sent again, "
            f"{len(load.event_ids)} callbacks all delivered ({duplicates} duplicates) "
            f"within {delivery_seconds:.1f}s of the first "
            f"({len(arrivals) / delivery_seconds:.0f}/s while the load ran), no click lost"
        )
