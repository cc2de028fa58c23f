"""The overlay mode end to end without Docker: three hosts (namespaces, each
with its own pynet) on an underlay, one etcd, the plugin API spoken as
Docker speaks it, containers as namespaces."""

from __future__ import annotations

import time

import pytest

from tests.support.cluster_rig import Container, Network, running_rig, until
from tests.support.plugin_client import PluginClient

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def rig():
    with running_rig(3) as made:
        yield made


def test_containers_on_three_hosts_reach_each_other(rig):
    net = Network("web", "10.70.0.0/16")
    for host in rig.hosts:
        net.create_on(host)
    containers = [Container(h, net, "c1").start() for h in rig.hosts]
    try:
        ips = [c.ip for c in containers]
        assert len(set(ips)) == 3
        for a in containers:
            for b in containers:
                if a is not b:
                    assert a.ping(b.ip), f"{a.host.name} -> {b.host.name} ({b.ip})"
        # The overlay MTU is the underlay's (1500) minus VXLAN's 50: exact to the byte.
        a, b = containers[0], containers[1]
        assert a.ping(b.ip, size=1450 - 28)
        assert not a.ping(b.ip, size=1450 - 27)
        # Each container's gateway is its own host's bridge, the same address everywhere.
        for c in containers:
            assert c.ping("10.70.0.1")
    finally:
        for c in containers:
            c.remove()


def test_a_mismatched_definition_is_refused_with_the_difference(rig):
    h1, h2 = rig.hosts[0], rig.hosts[1]
    Network("api", "10.71.0.0/24").create_on(h1)
    other = Network("api", "10.71.0.0/24")
    with pytest.raises(RuntimeError, match=r"mtu: 1400 here, 1450 in the cluster"):
        other.create_on(h2, **{"com.docker.network.driver.mtu": "1400"})


def test_a_removed_container_is_forgotten_by_the_peers(rig):
    net = Network("db", "10.72.0.0/24")
    for host in rig.hosts[:2]:
        net.create_on(host)
    a = Container(rig.hosts[0], net, "d1").start()
    b = Container(rig.hosts[1], net, "d2").start()
    assert a.ping(b.ip)
    b_ip = b.ip
    b.remove()
    vx = rig.hosts[0]
    assert until(lambda: b_ip not in _neighbours(vx))
    a.remove()


def _neighbours(host) -> str:
    from tests.support.cluster_rig import sh
    return sh("ip", "-n", host.ns, "neigh", "show", "nud", "permanent").stdout


def test_health_and_capabilities_say_the_overlay_is_there(rig):
    client = PluginClient(rig.hosts[0].socket)
    try:
        caps = client.call("NetworkDriver.GetCapabilities", {})
        assert caps["Scope"] == "local" and caps["ConnectivityScope"] == "global"
    finally:
        client.close()


def _health(host) -> dict:
    client = PluginClient(host.socket)
    try:
        return client.request("GET", "/healthz")[1]
    finally:
        client.close()


def test_etcd_away_stops_only_new_cluster_endpoints(rig):
    """etcd killed: running containers keep talking, a new cluster endpoint fails at once
    with a message that names etcd and says what still works, removals are journaled,
    health says degraded; etcd back: everything resumes without a restart."""
    net = Network("ops", "10.73.0.0/24")
    for host in rig.hosts[:2]:
        net.create_on(host)
    a = Container(rig.hosts[0], net, "o1").start()
    b = Container(rig.hosts[1], net, "o2").start()
    gone = Container(rig.hosts[1], net, "o3").start()
    assert a.ping(b.ip) and a.ping(gone.ip)
    rig.stop_etcd()
    try:
        assert a.ping(b.ip, count=3)  # nothing was flushed
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as refused:
            Container(rig.hosts[0], net, "o4").start()
        assert time.monotonic() - t0 < 3
        assert "198.18.42.100:2379 is unreachable" in str(refused.value)
        assert "running containers are unaffected" in str(refused.value)
        gone_ip = gone.ip
        gone.remove()  # Docker's removal succeeds: the release waits in a journal
        assert until(lambda: _health(rig.hosts[1])["degraded"], 15)
        assert _health(rig.hosts[1])["ready"]
    finally:
        rig.start_etcd()
    # Back: registration, the watch and the journal resume by themselves.
    assert until(lambda: not _health(rig.hosts[0])["degraded"], 15)
    started: list[Container] = []

    def start_one() -> bool:
        try:
            started.append(Container(rig.hosts[0], net, "o5").start())
            return True
        except RuntimeError:
            return False
    assert until(start_one, 10)
    c = started[0]
    assert until(lambda: c.ping(b.ip), 10)  # its peer's watch resumes within seconds
    assert until(lambda: gone_ip not in _neighbours(rig.hosts[0]), 15)
    for x in (a, b, c):
        x.remove()


def _pynet(host, *args: str):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "driver", *args, "--socket", str(host.socket)],
                          capture_output=True, text=True, timeout=30, cwd=str(host.rig.dir.parent))


def test_the_cluster_view_shows_hosts_blocks_and_peers(rig):
    import json
    net = Network("view", "10.75.0.0/24")
    for host in rig.hosts[:2]:
        net.create_on(host)
    a = Container(rig.hosts[0], net, "v1").start()
    b = Container(rig.hosts[1], net, "v2").start()
    try:
        assert until(lambda: a.ping(b.ip))
        shown = json.loads(_pynet(rig.hosts[0], "cluster", "--json").stdout)
        assert {h["host"]: (h["alive"], h["vtep"]) for h in shown["hosts"]} == {
            "h1": (True, "198.18.42.1"), "h2": (True, "198.18.42.2"), "h3": (True, "198.18.42.3")}
        view = next(n for n in shown["networks"] if n["name"] == "view")
        assert view["here"] and set(view["blocks"]) == {"h1", "h2"}
        assert [(p["ip"], p["in_kernel"]) for p in view["peers"]] == [(b.ip, True)]
        text = _pynet(rig.hosts[0], "cluster").stdout
        assert "network view: VNI" in text and "blocks of h2" in text and b.ip in text
        refused = _pynet(rig.hosts[0], "cluster", "--remove-host", "h2")
        assert refused.returncode != 0 and "h2 is alive" in refused.stderr
    finally:
        a.remove()
        b.remove()


def test_overlay_drift_is_found_and_repaired(rig):
    from tests.support.cluster_rig import sh
    net = Network("drift", "10.79.0.0/24")
    for host in rig.hosts[:2]:
        net.create_on(host)
    a = Container(rig.hosts[0], net, "f1").start()
    b = Container(rig.hosts[1], net, "f2").start()
    try:
        assert a.ping(b.ip)
        h1 = rig.hosts[0]
        import json
        shown = json.loads(_pynet(h1, "cluster", "--json").stdout)
        device = next(n["device"] for n in shown["networks"] if n["name"] == "drift")
        sh("ip", "-n", h1.ns, "neigh", "del", b.ip, "dev", device)
        # The periodic reconciliation (every 2 s in the rig) puts it back, and says so.
        assert until(lambda: b.ip in _neighbours(h1), 10)
        assert until(lambda: "overlay peers repaired" in h1.log(), 5)
        sh("ip", "-n", h1.ns, "link", "del", device)
        assert until(lambda: b.ip in _neighbours(h1) and a.ping(b.ip), 15)
        assert "overlay devices recreated" in h1.log()
    finally:
        a.remove()
        b.remove()


def test_a_repeated_create_network_with_its_own_mtu_is_accepted(rig):
    import secrets
    h1 = rig.hosts[0]
    pool = h1.call("IpamDriver.RequestPool", {"Pool": "10.78.0.0/24", "Options": {"pynet.cluster": "again"}})
    gateway = h1.call("IpamDriver.RequestAddress", {
        "PoolID": pool["PoolID"], "Options": {"RequestAddressType": "com.docker.network.gateway"}})["Address"]
    body = {"NetworkID": secrets.token_hex(32),
            "Options": {"com.docker.network.generic": {"pynet.mode": "overlay", "pynet.cluster": "again",
                                                       "com.docker.network.driver.mtu": "1400"}},
            "IPv4Data": [{"AddressSpace": "PynetLocal", "Pool": "10.78.0.0/24", "Gateway": gateway}]}
    h1.call("NetworkDriver.CreateNetwork", body)
    h1.call("NetworkDriver.CreateNetwork", body)  # Docker may repeat it: the same network, its MTU too
    with pytest.raises(RuntimeError, match=r"MTU 'lots': it must be a number from 68 to 1450"):
        h1.call("NetworkDriver.CreateNetwork", {**body, "NetworkID": secrets.token_hex(32), "Options": {
            "com.docker.network.generic": {"pynet.mode": "overlay", "pynet.cluster": "again2",
                                           "com.docker.network.driver.mtu": "lots"}}})
    h1.call("NetworkDriver.DeleteNetwork", {"NetworkID": body["NetworkID"]})
    h1.call("IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})


def test_a_container_gone_behind_pynets_back_is_forgotten_by_the_peers(rig):
    """No DeleteEndpoint came (pynet could not hear it): the bridge mode reclaims the
    endpoint, and its record goes from etcd, so its peers drop its entries."""
    from tests.support.cluster_rig import sh
    net = Network("orphans", "10.74.0.0/24")
    for host in rig.hosts[:2]:
        net.create_on(host)
    a, b = Container(rig.hosts[0], net, "x1").start(), Container(rig.hosts[1], net, "x2").start()
    try:
        assert until(lambda: a.ping(b.ip))
        sh("ip", "netns", "del", b.ns)
        assert until(lambda: b.ip not in _neighbours(rig.hosts[0]), 20), _neighbours(rig.hosts[0])
    finally:
        a.remove()
        b.remove()


def test_the_path_of_a_cluster_endpoint_names_its_device_and_peers(rig):
    """`pynet path` of an overlay container: its VXLAN device and, per peer host, the
    entries of that host's containers checked against etcd; an entry deleted behind
    pynet's back is marked with the repair that puts it back."""
    import json
    from tests.support.cluster_rig import run, sh
    net = Network("paths", "10.68.0.0/24")
    for host in rig.hosts[:2]:
        net.create_on(host)
    a = Container(rig.hosts[0], net, "p1").start()
    b = Container(rig.hosts[1], net, "p2").start()
    h1 = rig.hosts[0]
    try:
        assert until(lambda: a.ping(b.ip))
        shown = _pynet(h1, "path", a.endpoint[:12], "--to", b.ip, "--json")
        assert shown.returncode == 0, shown.stderr
        body = json.loads(shown.stdout)
        assert body["mode"] == "overlay"
        kinds = [h["kind"] for h in body["hops"]]
        assert kinds == ["container", "veth", "bridge", "firewall", "vxlan", "peers", "uplink"]
        device = next(h for h in body["hops"] if h["kind"] == "vxlan")
        assert device["ok"] and device["holds"]["local"] == h1.vtep and device["holds"]["state"] == "up"
        peers = next(h for h in body["hops"] if h["kind"] == "peers")
        assert [(p["host"], p["ip"], p["vtep"], p["in_kernel"]) for p in peers["items"]] == [
            ("h2", b.ip, rig.hosts[1].vtep, True)]
        last = body["to"]["steps"][-1]
        assert last["verdict"] == "leave" and last["what"].startswith("to host h2: VXLAN") and last["at"] == "overlay"
        mac = peers["items"][0]["mac"]

        def marked() -> bool:  # reconciliation (every 2 s here) puts the entry back: catch it missing
            sh("bridge", "-n", h1.ns, "fdb", "del", mac, "dev", device["name"], "self", check=False)
            got = json.loads(run(["curl", "-s", "--unix-socket", str(h1.socket),
                                  f"http://pynet/debug/path?endpoint={a.endpoint}"], timeout=10).stdout)
            hop = next(h for h in got["hops"] if h["kind"] == "peers")
            return any("(overlay peers repaired)" in p["repair"] for p in hop["problems"])
        assert until(marked, 20)
        assert until(lambda: json.loads(_pynet(h1, "path", a.endpoint, "--json").stdout)["ok"], 15)
    finally:
        a.remove()
        b.remove()
