"""Keeps pynet's firewall rules in place.

Applies and removes groups of rules (planned in chains.py, written by
kernel/iptables.py), one family at a time, under one lock so plans never
interleave; and watches for rules that disappear behind pynet's back (a
firewall reload, `iptables -F`, a Docker restart) to put them back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Awaitable, Callable, Iterable, Sequence

from .errors import KernelError
from .kernel.iptables import Iptables
from .periodic import every
from .chains import FAMILIES, Rule, plan_remove, plan_sync

if TYPE_CHECKING:
    from .firewall_events import FirewallEvents

log = logging.getLogger("pynet.firewall")

WantedRules = Callable[[], Sequence[Sequence[Rule]]]
Refresh = Callable[[], Awaitable[None]]


class Firewall:
    """Each network mode adds its source of wanted rules (and, if what it wants
    depends on the host, a refresh that learns it): several modes share one
    firewall, and none replaces another's rules."""

    def __init__(self, iptables: Iptables, wanted: WantedRules | None = None) -> None:
        self.iptables = iptables
        self._sources: list[WantedRules] = [wanted] if wanted is not None else []
        self._refreshes: list[Refresh] = []
        self.restored = 0  # rules put back by check() since start
        self.on_restored: Callable[[int], None] | None = None  # e.g. metrics
        self.families = list(FAMILIES)  # probe() drops IPv6 on a host whose ip6tables cannot run
        self.events: "FirewallEvents | None" = None  # set by watch() when the kernel reports changes
        self._lock = asyncio.Lock()

    def add_source(self, wanted: WantedRules, refresh: Refresh | None = None) -> None:
        self._sources.append(wanted)
        if refresh is not None:
            self._refreshes.append(refresh)

    def wanted(self) -> list[Sequence[Rule]]:
        """Every group of rules every source wants now."""
        return [group for source in self._sources for group in source()]

    async def probe(self, need_ipv6: bool) -> None:
        """Drop IPv6 rules on a host where ip6tables does not work (IPv6 disabled
        at boot), unless some network needs them: then say so, loudly."""
        try:
            await self.iptables.snapshot(6)
        except KernelError as exc:
            if need_ipv6:
                raise
            self.families = [4]
            log.warning("firewall: ip6tables does not work here (%s): IPv6 rules are left out;"
                        " IPv6 networks cannot be created", exc)

    async def ensure(self, groups: Iterable[Sequence[Rule]] = ()) -> int:
        """Make pynet's chains, jumps and these groups present; returns lines applied."""
        async with self._lock:
            return await self._ensure_locked(list(groups))

    async def _ensure_locked(self, groups: list[Sequence[Rule]]) -> int:
        applied = 0
        for family in self.families:
            snap = await self.iptables.snapshot(family)
            batch = plan_sync(snap, groups)
            await self.iptables.apply(family, batch)
            applied += sum(len(lines) for lines in batch.values())
        await self._remember()
        return applied

    async def _remember(self) -> None:
        """After pynet's own look or change: the ruleset generation it left (under the lock)."""
        if self.events is not None:
            await self.events.remember()

    async def remove(self, rules: Iterable[Rule]) -> None:
        """Delete every copy of the rules; one family failing does not stop the other."""
        rules = list(rules)
        errors = []
        async with self._lock:
            for family in self.families:
                try:
                    snap = await self.iptables.snapshot(family)
                    await self.iptables.apply(family, plan_remove(snap, rules))
                except KernelError as exc:
                    errors.append(exc)
            await self._remember()
        if errors:
            raise errors[0]

    async def check(self, why: str = "") -> int:
        """Put back whatever is missing of everything pynet wants; `why` it looks, if known."""
        for refresh in self._refreshes:
            await refresh()
        async with self._lock:
            # What is wanted is read under the lock: a network deleted meanwhile
            # (removed from memory, then its rules) is never brought back.
            applied = await self._ensure_locked(self.wanted())
        if applied:
            self.restored += applied
            if self.on_restored is not None:
                self.on_restored(applied)
            log.warning("firewall: %d rule changes were needed to restore pynet's rules (%s)",
                        applied, why or "were they flushed?")
        return applied

    async def watch(self, interval: float, events: "FirewallEvents | None" = None) -> None:
        """Keep the rules in place: on each change the kernel reports if it can
        (`events`), else every `interval` seconds."""
        if events is None:
            await every(interval, self.check, "firewall check")
            return
        async with self._lock:
            self.events = events
            await events.remember()
        events.start()
        try:
            while True:
                why = await events.next_change()
                try:
                    await self.check(why)
                except Exception as exc:  # noqa: BLE001 - keep watching; say why it failed
                    log.error("firewall check failed: %s", exc, exc_info=True)
        finally:
            self.events = None
            events.close()
