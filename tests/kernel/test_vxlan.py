"""The overlay's data plane between two namespaces joined by an underlay:
a bridge with the same gateway on each side, a VXLAN device on it, a
"container" namespace on each, and the peer entries pynet writes."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets

import pytest

from driver.kernel import links as kl
from driver.kernel import vxlan
from driver.kernel.netlink_thread import KernelThread
from driver.overlay.addressing import endpoint_mac

from .conftest import NETNS_PREFIX, run

pytestmark = pytest.mark.kernel

VNI = 4242
GATEWAY = ipaddress.ip_interface("10.77.0.1/24")
UNDERLAY = {"a": "198.18.7.1", "b": "198.18.7.2"}
CONTAINER = {"a": ipaddress.ip_address("10.77.0.10"), "b": ipaddress.ip_address("10.77.0.20")}


@pytest.fixture
def underlay(_needs_root):
    """Two host namespaces and a container namespace in each; all deleted afterwards."""
    tag = secrets.token_hex(3)
    names = {side: f"{NETNS_PREFIX}{tag}{side}" for side in ("a", "b", "ca", "cb")}
    for ns in names.values():
        run("ip", "netns", "add", ns)
    try:
        run("ip", "-n", names["a"], "link", "add", "ul", "type", "veth", "peer", "name", "ul", "netns", names["b"])
        for side in ("a", "b"):
            run("ip", "-n", names[side], "addr", "add", f"{UNDERLAY[side]}/24", "dev", "ul")
            run("ip", "-n", names[side], "link", "set", "ul", "up")
            run("ip", "-n", names[side], "link", "set", "lo", "up")
        yield names
    finally:
        for ns in names.values():
            run("ip", "netns", "del", ns, check=False)


async def build_side(names: dict, side: str) -> KernelThread:
    host, container = names[side], names["c" + side]
    handle = KernelThread(netns=host)
    index, _ = await kl.ensure_bridge(handle, "pnbr", "pynet:network:t", mtu=1450)
    await kl.ensure_addresses(handle, index, "pnbr", [GATEWAY])
    assert await vxlan.ensure_vxlan(handle, "pnvx", VNI, UNDERLAY[side], index, "pynet:overlay:t", mtu=1450)
    ip = CONTAINER[side]
    await kl.ensure_veth(handle, "pnh" + side, "pnc" + side, index, "pynet:endpoint:" + side,
                         endpoint_mac(VNI, ip), mtu=1450)
    run("ip", "-n", host, "link", "set", "pnc" + side, "netns", container)
    run("ip", "-n", container, "addr", "add", f"{ip}/24", "dev", "pnc" + side)
    run("ip", "-n", container, "link", "set", "pnc" + side, "up")
    run("ip", "-n", container, "route", "add", "default", "via", str(GATEWAY.ip))
    return handle


def ping(names: dict, side: str, ip, size: int | None = None) -> bool:
    extra = ["-M", "do", "-s", str(size)] if size else []
    return run("ip", "netns", "exec", names["c" + side], "ping", "-c", "1", "-W", "1", *extra, str(ip),
               check=False).returncode == 0


async def test_two_hosts_talk_through_the_vxlan_with_only_the_peer_entries(underlay):
    a, b = await build_side(underlay, "a"), await build_side(underlay, "b")
    try:
        await vxlan.set_peer(a, "pnvx", str(CONTAINER["b"]), endpoint_mac(VNI, CONTAINER["b"]), UNDERLAY["b"])
        await vxlan.set_peer(b, "pnvx", str(CONTAINER["a"]), endpoint_mac(VNI, CONTAINER["a"]), UNDERLAY["a"])
        assert ping(underlay, "a", CONTAINER["b"]) and ping(underlay, "b", CONTAINER["a"])
        # The overlay MTU: 1450 on a 1500 underlay. A full packet passes with DF, one byte more does not.
        assert ping(underlay, "a", CONTAINER["b"], size=1450 - 28)
        assert not ping(underlay, "a", CONTAINER["b"], size=1450 - 27)
        # What the kernel holds reads back; a replace moves a peer, a drop forgets it.
        neigh, fdb = await vxlan.peers(a, "pnvx")
        mac_b = endpoint_mac(VNI, CONTAINER["b"])
        assert neigh == {str(CONTAINER["b"]): mac_b} and fdb == {mac_b: UNDERLAY["b"]}
        await vxlan.set_peer(a, "pnvx", str(CONTAINER["b"]), mac_b, "198.18.7.99")
        assert (await vxlan.peers(a, "pnvx"))[1] == {mac_b: "198.18.7.99"}
        await vxlan.drop_peer(a, "pnvx", str(CONTAINER["b"]), mac_b)
        await vxlan.drop_peer(a, "pnvx", str(CONTAINER["b"]), mac_b)  # again: nothing there, fine
        assert await vxlan.peers(a, "pnvx") == ({}, {})
        run("ip", "-n", underlay["ca"], "neigh", "flush", "all")
        assert not ping(underlay, "a", CONTAINER["b"])  # no flood-and-learn: nothing unless told
    finally:
        a.close()
        b.close()


async def test_a_vxlan_device_of_somebody_else_is_refused(underlay):
    handle = KernelThread(netns=underlay["a"])
    try:
        index, _ = await kl.ensure_bridge(handle, "pnbr", "pynet:network:t")
        run("ip", "-n", underlay["a"], "link", "add", "pnvx", "type", "vxlan", "id", "7", "dstport", "4789")
        run("ip", "-n", underlay["a"], "link", "set", "pnvx", "alias", "someone")
        with pytest.raises(Exception, match="not this network's VXLAN"):
            await vxlan.ensure_vxlan(handle, "pnvx", VNI, UNDERLAY["a"], index, "pynet:overlay:t")
    finally:
        handle.close()


async def test_concurrent_peer_reads_on_one_handle_all_succeed(underlay):
    """The kernel answers a second dump on a netlink socket with EBUSY while one
    runs; the peer verification, reconciliation and handlers share a handle, so
    neighbour and FDB dumps take their turn like link dumps do."""
    a = await build_side(underlay, "a")
    try:
        wanted = {}
        for i in range(40):
            ip = ipaddress.ip_address("10.77.0.100") + i
            wanted[str(ip)] = endpoint_mac(VNI, ip)
            await vxlan.set_peer(a, "pnvx", str(ip), wanted[str(ip)], UNDERLAY["b"])
        results = await asyncio.gather(*(vxlan.peers(a, "pnvx") for _ in range(25)),
                                       *(kl.dump_links(a) for _ in range(5)), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert all(r == (wanted, {mac: UNDERLAY["b"] for mac in wanted.values()}) for r in results[:25])
    finally:
        a.close()
