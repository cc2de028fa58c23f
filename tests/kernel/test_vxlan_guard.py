"""Only cluster members can send into an overlay network: a host on the
underlay that is no member, with a VXLAN device of the network's VNI aimed
at a member's VTEP, gets nothing into a container there; members keep
talking."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from driver.overlay.addressing import endpoint_mac
from tests.support.cluster_rig import UNDERLAY, Container, Network, metrics_text, running_rig, sh, until

pytestmark = pytest.mark.kernel

ROGUE = f"{UNDERLAY}.50"


@pytest.fixture(scope="module")
def rig():
    with running_rig(2) as made:
        yield made


def from_rogue(ns: str) -> int:
    """Packets the container received from the rogue's address (its counting rule)."""
    saved = sh("ip", "netns", "exec", ns, "iptables-save", "-c", "-t", "filter").stdout
    m = re.search(r"^\[(\d+):\d+\] -A INPUT -s 10\.76\.0\.250/32$", saved, re.M)
    assert m, saved
    return int(m.group(1))


def dropped(host) -> float:
    m = re.search(r"^pynet_overlay_vxlan_dropped_packets_total (\S+)$", metrics_text(host.socket), re.M)
    return float(m.group(1)) if m else 0.0


def guard(host) -> str:
    return sh("ip", "netns", "exec", host.ns, "iptables", "-S", "PYNET-INPUT").stdout


def test_a_rogue_vxlan_sender_gets_nothing_in_and_members_keep_talking(rig):
    import ipaddress
    h1, h2 = rig.hosts
    net = Network("guarded", "10.76.0.0/24")
    for host in rig.hosts:
        net.create_on(host)
    a, b = Container(h1, net, "g1").start(), Container(h2, net, "g2").start()
    rogue = f"{rig.prefix}rogue"
    try:
        assert until(lambda: b.ping(a.ip))
        assert f"-s {h2.vtep}/32 -d {h1.vtep}/32 -p udp -m udp --dport 4789" in guard(h1)
        shown = json.loads(subprocess.run([sys.executable, "-m", "driver", "cluster", "--json", "--socket",
                                           str(h1.socket)], capture_output=True, text=True, timeout=30).stdout)
        vni = next(n["vni"] for n in shown["networks"] if n["name"] == "guarded")
        # Not a member: on the underlay, the network's VNI, aimed at h1, an address of the subnet.
        sh("ip", "netns", "add", rogue)
        rig.attach(rogue, f"{ROGUE}/24", "urg")
        sh("ip", "-n", rogue, "link", "add", "vx0", "type", "vxlan", "id", str(vni), "local", ROGUE,
           "remote", h1.vtep, "dstport", "4789", "nolearning")
        sh("ip", "-n", rogue, "addr", "add", "10.76.0.250/24", "dev", "vx0")
        sh("ip", "-n", rogue, "link", "set", "vx0", "up")
        sh("ip", "-n", rogue, "neigh", "add", a.ip, "lladdr", endpoint_mac(vni, ipaddress.ip_address(a.ip)),
           "dev", "vx0", "nud", "permanent")
        # What reaches the container from the rogue's address, counted inside it.
        sh("ip", "netns", "exec", a.ns, "iptables", "-I", "INPUT", "-s", "10.76.0.250")
        counted = dropped(h1)
        sh("ip", "netns", "exec", rogue, "ping", "-c", "20", "-i", "0.05", "-W", "1", a.ip, check=False)
        assert from_rogue(a.ns) == 0, "the rogue's frames reached the container"
        # The drop counted them (read every 10 s) and the log names the sender.
        assert until(lambda: dropped(h1) >= counted + 20, 15), dropped(h1)
        assert until(lambda: f"VXLAN from {ROGUE} dropped" in h1.log(), 5)
        assert b.ping(a.ip) and a.ping(b.ip)  # members unaffected
        # The control: let the rogue past the guard by hand, and its frames do reach the container.
        past = ("INPUT", "-s", f"{ROGUE}/32", "-p", "udp", "-m", "udp", "--dport", "4789", "-j", "ACCEPT")
        sh("ip", "netns", "exec", h1.ns, "iptables", "-I", *past[:1], "1", *past[1:])
        sh("ip", "netns", "exec", rogue, "ping", "-c", "5", "-i", "0.05", "-W", "1", a.ip, check=False)
        sh("ip", "netns", "exec", h1.ns, "iptables", "-D", *past)
        assert from_rogue(a.ns) >= 5
        # Flushed by someone: back within the firewall check's window.
        sh("ip", "netns", "exec", h1.ns, "iptables", "-F", "PYNET-INPUT")
        assert until(lambda: f"-s {h2.vtep}/32" in guard(h1) and "pynet-vxlan" in guard(h1), 10)
    finally:
        sh("ip", "netns", "del", rogue, check=False)
        a.remove()
        b.remove()


def test_etcd_away_across_a_pynet_restart_keeps_the_last_known_members(rig):
    import signal
    h1, h2 = rig.hosts
    net = Network("kept-members", "10.77.0.0/24")
    for host in rig.hosts:
        net.create_on(host)
    a, b = Container(h1, net, "k1").start(), Container(h2, net, "k2").start()
    try:
        assert until(lambda: b.ping(a.ip))
        before = guard(h1)
        rig.stop_etcd()
        try:
            h1.stop(signal.SIGKILL)
            h1.start(*rig.flags)
            assert guard(h1) == before  # nothing known yet: what the kernel has stands
            assert b.ping(a.ip) and a.ping(b.ip)
        finally:
            rig.start_etcd()
        assert until(lambda: f"-s {h2.vtep}/32" in guard(h1), 15)
        assert until(lambda: b.ping(a.ip), 10)
    finally:
        a.remove()
        b.remove()
