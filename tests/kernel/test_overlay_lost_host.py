"""A host lost for good: after the grace period another host fences and
reclaims it, its peers drop its entries, its addresses cool down, then are
free; when it comes back it registers again and resurrects nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.support.cluster_rig import ETCD_IP, Container, Network, running_rig, sh, until

pytestmark = pytest.mark.kernel

FLAGS = ("--host-lease", "2", "--lost-host-grace", "2", "--reclaim-cooldown", "3")


@pytest.fixture
def rig():
    with running_rig(3, FLAGS) as made:
        yield made


def etcd_json(rig, key: str):
    out = subprocess.run(["ip", "netns", "exec", rig.underlay.etcd_ns, "etcdctl", "--endpoints", f"{ETCD_IP}:2379",
                          "get", key, "--print-value-only"], capture_output=True, text=True,
                         env={**os.environ, "ETCDCTL_API": "3"}).stdout
    return json.loads(out) if out.strip() else None


def guard(host) -> str:
    return sh("ip", "netns", "exec", host.ns, "iptables", "-S", "PYNET-INPUT").stdout


def neighbours(host) -> str:
    return sh("ip", "-n", host.ns, "neigh", "show", "nud", "permanent").stdout


def test_a_lost_host_is_reclaimed_and_resurrects_nothing(rig):
    h1, h2, h3 = rig.hosts
    net = Network("lost", "10.74.0.0/24")
    for host in rig.hosts:
        net.create_on(host)
    a = Container(h1, net, "l1").start()
    doomed = Container(h3, net, "l3").start()
    assert a.ping(doomed.ip)
    lost_ip = doomed.ip
    member = f"-s {h3.vtep}/32 -d {h1.vtep}/32 -p udp -m udp --dport 4789"
    assert member in guard(h1)  # h1 accepts VXLAN from h3
    h3.stop(signal.SIGKILL)  # the whole host: its pynet, and (below) its containers
    sh("ip", "netns", "del", doomed.ns)
    # Lease (2 s) + grace (2 s) + a check (5 s at most): its peers forget it, its address cools.
    assert until(lambda: lost_ip not in neighbours(h1), 20), neighbours(h1)
    assert until(lambda: member not in guard(h1), 5)  # and cut it off
    claim = etcd_json(rig, f"/pynet/addresses/lost/{lost_ip}")
    assert claim is not None and claim.get("was") == "h3" and "cooling_until" in claim
    assert "reclaimed" in h1.log() + h2.log()
    # After the cool-down the address can be given to a container on another host.
    time.sleep(max(0.0, claim["cooling_until"] - time.time()) + 0.5)
    taken = h2.call("IpamDriver.RequestAddress", {"PoolID": net.pools["h2"], "Address": lost_ip})
    assert taken["Address"] == f"{lost_ip}/24"
    # h3 comes back with its old state: it registers again under the new epoch, and
    # neither claims nor publishes what was reclaimed.
    h3.start(*FLAGS)
    assert until(lambda: "was reclaimed while away" in h3.log(), 10)
    assert etcd_json(rig, f"/pynet/addresses/lost/{lost_ip}")["host"] == "h2"
    assert until(lambda: (etcd_json(rig, "/pynet/hosts/h3") or {}).get("epoch") == 2, 10)
    assert until(lambda: member in guard(h1), 5)  # registered again: let in again
    fresh = Container(h3, net, "l4").start()
    assert fresh.ip != lost_ip and a.ping(fresh.ip)
    for c in (a, fresh):
        c.remove()


def test_a_lost_hosts_routes_go_from_its_peers_in_routed_mode(rig):
    from tests.support.cluster_rig import pynet_routes as routes
    h1, h2, h3 = rig.hosts
    net = Network("lostr", "10.98.0.0/24", mode="routed")
    for host in rig.hosts:
        net.create_on(host)
    a = Container(h1, net, "r1").start()
    doomed = Container(h3, net, "r3").start()
    assert until(lambda: a.ping(doomed.ip), 5)
    assert routes(h1).get(doomed.ip) == h3.vtep and routes(h2).get(doomed.ip) == h3.vtep
    h3.stop(signal.SIGKILL)
    sh("ip", "netns", "del", doomed.ns)
    # Lease (2 s) + grace (2 s) + a check (5 s at most): its peers drop its routes.
    assert until(lambda: doomed.ip not in routes(h1) and doomed.ip not in routes(h2), 20), routes(h1)
    assert not a.ping(doomed.ip)
    a.remove()


def echoes(container, source: str) -> int:
    """ICMP echo requests from `source` the container has received (a counting rule in its INPUT)."""
    rule = ["-s", source, "-p", "icmp", "--icmp-type", "echo-request"]
    if sh("ip", "netns", "exec", container.ns, "iptables", "-C", "INPUT", *rule, check=False).returncode:
        sh("ip", "netns", "exec", container.ns, "iptables", "-A", "INPUT", *rule)
    saved = sh("ip", "netns", "exec", container.ns, "iptables-save", "-c", "-t", "filter").stdout
    found = re.search(rf"^\[(\d+):\d+\] -A INPUT -s {re.escape(source)}/32 -p icmp", saved, re.M)
    return int(found.group(1)) if found else 0


def test_a_reclaimed_host_that_comes_back_keeps_its_stale_containers_off_the_overlay(rig):
    """Paused past the grace period (its pynet stopped, its containers running), the host
    is reclaimed and its container's address goes to a container elsewhere. When it comes
    back that container is quarantined: no frame between it and the overlay, so the
    address answers from one container only; pynet says so everywhere; removing the
    container lifts it."""
    h1, h2, h3 = rig.hosts
    net = Network("stale", "10.72.0.0/24")
    for host in rig.hosts:
        net.create_on(host)
    a = Container(h1, net, "q1").start()
    old = Container(h2, net, "q2").start()
    assert until(lambda: a.ping(old.ip), 5)
    assert h2.proc is not None
    os.kill(h2.proc.pid, signal.SIGSTOP)
    try:
        # Lease (2 s) + grace (2 s) + a check (5 s at most): h1 forgets old's entries.
        assert until(lambda: old.ip not in neighbours(h1), 20), neighbours(h1)
        taken = Container(h3, net, "q3")

        def take() -> bool:  # once the address has cooled down (3 s)
            try:
                taken.start(address=old.ip)
            except RuntimeError:
                return False
            return True
        assert until(take, 15)
    finally:
        os.kill(h2.proc.pid, signal.SIGCONT)
    assert taken.ip == old.ip
    # h2 registers again under a new epoch, and quarantines what it published before.
    assert until(lambda: "quarantined: this host was reclaimed while away" in h2.log(), 20), h2.log()[-2000:]
    assert until(lambda: a.ping(taken.ip), 5)
    # The address answers from one container: h3's. Nothing of old's reaches h1's container
    # (it may still know a's MAC from before), nor does h2's bridge pass it to the overlay.
    before = echoes(a, old.ip)
    assert not old.ping(a.ip, count=3)
    assert echoes(a, old.ip) == before
    before_old, before_taken = echoes(old, a.ip), echoes(taken, a.ip)
    assert a.ping(old.ip, count=3)
    assert echoes(taken, a.ip) > before_taken and echoes(old, a.ip) == before_old
    # A container started on h2 now is no stale one: it reaches a; it did not get old's
    # address (still old's here); and on its own host too the address is h3's container's.
    fresh = Container(h2, net, "q4").start()
    assert fresh.ip != old.ip
    assert until(lambda: fresh.ping(a.ip), 10)
    before_old, before_taken = echoes(old, fresh.ip), echoes(taken, fresh.ip)  # counting from here
    assert until(lambda: fresh.ping(old.ip), 10)
    assert echoes(taken, fresh.ip) > before_taken and echoes(old, fresh.ip) == before_old
    # Said in /healthz, `pynet cluster`, `pynet doctor` and `pynet path`, with the fix.
    health = json.loads(sh("curl", "-s", "--unix-socket", str(h2.socket), "http://pynet/healthz").stdout)
    assert health["degraded"] and "quarantined" in health["checks"]["overlay"], health
    cli = [sys.executable, "-m", "driver"]
    view = sh(*cli, "cluster", "--socket", str(h2.socket)).stdout
    assert f"PROBLEM: endpoint {old.endpoint[:12]} ({old.ip}) on cluster network stale: quarantined" in view
    doctor = sh(*cli, "doctor", "--socket", str(h2.socket), check=False)
    assert doctor.returncode == 1 and "restart the container" in doctor.stdout, doctor.stdout
    path = json.loads(sh(*cli, "path", old.endpoint, "--json", "--socket", str(h2.socket), check=False).stdout)
    (device,) = [h for h in path["hops"] if h["kind"] == "vxlan"]
    assert "quarantined" in device["problems"][0]["what"]
    # Docker removes the container: the quarantine goes with it.
    old.remove()
    assert until(lambda: not json.loads(sh("curl", "-s", "--unix-socket", str(h2.socket),
                                           "http://pynet/healthz").stdout)["degraded"], 5)
    for c in (a, taken, fresh):
        c.remove()
