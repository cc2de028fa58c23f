"""Reconciliation: make the kernel and the firewall match the saved state.

Run before pynet answers its first call, and then periodically. It
recreates what is missing (after a reboot every bridge and rule is gone),
drops endpoints whose container namespace is gone (Docker tore them down
while pynet could not hear it) and gives their addresses back, and deletes
pynet's own objects that no saved network or endpoint explains (leftovers
of a crash). It never touches a link without pynet's mark, nor a rule
outside pynet's chains.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from typing import Awaitable, Callable, Optional

from ipam.addr import IPAddress, IPNetwork

from . import naming, store
from .errors import DriverError
from .kernel import links, netns
from .network import NetworkDriver
from .rules import CHAINS, plan_remove, FAMILIES, Rule

log = logging.getLogger("pynet.reconcile")

# Names pynet derives from IDs: a link of one of these names without a mark
# is a leftover of a crash between creating it and marking it.
_DERIVED = re.compile(r"^(pn-|pnh|pnc)[0-9a-f]{12}$")
_TAG = re.compile(r'--comment "pynet:([0-9a-f]{12})"')

# Releases addresses of a subnet's pool nobody holds: (subnet, held, min_age) -> released.
Reclaimer = Callable[[IPNetwork, set[IPAddress], float], Awaitable[list[IPAddress]]]


class Reconciler:
    def __init__(self, driver: NetworkDriver, reclaim_addresses: Optional[Reclaimer] = None,
                 min_age: float = 60.0) -> None:
        self.driver = driver
        self.reclaim_addresses = reclaim_addresses
        self.min_age = min_age  # younger endpoints and addresses may be a container starting now
        self.runs = 0
        self.totals: Counter = Counter()
        self.last: Counter = Counter()

    async def run(self) -> Counter:
        started = time.monotonic()
        done: Counter = Counter()
        d = self.driver
        found = await links.dump_links(d.ipr)

        for net in list(d.networks.values()):
            missing = net.bridge not in found
            if await self._guard(done, "network", d.repair_network(net)) and missing:
                done["bridges recreated"] += 1

        sandboxes = {ep.sandbox for ep in d.endpoints.values() if ep.sandbox}
        alive = await asyncio.to_thread(lambda: {s: netns.is_alive(s) for s in sandboxes})
        now = time.time()
        for ep in list(d.endpoints.values()):
            if ep.host_if in found:
                continue
            if ep.sandbox and alive.get(ep.sandbox):
                done["endpoints with their veth missing (container still running)"] += 1
                log.warning("endpoint %s: veth %s is gone but its container still runs"
                            " (sandbox %s): restart the container to give it a network again",
                            naming.short(ep.endpoint_id), ep.host_if, ep.sandbox)
                continue
            if not ep.sandbox and now - ep.created < self.min_age:
                continue  # being created right now
            why = "its container's network namespace is gone" if ep.sandbox else "its veth is gone"
            if await d.reclaim_endpoint(ep, why):
                done["stale endpoints reclaimed"] += 1

        done.update(await self._remove_orphan_links(found))
        done["orphan rules removed"] += await self._remove_orphan_rules()
        done["firewall rules restored"] += await d.firewall.check()
        if self.reclaim_addresses is not None:
            done["addresses reclaimed"] += await self._reclaim_addresses()

        self.runs += 1
        self.last = +done
        self.totals.update(done)
        took = time.monotonic() - started
        if self.last:
            log.warning("reconcile: %s (%.2f s)", ", ".join(f"{n} {what}" for what, n in self.last.items()), took)
        else:
            log.info("reconcile: state, kernel and firewall agree (%d networks, %d endpoints, %.2f s)",
                     len(d.networks), len(d.endpoints), took)
        return self.last

    async def _guard(self, done: Counter, what: str, coro) -> bool:
        try:
            await coro
        except DriverError as exc:
            done[f"{what} repairs failed"] += 1
            log.error("reconcile: %s", exc)
            return False
        return True

    async def _remove_orphan_links(self, found: dict[str, dict]) -> Counter:
        d = self.driver
        done: Counter = Counter()
        known_bridges = {n.bridge for n in d.networks.values()}
        known_veths = {name for e in d.endpoints.values() for name in (e.host_if, e.peer_if)}
        in_flight = {naming.short(i) for i in d.in_flight}
        for name, info in found.items():
            alias = info["alias"] or ""
            if alias.startswith(naming.ALIAS_PREFIX + "network:"):
                owner = alias.split(":", 2)[2]
                orphan = owner not in d.networks and owner not in d.in_flight
            elif alias.startswith(naming.ALIAS_PREFIX + "endpoint:"):
                owner = alias.split(":", 2)[2]
                orphan = owner not in d.endpoints and owner not in d.in_flight
            elif not alias and _DERIVED.match(name) and info["kind"] in ("bridge", "veth"):
                orphan = (name not in known_bridges and name not in known_veths
                          and name[3:] not in in_flight)
            else:
                continue
            if orphan and await links.delete_link(d.ipr, name):
                done[f"orphan {info['kind'] or 'link'}s deleted"] += 1
        return done

    async def _remove_orphan_rules(self) -> int:
        """Rules in pynet's chains tagged with a network pynet does not know."""
        removed = 0
        for family in FAMILIES:
            snap = await self.driver.firewall.iptables.snapshot(family)
            # Known networks are read after the snapshot: a network created in
            # between has its ID in flight or saved by now, never neither.
            known = {naming.short(n) for n in (*self.driver.networks, *self.driver.in_flight)}
            stale = []
            for table, chains in CHAINS.items():
                for chain in chains:
                    for spec in snap.chain_rules(table, chain):
                        m = _TAG.search(spec)
                        if m and m.group(1) not in known:
                            stale.append(Rule(family, table, chain, tuple(spec.split(" "))))
            if stale:
                await self.driver.firewall.remove(stale)
                removed += len(stale)
        return removed

    async def _reclaim_addresses(self) -> int:
        d = self.driver
        count = 0
        for net in list(d.networks.values()):
            held: set[IPAddress] = set()
            for s in net.subnets:
                held |= set(s.aux.values()) | ({s.gateway.ip} if s.gateway else set())
            for ep in d.endpoints.values():
                if ep.network_id == net.network_id:
                    held |= {a.ip for a in (ep.address, ep.address6) if a is not None}
            for s in net.subnets:
                released = await self.reclaim_addresses(s.pool, held, self.min_age)
                for addr in released:
                    log.warning("network %s: address %s released: no endpoint holds it",
                                naming.short(net.network_id), addr)
                count += len(released)
        return count

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run()
            except Exception as exc:  # noqa: BLE001 - keep going; say why it failed
                log.error("reconcile failed: %s", exc)
