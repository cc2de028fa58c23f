"""The overlay under load, without Docker: first pings of new containers,
a late host learning 200 endpoints, and pynet restarts that write nothing
to etcd but liveness."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time

import pytest

from tests.support.cluster_rig import ETCD_IP, Container, Network, histogram, metrics_text, running_rig, sh

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def rig():
    with running_rig(3) as made:
        yield made


def permanent_neighbours(host) -> int:
    return len(sh("ip", "-n", host.ns, "neigh", "show", "nud", "permanent").stdout.splitlines())


def test_fifty_new_containers_answer_their_first_ping_across_hosts(rig):
    h1, h2 = rig.hosts[0], rig.hosts[1]
    net = Network("burst", "10.76.0.0/22")
    net.create_on(h1)
    net.create_on(h2)
    target = Container(h2, net, "t").start()
    made, answered = [], 0
    try:
        for i in range(50):
            c = Container(h1, net, f"b{i}").start()  # then at once, no sleep: the first ping
            made.append(c)
            answered += c.ping(target.ip, wait=1)
        print(f"first pings answered: {answered} of 50")
        assert answered >= 49, f"{answered} of 50 first pings answered"
        # h2 learned each new container from etcd: publish to programmed, from its metrics.
        buckets = histogram(metrics_text(h2.socket), "pynet_cluster_publish_to_programmed_seconds")
        total = buckets[float("inf")]
        assert total >= 50
        print("publish to programmed on h2:", {le: f"{n / total:.0%}" for le, n in sorted(buckets.items())})
        assert buckets[0.25] / total >= 0.99, buckets
    finally:
        for c in [*made, target]:
            c.remove()


def test_a_late_host_learns_two_hundred_endpoints_in_under_two_seconds(rig):
    h1, h2, h3 = rig.hosts
    net = Network("late", "10.77.0.0/23")
    net.create_on(h1)
    net.create_on(h2)
    for _ in range(200):  # endpoints as Docker makes them, no container needed to publish them
        address = h1.call("IpamDriver.RequestAddress", {"PoolID": net.pools["h1"]})["Address"]
        h1.call("NetworkDriver.CreateEndpoint", {"NetworkID": net.ids["h1"], "EndpointID": secrets.token_hex(32),
                                                 "Interface": {"Address": address}})
    before = permanent_neighbours(h3)
    t0 = time.monotonic()
    net.create_on(h3)
    while permanent_neighbours(h3) < before + 200 and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    took = time.monotonic() - t0
    print(f"late host programmed 200 peers in {took:.2f} s")
    assert permanent_neighbours(h3) >= before + 200
    assert took < 2


def etcd_keys(rig) -> dict[str, str]:
    """Every key but the liveness keys, with its revision: what a restart must not touch."""
    out = subprocess.run(["ip", "netns", "exec", rig.underlay.etcd_ns, "etcdctl", "--endpoints",
                          f"{ETCD_IP}:2379", "get", "/pynet/", "--prefix", "-w", "json"],
                         capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}).stdout
    import base64
    import json
    kvs = json.loads(out).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): kv["mod_revision"] for kv in kvs
            if not base64.b64decode(kv["key"]).decode().startswith("/pynet/hosts/")}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_pynet_restart_keeps_traffic_and_writes_only_liveness(rig, sig):
    h1, h2 = rig.hosts[0], rig.hosts[1]
    net = Network(f"restart-{sig.name.lower()}", f"10.78.{sig.value}.0/24")
    net.create_on(h1)
    net.create_on(h2)
    a, b = Container(h1, net, "r1").start(), Container(h2, net, "r2").start()
    pinger = subprocess.Popen(["ip", "netns", "exec", a.ns, "ping", "-i", "0.05", "-w", "6", b.ip],
                              stdout=subprocess.PIPE, text=True)
    before = etcd_keys(rig)
    time.sleep(1)
    h2.stop(sig)
    h2.start()
    out, _ = pinger.communicate(timeout=20)
    lost = re.search(r"(\d+)% packet loss", out)
    assert lost and int(lost.group(1)) == 0, out[-300:]
    time.sleep(1)
    assert etcd_keys(rig) == before  # the restart wrote nothing but its liveness key
    c = Container(h2, net, "r3").start()  # and it serves the cluster network afterwards
    assert a.ping(c.ip) and c.ip not in (a.ip, b.ip)
    for x in (a, b, c):
        x.remove()
