"""The routed mode end to end without Docker: three hosts (namespaces, each
with its own pynet) on one underlay segment, one etcd, the plugin API
spoken as Docker speaks it, containers as namespaces. No encapsulation: a
/32 route per remote container through its host's underlay address."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.support.cluster_rig import (ETCD_IP, UNDERLAY, Container, Network, pynet_routes, running_rig, sh,
                                      until)

pytestmark = pytest.mark.kernel

PROTO = "158"  # pynet's routes (driver/kernel/routes.py)
routes = pynet_routes


def RoutedNetwork(name: str, subnet: str) -> Network:
    return Network(name, subnet, mode="routed")


@pytest.fixture(scope="module")
def rig():
    with running_rig(3) as made:
        yield made


def etcdctl(rig, *args: str) -> str:
    return sh("ip", "netns", "exec", rig.underlay.etcd_ns, "etcdctl", "--endpoints", f"{ETCD_IP}:2379",
              *args).stdout


def peer_seen_by(server, client, port: int = 7070) -> str:
    """A TCP connection from `client` to `server`: the address the server saw it from."""
    code = ("import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
            f"s.bind(({server.ip!r}, {port})); s.listen(); c, a = s.accept(); c.sendall(a[0].encode()); c.close()")
    listening = subprocess.Popen(["ip", "netns", "exec", server.ns, sys.executable, "-c", code])
    try:
        ask = ("import socket, time\nfor _ in range(50):\n    try:\n"
               f"        c = socket.create_connection(({server.ip!r}, {port}), 2); print(c.recv(64).decode()); break\n"
               "    except OSError:\n        time.sleep(0.1)\n")
        return sh("ip", "netns", "exec", client.ns, sys.executable, "-c", ask).stdout.strip()
    finally:
        listening.kill()
        listening.wait(5)


def test_containers_on_three_hosts_reach_each_other_unencapsulated(rig):
    net = RoutedNetwork("flat", "10.90.0.0/16")
    for host in rig.hosts:
        net.create_on(host)
    containers = [Container(h, net, "r1").start() for h in rig.hosts]
    try:
        for a in containers:
            for b in containers:
                if a is not b:
                    assert until(lambda a=a, b=b: a.ping(b.ip)), f"{a.host.name} -> {b.host.name} ({b.ip})"
        a, b, c = containers
        # Each host routes each remote container through the underlay address of its host.
        assert routes(a.host) == {b.ip: b.host.vtep, c.ip: c.host.vtep}
        # The MTU is the underlay's (1500): no encapsulation, exact to the byte.
        assert a.ping(b.ip, size=1500 - 28)
        assert not a.ping(b.ip, size=1500 - 27)
        # TCP across hosts, and the peer sees the container's own address (no NAT inside the subnet).
        assert peer_seen_by(b, a) == a.ip
        # Each container's gateway is its own host's bridge, the same address everywhere.
        for x in containers:
            assert x.ping("10.90.0.1")
        # Its added rules read back as written: the doctor finds nothing, and the firewall
        # check (at each reconciliation, every 2 s in the rig) restores nothing.
        restored = a.host.log().count("to restore pynet's rules")
        time.sleep(2.5)
        assert a.host.log().count("to restore pynet's rules") == restored
        doctor = subprocess.run([sys.executable, "-m", "driver", "doctor", "--socket", str(a.host.socket)],
                                capture_output=True, text=True, timeout=30)
        assert doctor.returncode == 0, doctor.stdout
        # `pynet path`: the routes to the peer hosts, and a packet to b walked through the
        # routed mode's own accept and its /32 route.
        shown = subprocess.run([sys.executable, "-m", "driver", "path", a.endpoint, "--to", f"{b.ip}:80", "--json",
                                "--socket", str(a.host.socket)], capture_output=True, text=True, timeout=30)
        body = json.loads(shown.stdout)
        assert body["mode"] == "routed" and body["ok"], shown.stdout
        (hop,) = [h for h in body["hops"] if h["kind"] == "routes"]
        assert {(r["host"], r["ip"], r["via"], r["in_kernel"]) for r in hop["items"]} == {
            (b.host.name, b.ip, b.host.vtep, True), (c.host.name, c.ip, c.host.vtep, True)}
        accept, last = body["to"]["steps"][-2:]
        assert accept["verdict"] == "pass" and f"-d {net.subnet} -i " in accept["rule"], accept
        assert last == {**last, "at": "routed", "verdict": "leave"}
        assert last["what"].startswith(f"to host {b.host.name}: route via {b.host.vtep}")
        # A removed container's route goes from every peer.
        c.remove()
        containers.remove(c)
        assert until(lambda: c.ip not in routes(a.host) and c.ip not in routes(b.host))
        assert not a.ping(c.ip)
    finally:
        for x in containers:
            x.remove()


def test_a_name_is_routed_or_overlay_across_the_cluster_never_both(rig):
    RoutedNetwork("either", "10.91.0.0/24").create_on(rig.hosts[0])
    with pytest.raises(RuntimeError, match="cluster network either is a routed network in the cluster; this host"
                                           " asks for a overlay one"):
        Network("either", "10.91.0.0/24").create_on(rig.hosts[1])


def test_addresses_from_elsewhere_than_the_clusters_pools_are_refused(rig):
    h1 = rig.hosts[0]
    pool = h1.call("IpamDriver.RequestPool", {"Pool": "10.99.0.0/24"})  # no pynet.cluster: a local pool
    try:
        with pytest.raises(RuntimeError, match=r"subnet 10.99.0.0/24 of routed cluster network solo is not from the"
                                               r" cluster's pools .* --ipam-opt pynet.cluster=solo"):
            h1.call("NetworkDriver.CreateNetwork", {
                "NetworkID": "e" * 64, "Options": {"com.docker.network.generic": {
                    "pynet.mode": "routed", "pynet.cluster": "solo"}},
                "IPv4Data": [{"AddressSpace": "PynetLocal", "Pool": "10.99.0.0/24", "Gateway": "10.99.0.1/24"}]})
    finally:
        h1.call("IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})


def test_icc_off_and_internal_hold_across_hosts(rig):
    closed = RoutedNetwork("closed", "10.92.0.0/24")
    inside = RoutedNetwork("inside", "10.93.0.0/24")
    for host in rig.hosts[:2]:
        closed.create_on(host, **{"com.docker.network.bridge.enable_icc": "false"})
        inside.create_on(host, internal=True)
    a, b = Container(rig.hosts[0], closed, "i1").start(), Container(rig.hosts[1], closed, "i2").start()
    c, d = Container(rig.hosts[0], inside, "n1").start(), Container(rig.hosts[1], inside, "n2").start()
    try:
        assert until(lambda: b.ip in routes(a.host) and d.ip in routes(c.host))
        assert not a.ping(b.ip) and not b.ping(a.ip)  # ICC off: not across hosts either
        assert a.ping("10.92.0.1")  # its gateway still answers
        assert until(lambda: c.ping(d.ip))  # --internal: the network's own traffic crosses hosts
        assert not c.ping(rig.hosts[1].vtep)  # ... and nothing else leaves it
        assert not a.ping(d.ip)  # two networks stay apart, across hosts too
    finally:
        for x in (a, b, c, d):
            x.remove()


def test_a_host_off_the_segment_is_reported_never_blackholed(rig):
    h1 = rig.hosts[0]
    net = RoutedNetwork("far", "10.94.0.0/24")
    net.create_on(h1)
    # A host behind a router: h1 reaches 198.51.100.0/24 only through h3.
    sh("ip", "-n", h1.ns, "route", "add", "198.51.100.0/24", "via", f"{UNDERLAY}.3")
    key = "/pynet/endpoints/far/" + "f" * 64
    record = {"host": "h9", "epoch": 1, "vtep": "198.51.100.9", "ips": ["10.94.0.200"], "published": time.time()}
    try:
        etcdctl(rig, "put", key, json.dumps(record))
        assert until(lambda: "h9" in json.dumps(h1.client.request("GET", "/healthz")[1]))
        status, health = h1.client.request("GET", "/healthz")
        assert health["degraded"] and "through the router" in health["checks"]["routed"], health
        assert "10.94.0.200" not in routes(h1)
        doctor = subprocess.run([sys.executable, "-m", "driver", "doctor", "--socket", str(h1.socket)],
                                capture_output=True, text=True, timeout=30, cwd=str(rig.dir.parent))
        assert "host h9 (198.51.100.9): it is reached through the router" in doctor.stdout
        assert "one L2 segment" in doctor.stdout
        shown = subprocess.run([sys.executable, "-m", "driver", "cluster", "--socket", str(h1.socket)],
                               capture_output=True, text=True, timeout=30).stdout
        assert "PROBLEM: host h9 (198.51.100.9)" in shown
        assert "host h9 (198.51.100.9): it is reached through the router 198.18.42.3" in h1.log()
    finally:
        etcdctl(rig, "del", key)
        sh("ip", "-n", h1.ns, "route", "del", "198.51.100.0/24", check=False)


def pair(rig, name: str, subnet: str):
    """A routed network on h1 and h2, a container on each that reaches the other."""
    h1, h2 = rig.hosts[0], rig.hosts[1]
    net = RoutedNetwork(name, subnet)
    for host in (h1, h2):
        net.create_on(host)
    a, b = Container(h1, net, f"{name}1").start(), Container(h2, net, f"{name}2").start()
    assert until(lambda: a.ping(b.ip))
    return h1, h2, net, a, b


def test_etcd_away_keeps_the_routes_and_new_containers_wait(rig):
    h1, h2, net, a, b = pair(rig, "steady", "10.95.0.0/24")
    try:
        rig.stop_etcd()
        try:
            time.sleep(2)
            assert a.ping(b.ip) and routes(h1) .get(b.ip) == h2.vtep  # the data plane stays
            with pytest.raises(RuntimeError):
                Container(h2, net, "s3").start()
        finally:
            rig.start_etcd()
        late = Container(h2, net, "s4")
        deadline = time.monotonic() + 15
        while True:  # the etcd client reconnects with a backoff: a new container may wait for it
            try:
                late.start()
                break
            except RuntimeError:
                sh("ip", "netns", "del", late.ns, check=False)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert until(lambda: a.ping(late.ip), 15)
        late.remove()
    finally:
        for x in (a, b):
            x.remove()


def test_drift_is_found_and_repaired(rig):
    h1, h2, net, a, b = pair(rig, "drifty", "10.96.0.0/24")
    try:
        sh("ip", "-n", h1.ns, "route", "del", f"{b.ip}/32")
        sh("ip", "-n", h1.ns, "route", "add", "10.96.0.250/32", "via", h2.vtep, "proto", PROTO)  # nobody's
        assert until(lambda: routes(h1).get(b.ip) == h2.vtep and "10.96.0.250" not in routes(h1), 10)
        assert until(lambda: "routes repaired" in h1.log(), 5)
        assert a.ping(b.ip)
    finally:
        for x in (a, b):
            x.remove()


def test_restarted_pynet_keeps_its_routes_and_rules(rig):
    h1, h2, net, a, b = pair(rig, "kept", "10.97.0.0/24")
    try:
        h1.stop(signal.SIGKILL)
        assert a.ping(b.ip)  # the kernel keeps working without pynet
        h1.start(*rig.flags)
        assert until(lambda: routes(h1).get(b.ip) == h2.vtep)
        late = Container(h2, net, "k3").start()
        assert until(lambda: a.ping(late.ip))
        late.remove()
    finally:
        for x in (a, b):
            x.remove()


def test_a_container_gone_behind_pynets_back_stops_being_routed(rig):
    """Docker tore a container down while pynet could not hear it (no DeleteEndpoint):
    the bridge mode reclaims the endpoint, and its record goes from etcd with it."""
    h1, h2, net, a, b = pair(rig, "orphan", "10.89.0.0/24")
    try:
        assert routes(h1).get(b.ip) == h2.vtep
        sh("ip", "netns", "del", b.ns)  # its veth goes with it
        assert until(lambda: "reclaimed" in h2.log() and b.ip not in routes(h1), 20), routes(h1)
    finally:
        a.remove()
        b.remove()
