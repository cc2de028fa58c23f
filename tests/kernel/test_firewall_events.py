"""The firewall check on the kernel's word: nftables ruleset changes and
Docker bridges appearing, in a namespace of the test's own."""

from __future__ import annotations

import asyncio

import pytest

from driver.firewall import Firewall
from driver.firewall_events import FirewallEvents
from driver.kernel import links
from driver.kernel.iptables import Iptables
from driver.chains import DOCKER_BRIDGE, FAMILIES, ISOLATION, ISOLATION_2, docker_bridge_rules

pytestmark = pytest.mark.kernel

DOCKER_NET = "br-0123456789ab"


def state(ns):
    return {(f, t): ns.rules(f, t) for f in FAMILIES for t in ("filter", "nat")}


@pytest.fixture
async def watched(ns, ipr):
    """A firewall that learns Docker's bridges as the bridge mode does, watched on events."""
    bridges: list[str] = []

    async def refresh() -> None:
        found = await links.dump_links(ipr)
        bridges[:] = [n for n, link in found.items() if DOCKER_BRIDGE.match(n) and link.kind == "bridge"]

    fw = Firewall(Iptables(prefix=["ip", "netns", "exec", ns.name]))
    fw.add_source(lambda: [docker_bridge_rules(bridges)], refresh)
    await fw.check()
    events = FirewallEvents(netns=ns.name)
    task = asyncio.create_task(fw.watch(3600, events))  # no timer: only events wake it
    await asyncio.sleep(0.1)
    try:
        yield fw
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(predicate, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def test_a_flush_is_put_back_without_a_timer(ns, watched):
    whole = state(ns)
    ns.iptables(4, "-F", ISOLATION)
    assert await until(lambda: state(ns) == whole)
    assert watched.restored > 0


async def test_a_new_docker_bridge_is_isolated_at_once(ns, watched):
    ns.ip("link", "add", DOCKER_NET, "type", "bridge")
    assert await until(lambda: f"-A {ISOLATION_2} -o {DOCKER_NET} -j DROP" in ns.chain(ISOLATION_2))


async def test_pynets_own_changes_do_not_wake_the_check(ns, watched):
    before = watched.restored
    checks = 0
    original = watched.check

    async def counted(why: str = "") -> int:
        nonlocal checks
        checks += 1
        return await original(why)
    watched.check = counted  # type: ignore[method-assign]
    await watched.ensure([docker_bridge_rules(["br-00000000000f"])])
    await asyncio.sleep(0.5)
    assert checks == 0 and watched.restored == before
