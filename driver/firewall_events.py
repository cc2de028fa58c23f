"""When the firewall check must run: on the kernel's word, not on a timer.

A check reads both families' tables with four iptables-save runs and learns
Docker's bridges from a link dump. Every two seconds that was pynet's idle
cost; now it runs when something may concern it: a Docker bridge appeared
or went (to isolate pynet's networks from a new one at once), or the
nftables ruleset moved past the generation pynet's own last change left
(a flush, a firewall reload, a Docker restart). pynet's own changes move the
generation too, so the firewall remembers it after each.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

from .kernel.events import RulesetGeneration, Subscription, link_subscription, ruleset_subscription
from .kernel.link_reader import Link
from .chains import DOCKER_BRIDGE

log = logging.getLogger("pynet.firewall")

# Changes come in runs (iptables-restore commits a table at a time, Docker writes
# a dozen rules for a new network): look once the run is over.
SETTLE = 0.05


class FirewallEvents:
    def __init__(self, netns: Optional[str] = None, settle: float = SETTLE) -> None:
        self.settle = settle
        self.generation = RulesetGeneration(netns)
        self.known: Optional[int] = None  # the generation after pynet's own last look or change
        self._wake = asyncio.Event()
        self._bridges_changed = False
        self._subscriptions: list[Subscription] = []
        try:
            self._subscriptions = [ruleset_subscription(netns, self._wake.set),
                                   link_subscription(netns, self._on_link, self._on_links_lost)]
        except BaseException:
            self.close()
            raise

    def _on_link(self, present: bool, link: Link) -> None:
        if DOCKER_BRIDGE.match(link.name) and link.kind in ("bridge", None):
            self._bridges_changed = True
            self._wake.set()

    def _on_links_lost(self) -> None:
        self._bridges_changed = True  # some notifications were dropped: look again
        self._wake.set()

    def start(self) -> None:
        for sub in self._subscriptions:
            sub.start()

    async def remember(self) -> None:
        """Called after each of pynet's own looks and changes, under the firewall's lock."""
        self.known = await self.generation.read()

    async def next_change(self) -> str:
        """Wait for a change that may concern pynet's rules; say what it was."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.settle)
            self._wake.clear()
            if self._bridges_changed:
                self._bridges_changed = False
                return "a Docker bridge appeared or went"
            if await self.generation.read() != self.known:
                return "the ruleset changed"

    def close(self) -> None:
        for sub in self._subscriptions:
            sub.close()
        self.generation.close()
