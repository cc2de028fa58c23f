"""This host in the cluster: its registration epoch and its liveness lease.

The epoch fences: every write pynet makes for this host compares
epochs/<host> with the epoch it registered under. Only a host that reclaims
a lost host (or an operator removing one) moves that epoch, so a host that
was declared dead cannot write when it comes back: it registers again under
the new epoch and finds its old claims gone. A restart of pynet or dockerd
moves nothing: the epoch stays, and the only write is the liveness key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable, Optional

from .etcd import ClusterUnavailable, Etcd
from .keys import Keys

log = logging.getLogger("pynet.cluster")

LEASE_TTL = 10  # seconds without a keepalive before a host counts as away (--host-lease)


class Membership:
    def __init__(self, etcd: Etcd, keys: Keys, host: str, vtep: str, version: str,
                 lease_ttl: float = LEASE_TTL) -> None:
        self.etcd, self.keys, self.host, self.vtep, self.version = etcd, keys, host, vtep, version
        self.lease_ttl = lease_ttl
        self.epoch: Optional[int] = None
        self.lease: Any = None
        self.alive = asyncio.Event()  # registered and the lease is held
        # Told the epoch after each registration (the cluster IPAM: was this host reclaimed?).
        self.on_registered: Optional[Callable[[int], Awaitable[None]]] = None
        # Told the epoch before this host is announced (peers let it in from then on): what a
        # reclaim made stale is cut off first.
        self.before_announce: Optional[Callable[[int], Awaitable[None]]] = None

    def fence(self) -> list:
        """The compare every write of this host carries."""
        if self.epoch is None:
            raise ClusterUnavailable(f"host {self.host} is not registered with the cluster yet")
        return [self.etcd.tx.value(self.keys.epoch(self.host)) == str(self.epoch).encode()]

    async def current_epoch(self) -> int:
        """The host's epoch in the store, made 1 the first time."""
        key = self.keys.epoch(self.host)
        tx = self.etcd.tx
        ok, answer = await self.etcd.transaction([tx.create(key) == 0], [tx.put(key, b"1")], [tx.get(key)])
        return 1 if ok else int(answer[0][0][0])

    async def register(self) -> int:
        """Take the current epoch and announce this host on a fresh lease."""
        self.alive.clear()
        self.epoch = await self.current_epoch()
        if self.before_announce is not None:
            await self.before_announce(self.epoch)
        self.lease = await self.etcd.lease(max(1, round(self.lease_ttl)))
        record = json.dumps({"vtep": self.vtep, "epoch": self.epoch, "version": self.version,
                             "started": time.time()}).encode()
        tx = self.etcd.tx
        ok, _ = await self.etcd.transaction(self.fence(), [tx.put(self.keys.host(self.host), record,
                                                                    lease=self.lease.id),
                                                             tx.delete(self.keys.lost(self.host))], [])
        if not ok:  # reclaimed in between: take the new epoch
            return await self.register()
        if self.on_registered is not None:
            await self.on_registered(self.epoch)
        self.alive.set()
        log.info("cluster: host %s registered (epoch %d, VTEP %s)", self.host, self.epoch, self.vtep)
        return self.epoch

    async def keep_alive(self) -> None:
        """Refresh the lease for ever; register again when it was lost (etcd away
        longer than the TTL, or this host paused). Never raises."""
        while True:
            try:
                if not self.alive.is_set():
                    await self.register()
                answer = await self.lease.refresh()
                if answer is None or answer.TTL <= 0:
                    log.warning("cluster: host %s lost its lease; registering again", self.host)
                    self.alive.clear()
                    continue
            except ClusterUnavailable as exc:
                log.warning("cluster: %s", exc)
                self.alive.clear()
            except Exception as exc:  # noqa: BLE001 - an aetcd error outside the wrapper: same
                log.warning("cluster: keepalive of host %s failed: %s", self.host, exc)
                self.alive.clear()
            await asyncio.sleep(self.lease_ttl / 3)
