"""The link reader against a real kernel, checked against `ip -d -j link`."""

from __future__ import annotations

import asyncio

from driver.kernel.link_reader import reader


async def test_a_lookup_reads_what_ip_shows(ns, ipr):
    ns.ip("link", "add", "rbr0", "mtu", "1400", "type", "bridge")
    ns.ip("link", "set", "rbr0", "up", "alias", "pynet:network:abc")
    ns.ip("link", "add", "rv0", "type", "veth", "peer", "name", "rv1")
    ns.ip("link", "set", "rv0", "master", "rbr0")
    shown = ns.links()

    br = await reader(ipr).get("rbr0")
    assert br is not None
    assert (br.index, br.name, br.kind, br.alias, br.up, br.mtu, br.mac) == (
        shown["rbr0"]["ifindex"], "rbr0", "bridge", "pynet:network:abc", True, shown["rbr0"]["mtu"], shown["rbr0"]["address"])
    veth = await reader(ipr).get("rv0")
    assert veth is not None
    assert (veth.kind, veth.alias, veth.master, veth.up) == ("veth", None, br.index, False)
    lo = await reader(ipr).get("lo")
    assert lo is not None and lo.kind is None
    assert await reader(ipr).get("nosuchlink") is None


async def test_a_dump_spanning_many_datagrams_has_every_link(ns, ipr):
    for i in range(150):  # several of the kernel's dump datagrams
        ns.ip("link", "add", f"rd{i}", "type", "veth", "peer", "name", f"rp{i}")
    shown = {name: e["ifindex"] for name, e in ns.links().items()}
    dumped = await reader(ipr).dump()
    assert {link.name: link.index for link in dumped} == shown
    assert len(dumped) == len(shown) == 301


async def test_lookups_and_dumps_at_once_take_turns(ns, ipr):
    for i in range(20):
        ns.ip("link", "add", f"rb{i}", "type", "bridge")
    results = await asyncio.gather(*(reader(ipr).dump() for _ in range(5)),
                                   *(reader(ipr).get(f"rb{i}") for i in range(20)))
    assert all(len(r) == 21 for r in results[:5])
    assert [r.name for r in results[5:]] == [f"rb{i}" for i in range(20)]


async def test_a_cancelled_dump_leaves_the_socket_usable(ns, ipr):
    """A dump left half-read would make the kernel refuse the next (EBUSY) and
    answer a lookup with the old dump's messages: a request is read to its end."""
    for i in range(150):
        ns.ip("link", "add", f"rc{i}", "type", "bridge")
    for _ in range(3):
        task = asyncio.ensure_future(reader(ipr).dump())
        await asyncio.sleep(0.0005)
        task.cancel()
    link = await reader(ipr).get("rc7")
    assert link is not None and link.name == "rc7"
    assert len(await reader(ipr).dump()) == 151


async def test_an_index_lookup_reads_the_handles_namespace(ns, ipr):
    ns.ip("link", "add", "ri0", "type", "bridge")
    assert reader(ipr).index("ri0") == ns.link("ri0")["ifindex"]
    assert reader(ipr).index("nosuchlink") is None
    assert reader(ipr).index("lo") == 1
