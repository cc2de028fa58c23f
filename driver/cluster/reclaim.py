"""Hosts lost for good: their addresses, blocks and endpoints given back.

A host is away while its liveness key is gone (its lease ran out). Only
after a grace period (hours by default: a paused or rebooting host keeps
everything) does a peer reclaim it, and first it fences it: one transaction
moves the lost host's epoch, only while its liveness key is still absent,
so exactly one peer wins and the lost host can write nothing afterwards.
Then its endpoint records and blocks are deleted (its peers drop their
entries), and its addresses are marked cooling: nobody takes them before
the cool-down ends, so an address is not reused while some ARP cache or
connection still remembers its old owner. An operator can remove a host at
once (`pynet cluster remove-host`), never a live one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from typing import Callable

from .etcd import ClusterUnavailable, Etcd
from .keys import Keys
from .membership import Membership

log = logging.getLogger("pynet.cluster")

GRACE = 7200.0  # seconds a host may stay away before it is reclaimed
COOLDOWN = 600.0  # seconds a reclaimed address waits before anyone takes it
CHECK_EVERY = 5.0


def cooling(value: bytes, now: float) -> bool:
    """Whether a claim's value is a reclaimed address still cooling down."""
    try:
        record = json.loads(value)
    except ValueError:
        return False
    return "cooling_until" in record and now < record["cooling_until"]


def reclaimed(value: bytes) -> bool:
    try:
        return "cooling_until" in json.loads(value)
    except ValueError:
        return False


class Reaper:
    def __init__(self, etcd: Etcd, keys: Keys, membership: Membership, grace: float = GRACE,
                 cooldown: float = COOLDOWN, clock: Callable[[], float] = time.time) -> None:
        self.etcd, self.keys, self.membership = etcd, keys, membership
        self.grace, self.cooldown, self.clock = grace, cooldown, clock
        self.away_since: dict[str, float] = {}

    async def hosts(self) -> tuple[set[str], dict[str, int]]:
        """(hosts alive, the epoch of every registered host not reclaimed already)."""
        alive, _ = await self.etcd.get_prefix(self.keys.all("hosts"))
        epochs, _ = await self.etcd.get_prefix(self.keys.all("epochs"))
        lost, _ = await self.etcd.get_prefix(self.keys.all("lost"))
        done = {(self.keys.parts(k)[1], int(v)) for k, v in lost}
        return ({self.keys.parts(k)[1] for k, _ in alive},
                {host: epoch for host, epoch in ((self.keys.parts(k)[1], int(v)) for k, v in epochs)
                 if (host, epoch) not in done})

    async def check(self) -> list[str]:
        """Reclaim every host away longer than the grace period; returns them."""
        alive, epochs = await self.hosts()
        now = self.clock()
        done = []
        for host, epoch in epochs.items():
            if host == self.membership.host or host in alive:
                self.away_since.pop(host, None)
                continue
            since = self.away_since.setdefault(host, now)
            if now - since >= self.grace and await self.reclaim(host, epoch, f"away for {now - since:.0f} s"):
                done.append(host)
                self.away_since.pop(host, None)
        return done

    async def reclaim(self, host: str, epoch: int, why: str) -> bool:
        """Fence `host` (its epoch moves, only while it is not alive), then give back
        what it held. False if it came back or another host won the reclaim."""
        tx = self.etcd.tx
        fence = self.keys.epoch(host)
        ok, _ = await self.etcd.transaction(
            [tx.value(fence) == str(epoch).encode(), tx.create(self.keys.host(host)) == 0],
            [tx.put(fence, str(epoch + 1).encode()), tx.put(self.keys.lost(host), str(epoch + 1).encode())], [])
        if not ok:
            return False
        counts: Counter = Counter()
        until = self.clock() + self.cooldown
        for what in ("endpoints", "blocks", "addresses"):
            found, _ = await self.etcd.get_prefix(self.keys.all(what))
            for key, value in found:
                try:
                    if json.loads(value).get("host") != host:
                        continue
                except ValueError:
                    continue
                change = (tx.put(key, json.dumps({"cooling_until": until, "was": host}).encode())
                          if what == "addresses" else tx.delete(key))
                ok, _ = await self.etcd.transaction([tx.value(key) == value], [change], [])
                counts[what] += ok
        log.warning("cluster: host %s reclaimed (%s; epoch %d -> %d): %d endpoints, %d blocks, %d addresses"
                    " (cooling for %.0f s)", host, why, epoch, epoch + 1, counts["endpoints"], counts["blocks"],
                    counts["addresses"], self.cooldown)
        return True

    async def remove(self, host: str) -> str:
        """The operator's `pynet cluster remove-host`: at once, never a live host."""
        alive, epochs = await self.hosts()
        if host == self.membership.host:
            raise ValueError(f"host {host} is this host: remove it from another one")
        if host in alive:
            raise ValueError(f"host {host} is alive (its lease is held): stop pynet there first")
        if host not in epochs:
            raise ValueError(f"host {host} is not registered in the cluster")
        if not await self.reclaim(host, epochs[host], "removed by the operator"):
            raise ValueError(f"host {host} came back, or another host reclaimed it first")
        return f"host {host} removed: its addresses cool down for {self.cooldown:.0f} s"

    async def run(self, every: float = CHECK_EVERY) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.check()
            except ClusterUnavailable:
                pass  # etcd away: nothing is reclaimed meanwhile
            except Exception as exc:  # noqa: BLE001 - keep going
                log.error("cluster: checking for lost hosts failed: %s", exc, exc_info=True)
