"""pyroute2 on its own thread: the kernel functions work through it unchanged."""

from __future__ import annotations

import asyncio
import ipaddress
import threading

from driver.kernel import links as kl
from driver.kernel.netlink_thread import KernelThread


async def test_the_kernel_functions_work_through_the_thread(ns):
    handle = KernelThread(netns=ns.name)
    try:
        index, created = await kl.ensure_bridge(handle, "tbr0", "pynet:network:t", mtu=1400)
        assert created and ns.link("tbr0")["ifindex"] == index and ns.is_up(ns.link("tbr0"))
        await kl.ensure_addresses(handle, index, "tbr0", [ipaddress.ip_interface("10.77.0.1/24")])
        assert await kl.ensure_veth(handle, "tvh0", "tvp0", index, "pynet:endpoint:t", "02:42:0a:4d:00:02")
        found = await kl.dump_links(handle)
        assert found["tvh0"].master == index and found["tvh0"].alias == "pynet:endpoint:t"
        assert "10.77.0.1/24" in (await kl.dump_addresses(handle))[index]
        assert await kl.get_link(handle, "nosuchlink") is None
        # Dumps and lookups at once, as handlers and the checks make them.
        results = await asyncio.gather(*(kl.dump_links(handle) for _ in range(5)),
                                       *(kl.dump_addresses(handle) for _ in range(5)))
        assert all("tvh0" in r for r in results[:5])
        assert await kl.delete_owned_link(handle, "tvh0", "pynet:endpoint:t")
        assert "tvh0" not in ns.links()
    finally:
        handle.close()
    assert not [t for t in threading.enumerate() if t.name == "pynet-netlink"]
