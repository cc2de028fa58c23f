"""Names and markers derived from Docker's IDs."""

import pytest

from driver import naming

IDS = ["1ed2c0ffee00" + "a1" * 26, "0" * 64, "f" * 64, "abcdef012345"]


@pytest.mark.parametrize("object_id", IDS)
def test_names_are_valid_interface_names(object_id):
    names = [naming.bridge_name(object_id), *naming.veth_names(object_id)]
    for name in names:
        assert len(name) <= naming.IFNAME_MAX
        assert naming.check_ifname(name) == name
    assert len(set(names)) == 3


def test_names_use_the_short_id():
    nid = IDS[0]
    assert naming.short(nid) == "1ed2c0ffee00"
    assert naming.bridge_name(nid) == "pn-1ed2c0ffee00"
    assert naming.veth_names(nid) == ("pnh1ed2c0ffee00", "pnc1ed2c0ffee00")
    assert naming.firewall_tag(nid) == "pynet:1ed2c0ffee00"
    assert naming.network_alias(nid) == "pynet:network:" + nid
    assert naming.endpoint_alias(nid) == "pynet:endpoint:" + nid


@pytest.mark.parametrize("object_id", IDS)
def test_endpoint_mac_is_stable_local_unicast(object_id):
    mac = naming.endpoint_mac(object_id)
    assert mac == naming.endpoint_mac(object_id)
    octets = [int(x, 16) for x in mac.split(":")]
    assert len(octets) == 6
    assert octets[0] & 0x02 and not octets[0] & 0x01  # locally administered, unicast


def test_endpoint_macs_differ():
    assert len({naming.endpoint_mac(f"{i:064x}") for i in range(1000)}) == 1000


def test_tags_and_derived_names_are_read_back():
    nid = "3f2a9c1b7e4d" + "0" * 52
    rule = f'-i pn-3f2a9c1b7e4d -m comment --comment "{naming.firewall_tag(nid)}" -j ACCEPT'
    assert naming.tagged_network(rule) == "3f2a9c1b7e4d"
    assert naming.tagged_network("-j ACCEPT") is None
    assert naming.is_derived_name(naming.bridge_name(nid)) and naming.is_derived_name(naming.veth_names(nid)[0])
    assert not naming.is_derived_name("pn-lan") and not naming.is_derived_name("eth0")
