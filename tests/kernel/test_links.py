"""driver.kernel.links against a real kernel, inside a throwaway namespace."""

import asyncio
import ipaddress

import pytest

from driver.errors import Conflict, KernelError
from driver.kernel import links as kl

pytestmark = pytest.mark.kernel

BR = "pn-0123456789ab"
BR_ALIAS = "pynet:network:0123456789ab" + "0" * 52
I = ipaddress.ip_interface


def kind(entry):
    return entry.get("linkinfo", {}).get("info_kind")


def is_up(entry):
    return "UP" in entry.get("flags", [])


# --- bridges ---------------------------------------------------------------------


async def test_ensure_bridge_creates_an_up_bridge_with_alias(ns, ipr):
    index, created = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    assert created is True
    br = ns.link(BR)
    assert br is not None and kind(br) == "bridge"
    assert br["ifindex"] == index
    assert br["ifalias"] == BR_ALIAS
    assert is_up(br)


async def test_ensure_bridge_is_idempotent(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    ns.ip("link", "set", BR, "down")  # put right on the next call
    again = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    assert again == (index, False)
    assert [n for n in ns.links() if n != "lo"] == [BR]
    assert is_up(ns.link(BR))


async def test_ensure_bridge_sets_mtu(ns, ipr):
    await kl.ensure_bridge(ipr, BR, BR_ALIAS, mtu=1400)
    assert ns.link(BR)["mtu"] == 1400


async def test_ensure_bridge_refuses_a_foreign_link(ns, ipr):
    # (this kernel has no dummy links: a veth is the foreign link)
    ns.ip("link", "add", BR, "type", "veth", "peer", "name", "other0")
    with pytest.raises(Conflict, match="kind veth"):
        await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    with pytest.raises(Conflict):
        await kl.ensure_bridge(ipr, BR, BR_ALIAS, adopt_unmarked=True)
    foreign = ns.link(BR)
    assert kind(foreign) == "veth" and "ifalias" not in foreign and not is_up(foreign)


async def test_ensure_bridge_refuses_a_bridge_with_another_alias(ns, ipr):
    ns.ip("link", "add", BR, "type", "bridge")
    ns.ip("link", "set", BR, "alias", "somebody else")
    for adopt in (False, True):
        with pytest.raises(Conflict, match="somebody else"):
            await kl.ensure_bridge(ipr, BR, BR_ALIAS, adopt_unmarked=adopt)
    assert ns.link(BR)["ifalias"] == "somebody else"


async def test_ensure_bridge_adopts_an_unmarked_bridge_only_when_asked(ns, ipr):
    ns.ip("link", "add", BR, "type", "bridge")  # a crash between creating and marking
    with pytest.raises(Conflict):
        await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    assert "ifalias" not in ns.link(BR)
    index, created = await kl.ensure_bridge(ipr, BR, BR_ALIAS, adopt_unmarked=True)
    assert created is False
    br = ns.link(BR)
    assert (br["ifindex"], br["ifalias"]) == (index, BR_ALIAS) and is_up(br)


# --- addresses -------------------------------------------------------------------


async def test_ensure_addresses_adds_v4_and_v6_once(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    wanted = [I("10.1.0.1/24"), I("fd00:1::1/64")]
    for _ in range(3):
        await kl.ensure_addresses(ipr, index, BR, wanted)
    assert ns.global_addresses(BR) == ["10.1.0.1/24", "fd00:1::1/64"]
    v6 = [a for a in ns.addresses(BR) if a["local"] == "fd00:1::1"]
    assert v6[0].get("nodad") is True
    assert not v6[0].get("tentative")


async def test_ensure_addresses_adds_what_is_missing(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    ns.ip("addr", "add", "10.1.0.1/24", "dev", BR)
    await kl.ensure_addresses(ipr, index, BR, [I("10.1.0.1/24"), I("10.2.0.1/16")])
    assert ns.global_addresses(BR) == ["10.1.0.1/24", "10.2.0.1/16"]


async def test_ensure_addresses_ignores_other_links(ns, ipr):
    """An address held by another link does not count as present on this one."""
    ns.ip("link", "add", "other0", "type", "bridge")
    ns.ip("addr", "add", "10.1.0.1/24", "dev", "other0")
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    await kl.ensure_addresses(ipr, index, BR, [I("10.1.0.1/24")])
    assert ns.global_addresses(BR) == ["10.1.0.1/24"]


# --- veth pairs --------------------------------------------------------------------


async def test_ensure_veth(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    created = await kl.ensure_veth(ipr, "pnhaaaa", "pncaaaa", index, "pynet:endpoint:aaaa",
                                   "02:12:34:56:78:9a")
    assert created is True
    host, peer = ns.link("pnhaaaa"), ns.link("pncaaaa")
    assert kind(host) == "veth" and kind(peer) == "veth"
    assert host["ifalias"] == "pynet:endpoint:aaaa"
    assert is_up(host)
    assert host["master"] == BR
    assert ns.bridge_ports() == {"pnhaaaa": BR}
    assert host["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert peer["address"] == "02:12:34:56:78:9a"
    assert host["address"] != peer["address"]
    assert "master" not in peer and not is_up(peer)  # left for Docker to move


async def test_ensure_veth_again_is_a_no_op(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    args = ("pnhaaaa", "pncaaaa", index, "pynet:endpoint:aaaa", "02:12:34:56:78:9a")
    await kl.ensure_veth(ipr, *args)
    before = ns.links()
    assert await kl.ensure_veth(ipr, *args) is False
    after = ns.links()
    assert sorted(after) == sorted(before)
    for name in ("pnhaaaa", "pncaaaa"):
        assert after[name]["ifindex"] == before[name]["ifindex"]
        assert after[name]["address"] == before[name]["address"]
    assert after["pnhaaaa"]["master"] == BR and is_up(after["pnhaaaa"])


async def test_ensure_veth_reattaches_a_detached_own_pair(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    args = ("pnhaaaa", "pncaaaa", index, "pynet:endpoint:aaaa", "02:12:34:56:78:9a")
    await kl.ensure_veth(ipr, *args)
    ns.ip("link", "set", "pnhaaaa", "nomaster", "down")
    assert await kl.ensure_veth(ipr, *args) is False
    host = ns.link("pnhaaaa")
    assert host["master"] == BR and is_up(host)
    assert host["linkinfo"]["info_slave_data"]["hairpin"] is True


async def test_ensure_veth_refuses_a_link_with_another_alias(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    ns.ip("link", "add", "pnhaaaa", "type", "veth", "peer", "name", "pncaaaa")
    ns.ip("link", "set", "pnhaaaa", "alias", "not pynet")
    with pytest.raises(Conflict, match="not pynet"):
        await kl.ensure_veth(ipr, "pnhaaaa", "pncaaaa", index, "pynet:endpoint:aaaa", "02:12:34:56:78:9a")
    assert "master" not in ns.link("pnhaaaa")


async def test_ensure_veth_refuses_an_unmarked_non_veth(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    ns.ip("link", "add", "pnhaaaa", "type", "vxlan", "id", "5", "dstport", "4789")
    with pytest.raises(Conflict):
        await kl.ensure_veth(ipr, "pnhaaaa", "pncaaaa", index, "pynet:endpoint:aaaa", "02:12:34:56:78:9a")


async def test_ensure_veth_fails_cleanly_on_a_bad_bridge_index(ns, ipr):
    with pytest.raises(KernelError, match="cannot"):
        await kl.ensure_veth(ipr, "pnhaaaa", "pncaaaa", 999999, "pynet:endpoint:aaaa", "02:12:34:56:78:9a")
    assert "pnhaaaa" not in ns.links() and "pncaaaa" not in ns.links()


async def test_concurrent_ensure_veth_on_one_handle(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    names = [f"{i:04x}" for i in range(30)]
    results = await asyncio.gather(*(
        kl.ensure_veth(ipr, f"pnh{n}", f"pnc{n}", index, f"pynet:endpoint:{n}", f"02:00:00:00:{n[:2]}:{n[2:]}")
        for n in names))
    assert results == [True] * 30
    seen = ns.links()
    assert ns.bridge_ports() == {f"pnh{n}": BR for n in names}
    for n in names:
        assert seen[f"pnh{n}"]["ifalias"] == f"pynet:endpoint:{n}" and is_up(seen[f"pnh{n}"])
        assert seen[f"pnc{n}"]["address"] == f"02:00:00:00:{n[:2]}:{n[2:]}"


# --- deleting ----------------------------------------------------------------------


async def test_delete_owned_link_refuses_links_without_our_alias(ns, ipr):
    ns.ip("link", "add", "pnhbbbb", "type", "veth", "peer", "name", "pncbbbb")
    assert await kl.delete_owned_link(ipr, "pnhbbbb", "pynet:endpoint:bbbb") is False
    ns.ip("link", "set", "pnhbbbb", "alias", "pynet:endpoint:cccc")
    assert await kl.delete_owned_link(ipr, "pnhbbbb", "pynet:endpoint:bbbb") is False
    assert "pnhbbbb" in ns.links()
    ns.ip("link", "set", "pnhbbbb", "alias", "pynet:endpoint:bbbb")
    assert await kl.delete_owned_link(ipr, "pnhbbbb", "pynet:endpoint:bbbb") is True
    assert "pnhbbbb" not in ns.links() and "pncbbbb" not in ns.links()
    assert await kl.delete_owned_link(ipr, "pnhbbbb", "pynet:endpoint:bbbb") is False


async def test_delete_owned_veth_takes_the_peer(ns, ipr):
    index, _ = await kl.ensure_bridge(ipr, BR, BR_ALIAS)
    await kl.ensure_veth(ipr, "pnhaaaa", "pncaaaa", index, "pynet:endpoint:aaaa", "02:12:34:56:78:9a")
    assert await kl.delete_owned_link(ipr, "pnhaaaa", "pynet:endpoint:aaaa") is True
    assert [n for n in ns.links() if n != "lo"] == [BR]


async def test_delete_link_of_a_missing_link(ns, ipr):
    assert await kl.delete_link(ipr, "nosuchlink") is False


async def test_get_link(ns, ipr):
    assert await kl.get_link(ipr, "nosuchlink") is None
    assert (await kl.get_link(ipr, "lo")).index == ns.link("lo")["ifindex"]


# --- routes --------------------------------------------------------------------------


async def test_host_routes(ns, ipr):
    ns.ip("link", "add", "dum0", "type", "bridge")
    ns.ip("link", "set", "dum0", "up")
    ns.ip("addr", "add", "10.9.0.1/24", "dev", "dum0")
    ns.ip("addr", "add", "fd09::1/64", "dev", "dum0", "nodad")
    ns.ip("route", "add", "10.10.0.0/16", "via", "10.9.0.254")
    ns.ip("route", "add", "192.0.2.7/32", "dev", "dum0")
    ns.ip("route", "add", "default", "via", "10.9.0.254")
    ns.ip("-6", "route", "add", "fd10::/48", "via", "fd09::fe")
    ns.ip("-6", "route", "add", "default", "via", "fd09::fe")
    ns.ip("route", "add", "10.11.0.0/16", "via", "10.9.0.254", "table", "100")  # not main
    routes = {str(r) for r in await kl.host_routes(ipr)}
    assert {"10.9.0.0/24", "10.10.0.0/16", "192.0.2.7/32", "fd09::/64", "fd10::/48"} <= routes
    assert "0.0.0.0/0" not in routes and "::/0" not in routes
    assert "10.11.0.0/16" not in routes
    assert not any(r.startswith(("10.9.0.1/", "fd09::1/")) for r in routes)  # local table


async def test_host_routes_of_an_empty_namespace(ns, ipr):
    assert await kl.host_routes(ipr) == []


async def test_concurrent_dumps_on_one_handle_all_succeed(ns, ipr):
    """The kernel answers a second dump on a netlink socket with EBUSY while
    one runs; handlers, reconciliation and the firewall check share a handle."""
    for i in range(20):
        ns.ip("link", "add", f"d{i}", "type", "bridge")
    ns.ip("addr", "add", "10.9.0.1/24", "dev", "d0")
    results = await asyncio.gather(*(kl.dump_links(ipr) for _ in range(10)),
                                   *(kl.dump_addresses(ipr) for _ in range(10)),
                                   *(kl.host_routes(ipr) for _ in range(5)), return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert all("d19" in r for r in results[:10])
