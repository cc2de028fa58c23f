"""Reconciliation: make the kernel and the firewall match the saved state.

Run before pynet answers its first call, and then periodically. It
recreates what is missing (after a reboot every bridge and rule is gone),
rebuilds the interface of a running container whose veth was deleted,
drops endpoints whose container namespace is gone (Docker tore them down
while pynet could not hear it) and gives their addresses back, and deletes
pynet's own objects that no saved network or endpoint explains (leftovers
of a crash). It never touches a link without pynet's mark, nor a rule
outside pynet's chains.

The same pass, run with `repair=False`, changes nothing and returns what it
would do: that is what `pynet doctor` shows.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Awaitable, Callable, Optional

from ipam.addr import IPAddress, IPNetwork

from . import naming
from .bridge import NetworkDriver, repair as bridge_repair
from .errors import DriverError
from .findings import Finding, unexplained
from .periodic import every
from .rules import CHAINS, Rule, plan_sync

log = logging.getLogger("pynet.reconcile")


# Addresses of a subnet's pool nobody holds: (subnet, held, min_age) -> those addresses.
AddressQuery = Callable[[IPNetwork, set[IPAddress], float], Awaitable[list[IPAddress]]]
AddressRelease = Callable[[IPNetwork, IPAddress], Awaitable[None]]


class Reconciler:
    def __init__(self, driver: NetworkDriver, unheld_addresses: Optional[AddressQuery] = None,
                 release_address: Optional[AddressRelease] = None, min_age: float = 60.0) -> None:
        self.driver = driver
        self.unheld_addresses = unheld_addresses
        self.release_address = release_address
        self.min_age = min_age  # younger endpoints and addresses may be a container starting now
        self.runs = 0
        self.totals: Counter = Counter()
        self.last: Counter = Counter()
        self.on_done: Optional[Callable[[Counter], None]] = None  # e.g. metrics
        self.fresh_state = False  # the state database was created by this pynet (app.build says)

    @property
    def spare_leftovers(self) -> bool:
        """Whether to keep pynet-made links and rules that the state does not explain.

        A state that is new, or holds no network, explains nothing: more likely the
        wrong state (a plugin upgraded without its state.source, a mistyped
        PYNET_STATE_DIR, another pynet's) than a host full of leftovers. Deleting
        then would cut running containers off, so they are only reported."""
        return self.fresh_state or not self.driver.networks

    async def inspect(self) -> list[Finding]:
        """What is out of line, changing nothing."""
        findings: list[Finding] = []
        await self._pass(findings, repair=False)
        return findings

    async def run(self, full: bool = True) -> Counter:
        """Put everything right; what was done, by action.

        `full=False` does only what must precede the first call (networks'
        bridges, addresses and rules): endpoints, leftovers and addresses can
        wait until pynet serves.
        """
        started = time.monotonic()
        done = await self._pass([], repair=True, full=full)
        self.runs += 1
        self.last = +done
        self.totals.update(self.last)
        if self.on_done is not None:
            self.on_done(self.last)
        took = time.monotonic() - started
        d = self.driver
        if self.last:
            log.warning("reconcile: %s (%.2f s)", ", ".join(f"{n} {what}" for what, n in self.last.items()), took)
        else:
            log.info("reconcile: state, kernel and firewall agree (%d networks, %d endpoints, %.2f s)",
                     len(d.networks), len(d.endpoints), took)
        return self.last

    async def _pass(self, findings: list[Finding], repair: bool, full: bool = True) -> Counter:
        done: Counter = Counter()

        async def act(finding: Finding, fix: Optional[Callable[[], Awaitable[object]]]) -> None:
            if not repair:
                findings.append(finding)
                return
            if fix is None:
                return
            try:
                result = await fix()
            except DriverError as exc:
                done[f"{finding.subject.split()[0]} repairs failed"] += 1
                log.error("reconcile: %s: %s", finding.subject, exc)
                return
            if result is not False:  # False: the object went meanwhile, nothing done
                done[finding.action] += result if type(result) is int else 1

        d = self.driver
        snap = await bridge_repair.observe(d, full)
        for decision in bridge_repair.decide(snap, d, full, self.min_age, self.spare_leftovers):
            if repair and decision.warn:
                log.warning("%s", decision.warn)
            await act(decision.finding, decision.fix)
        if full:
            await self._orphan_rules(act)
        await self._firewall(act, repair, done)
        if not full:
            return done
        await self._addresses(act)
        return done

    async def _orphan_rules(self, act) -> None:
        """Rules in pynet's chains tagged with a network pynet does not know."""
        d = self.driver
        for family in d.firewall.families:
            snap = await d.firewall.iptables.snapshot(family)
            # Known networks are read after the snapshot: a network created in
            # between has its ID in flight or saved by now, never neither.
            known = {naming.short(n) for n in (*d.networks, *d.in_flight)}
            stale: dict[str, list[Rule]] = {}
            for table, chains in CHAINS.items():
                for chain in chains:
                    for spec in snap.chain_rules(table, chain):
                        tag = naming.tagged_network(spec)
                        if tag and tag not in known:
                            stale.setdefault(tag, []).append(
                                Rule(family, table, chain, tuple(spec.split(" "))))
            if stale and self.spare_leftovers:
                for tag in stale:
                    await act(unexplained(f"IPv{family} rules tagged pynet:{tag}"), None)
                continue
            for tag, rules in stale.items():
                async def remove(rules=rules) -> int:
                    await d.firewall.remove(rules)
                    return len(rules)
                await act(Finding("orphan rules removed", f"IPv{family} rules tagged pynet:{tag}",
                                  f"{len(rules)} rules of a network pynet does not know",
                                  "a leftover of an interrupted call or of a lost state",
                                  "delete them"), remove)

    async def _firewall(self, act, repair: bool, done: Counter) -> None:
        d = self.driver
        if repair:
            done["firewall rules restored"] += await d.firewall.check()
            return
        for family in d.firewall.families:
            snap = await d.firewall.iptables.snapshot(family)
            if plan_sync(snap, []):
                await act(Finding("firewall rules restored", f"pynet's IPv{family} chains",
                                  "chains or jumps are missing or misplaced",
                                  "no pynet network is isolated, forwarded or published correctly",
                                  "recreate the chains and jumps"), None)
            for net in d.networks.values():
                group = d.network_rules(net)
                if not _present(snap, group, family):
                    await act(Finding("firewall rules restored", f"network {naming.short(net.network_id)}",
                                      f"IPv{family} firewall rules are missing",
                                      "its isolation, forwarding or NAT is not what it should be",
                                      "put the network's rules back, in order"), None)
            for ep in d.endpoints.values():
                if ep.bindings and not _present(snap, d.binding_rules(ep), family):
                    await act(Finding("firewall rules restored", f"endpoint {naming.short(ep.endpoint_id)}",
                                      f"IPv{family} rules of published ports are missing",
                                      f"its published ports ({', '.join(map(str, ep.bindings))}) do not answer",
                                      "put the port rules back"), None)

    async def _addresses(self, act) -> None:
        if self.unheld_addresses is None or self.release_address is None:
            return
        d = self.driver
        holders = d.holders()
        for net in list(d.networks.values()):
            held = {addr for addr, (nid, _) in holders.items() if nid == net.network_id}
            for s in net.subnets:
                for addr in await self.unheld_addresses(s.pool, held, self.min_age):
                    await act(Finding("addresses reclaimed", f"network {naming.short(net.network_id)}",
                                      f"address {addr} is allocated but no endpoint holds it",
                                      "it can never be handed out again", "release it"),
                              lambda s=s, addr=addr: self.release_address(s.pool, addr))

    async def watch(self, interval: float) -> None:
        await every(interval, self.run, "reconcile")


def _present(snap, rules: list[Rule], family: int) -> bool:
    return all(snap.count(r.table, r.chain, r.text) for r in rules if r.family == family)
