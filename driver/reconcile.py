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
from dataclasses import replace
from functools import partial
from typing import Any, Awaitable, Callable, Optional, Protocol

from ipam.addr import IPAddress, IPNetwork

from . import naming
from .errors import DriverError
from .findings import Decision, Expected, Finding, unexplained
from .firewall import Firewall
from .periodic import every
from .chains import CHAINS, Rule, plan_sync

log = logging.getLogger("pynet.reconcile")


# Addresses of a subnet's pool nobody holds: (subnet, held, min_age) -> those addresses.
AddressQuery = Callable[[IPNetwork, set[IPAddress], float], Awaitable[list[IPAddress]]]
AddressRelease = Callable[[IPNetwork, IPAddress], Awaitable[None]]


class ReconciledMode(Protocol):
    """What reconciliation asks of each network mode (the bridge's: bridge/repair.py)."""

    def counts(self) -> tuple[int, int]:
        """(networks, endpoints) it holds, not counting those of a mode it builds on."""
        ...

    def known_networks(self) -> set[str]:
        """IDs of its networks, saved or being created."""
        ...

    async def observe(self, full: bool) -> Any:
        """What the kernel has now, beside a copy of its state."""
        ...

    def decide(self, snapshot: Any, full: bool, min_age: float, spare_leftovers: bool) -> list[Decision]:
        """From the snapshot alone: what is out of line, and each fix (pure)."""
        ...

    def expected_rules(self) -> list[Expected]: ...

    def held_subnets(self) -> list[tuple[str, IPNetwork, set[IPAddress]]]:
        """(network ID, subnet, addresses its networks and endpoints hold) of every subnet."""
        ...


class Reconciler:
    def __init__(self, modes: list[ReconciledMode], firewall: Firewall,
                 unheld_addresses: Optional[AddressQuery] = None,
                 release_address: Optional[AddressRelease] = None, min_age: float = 60.0) -> None:
        self.modes = modes
        self.firewall = firewall
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
        return self.fresh_state or not any(mode.counts()[0] for mode in self.modes)

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
        if self.last:
            log.warning("reconcile: %s (%.2f s)", ", ".join(f"{n} {what}" for what, n in self.last.items()), took)
        else:
            networks, endpoints = self.counts()
            log.info("reconcile: state, kernel and firewall agree (%d networks, %d endpoints, %.2f s)",
                     networks, endpoints, took)
        return self.last

    def counts(self) -> tuple[int, int]:
        """(networks, endpoints) of every mode; a mode built on another counts none twice."""
        counts = [mode.counts() for mode in self.modes]
        return sum(n for n, _ in counts), sum(e for _, e in counts)

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

        for mode in self.modes:
            snapshot = await mode.observe(full)
            for decision in mode.decide(snapshot, full, self.min_age, self.spare_leftovers):
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
        for family in self.firewall.families:
            snap = await self.firewall.iptables.snapshot(family)
            # Known networks are read after the snapshot: a network created in
            # between has its ID in flight or saved by now, never neither.
            known = {naming.short(n) for mode in self.modes for n in mode.known_networks()}
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
                    await self.firewall.remove(rules)
                    return len(rules)
                await act(Finding("orphan rules removed", f"IPv{family} rules tagged pynet:{tag}",
                                  f"{len(rules)} rules of a network pynet does not know",
                                  "a leftover of an interrupted call or of a lost state",
                                  "delete them"), remove)

    async def _firewall(self, act, repair: bool, done: Counter) -> None:
        if repair:
            done["firewall rules restored"] += await self.firewall.check()
            return
        for family in self.firewall.families:
            snap = await self.firewall.iptables.snapshot(family)
            if plan_sync(snap, []):
                await act(Finding("firewall rules restored", f"pynet's IPv{family} chains",
                                  "chains or jumps are missing or misplaced",
                                  "no pynet network is isolated, forwarded or published correctly",
                                  "recreate the chains and jumps"), None)
            for mode in self.modes:
                for expected in mode.expected_rules():
                    if not _present(snap, expected.rules, family):
                        problem = expected.finding.problem.format(family=family)
                        await act(replace(expected.finding, problem=problem), None)

    async def _addresses(self, act) -> None:
        if self.unheld_addresses is None or self.release_address is None:
            return
        release = self.release_address
        for mode in self.modes:
            for network_id, subnet, held in mode.held_subnets():
                for addr in await self.unheld_addresses(subnet, held, self.min_age):
                    await act(Finding("addresses reclaimed", f"network {naming.short(network_id)}",
                                      f"address {addr} is allocated but no endpoint holds it",
                                      "it can never be handed out again", "release it"),
                              partial(release, subnet, addr))

    async def watch(self, interval: float) -> None:
        await every(interval, self.run, "reconcile")


def _present(snap, rules: list[Rule], family: int) -> bool:
    return all(snap.count(r.table, r.chain, r.text) for r in rules if r.family == family)
