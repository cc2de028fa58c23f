"""The overlay's pure parts: MACs, blocks, MTU, keys, definitions, neighbour limits."""

from __future__ import annotations

import ipaddress

from driver.kernel.sysctl import Sysctl
from driver.cluster.blocks import block_of, blocks, first_host
from driver.overlay.addressing import endpoint_mac, overlay_mtu
from driver.overlay.assembly import raise_neighbour_limits
from driver.cluster.keys import Keys
from driver.cluster.definitions import differences
from driver.cluster.reclaim import cooling, reclaimed

A, N = ipaddress.ip_address, ipaddress.ip_network


def test_a_mac_follows_from_vni_and_address_and_is_local_unicast():
    mac = endpoint_mac(4242, A("10.70.0.5"))
    assert mac == "02:92:0a:46:00:05" and mac == endpoint_mac(4242, A("10.70.0.5"))
    assert endpoint_mac(4243, A("10.70.0.5")) != mac
    v6 = endpoint_mac(4242, A("fd00::5"))
    assert v6.startswith("02:") and v6 != endpoint_mac(4242, A("fd00::6"))
    assert int(v6.split(":")[0], 16) & 0x03 == 0x02  # locally administered, unicast


def test_blocks_of_64_and_the_gateway():
    assert [str(b) for b in list(blocks(N("10.0.0.0/24")))] == ["10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26",
                                                                "10.0.0.192/26"]
    assert list(blocks(N("10.0.0.0/28"))) == [N("10.0.0.0/28")]  # smaller than a block: one block
    assert block_of(N("10.0.0.0/24"), A("10.0.0.70")) == N("10.0.0.64/26")
    assert first_host(N("10.0.0.0/24")) == A("10.0.0.1")
    assert overlay_mtu(1500, 4) == 1450 and overlay_mtu(1500, 6) == 1430


def test_keys_and_their_parts():
    keys = Keys("/pynet")
    assert keys.address("web", "10.0.0.5") == b"/pynet/addresses/web/10.0.0.5"
    assert keys.pool("web", "10.0.0.0/24") == b"/pynet/pools/web/10.0.0.0_24"
    assert keys.parts(keys.endpoint("web", "ab")) == ["endpoints", "web", "ab"]


def test_a_different_definition_is_named_field_by_field():
    ours = {"subnets": ["10.0.0.0/24"], "gateways": [], "mtu": 1400}
    theirs = {"subnets": ["10.0.0.0/24"], "gateways": [], "mtu": 1450, "vni": 7}
    assert differences(ours, theirs, claimed=("vni",)) == "mtu: 1400 here, 1450 in the cluster"
    assert differences(theirs | {"mtu": 1400}, ours, claimed=("vni",)) == ""
    assert differences(ours, theirs) == "mtu: 1400 here, 1450 in the cluster; vni: None here, 7 in the cluster"


def test_a_reclaimed_address_cools_down():
    value = b'{"cooling_until": 100.0, "was": "h3"}'
    assert reclaimed(value) and cooling(value, 99.0) and not cooling(value, 100.0)
    assert not reclaimed(b'{"host": "h1", "epoch": 1}')


async def test_neighbour_limits_are_raised_never_lowered(tmp_path):
    for family in ("ipv4", "ipv6"):
        d = tmp_path / "net" / family / "neigh" / "default"
        d.mkdir(parents=True)
        for name, value in (("gc_thresh1", "128"), ("gc_thresh2", "512"), ("gc_thresh3", "100000")):
            (d / name).write_text(value + "\n")
    (tmp_path / "net" / "ipv4" / "ip_forward").write_text("1\n")
    await raise_neighbour_limits(Sysctl(root=str(tmp_path)))
    d = tmp_path / "net" / "ipv4" / "neigh" / "default"
    assert [(d / n).read_text().strip() for n in ("gc_thresh1", "gc_thresh2", "gc_thresh3")] == \
        ["8192", "49152", "100000"]
