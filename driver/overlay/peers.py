"""Every remote container of this host's overlay networks, in the kernel.

One watch on the cluster's endpoints/ prefix, started from a snapshot's
revision; when the watch ends (etcd away, the revision compacted) the whole
prefix is listed again and the kernel brought to it. What a network wants
is computed from all records at once (one address: the newest record), so
an address that moved between hosts, or a record deleted late, never takes
away entries a newer one needs. A periodic verification reads the kernel
and repairs drift.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import aetcd

from ..kernel import vxlan
from ..cluster.etcd import ClusterUnavailable, Etcd
from ..cluster.keys import Keys

log = logging.getLogger("pynet.cluster")


@dataclass(frozen=True)
class Peer:
    mac: str
    vtep: str


class Peers:
    def __init__(self, etcd: Etcd, keys: Keys, host: str, ipr, on_programmed: Optional[Callable[[float], None]] = None,
                 retry: float = 1.0) -> None:
        self.etcd, self.keys, self.host, self.ipr = etcd, keys, host, ipr
        self.devices: dict[str, str] = {}  # cluster network name -> this host's VXLAN device
        self.records: dict[str, tuple[int, dict]] = {}  # key -> (revision, record)
        self.programmed: dict[str, dict[str, Peer]] = {}  # device -> ip -> peer
        self.on_programmed = on_programmed  # seconds from publish to programmed (metrics)
        self.retry = retry
        self.synced = asyncio.Event()  # a snapshot has been applied
        self._lock = asyncio.Lock()

    # --- what is wanted ----------------------------------------------------------

    def wanted(self, name: str) -> dict[str, Peer]:
        newest: dict[str, tuple[int, Peer]] = {}
        for key, (revision, record) in self.records.items():
            parts = self.keys.parts(key.encode())
            if len(parts) != 3 or parts[1] != name or record.get("host") == self.host:
                continue
            for ip in record.get("ips", []):
                if ip not in newest or newest[ip][0] < revision:
                    newest[ip] = (revision, Peer(record["mac"], record["vtep"]))
        return {ip: peer for ip, (_, peer) in newest.items()}

    async def sync(self, name: str) -> None:
        """Bring one network's device to what the records want."""
        device = self.devices.get(name)
        if device is None:
            return
        async with self._lock:
            want = self.wanted(name)
            have = self.programmed.setdefault(device, {})
            for ip, peer in want.items():
                if have.get(ip) != peer:
                    await vxlan.set_peer(self.ipr, device, ip, peer.mac, peer.vtep)
                    have[ip] = peer
            for ip in [ip for ip in have if ip not in want]:
                await vxlan.drop_peer(self.ipr, device, ip, have.pop(ip).mac)

    async def add_network(self, name: str, device: str) -> None:
        self.devices[name] = device
        self.programmed.pop(device, None)
        await self.sync(name)

    async def remove_network(self, name: str) -> None:
        device = self.devices.pop(name, None)
        if device is not None:
            self.programmed.pop(device, None)

    # --- learning from etcd ----------------------------------------------------------

    async def snapshot(self) -> int:
        found, revision = await self.etcd.get_prefix(self.keys.all("endpoints"))
        self.records = {}
        for key, value in found:
            try:
                self.records[key.decode()] = (revision, json.loads(value))
            except ValueError:
                log.warning("cluster: endpoint record %s is not JSON; ignored", key.decode())
        for name in list(self.devices):
            await self.sync(name)
        self.synced.set()
        return revision

    def _apply(self, event) -> tuple[Optional[str], Optional[float]]:
        """One watch event into the records: the network it concerns, and when a
        remote endpoint it adds was published."""
        key = event.kv.key.decode()
        parts = self.keys.parts(event.kv.key)
        if len(parts) != 3:
            return None, None
        if event.kind == "DELETE":
            self.records.pop(key, None)
            return parts[1], None
        try:
            record = json.loads(event.kv.value)
        except ValueError:
            return None, None
        self.records[key] = (event.kv.mod_revision, record)
        remote = record.get("host") != self.host
        return parts[1], record.get("published") if remote else None

    async def run(self) -> None:
        """Snapshot, then watch, for ever; list again whenever the watch ends."""
        while True:
            try:
                revision = await self.snapshot()
                async for event in self.etcd.watch_prefix(self.keys.all("endpoints"), revision + 1):
                    name, published = self._apply(event)
                    if name is not None and name in self.devices:
                        await self.sync(name)
                        if published is not None and self.on_programmed is not None:
                            self.on_programmed(max(0.0, time.time() - published))
            except aetcd.RevisionCompactedError:
                log.warning("cluster: endpoint watch fell behind a compaction; listing again")
            except ClusterUnavailable as exc:
                log.warning("cluster: endpoint watch ended: %s; listing again when etcd is back", exc)
                await asyncio.sleep(self.retry)
            except Exception as exc:  # noqa: BLE001 - keep learning; say why
                log.error("cluster: endpoint watch failed: %s", exc, exc_info=True)
                await asyncio.sleep(self.retry)

    # --- drift --------------------------------------------------------------------

    async def verify(self) -> int:
        """Read every device back and put right what differs; returns entries fixed."""
        fixed = 0
        for name, device in list(self.devices.items()):
            neigh, fdb = await vxlan.peers(self.ipr, device)
            want = self.wanted(name)
            have = self.programmed.setdefault(device, {})
            for ip, peer in want.items():
                if neigh.get(ip) != peer.mac or fdb.get(peer.mac) != peer.vtep:
                    have.pop(ip, None)
                    fixed += 1
            for ip in neigh:
                if ip not in want:
                    have[ip] = Peer(neigh[ip], fdb.get(neigh[ip], ""))
                    fixed += 1
            await self.sync(name)
        if fixed:
            log.warning("cluster: %d peer entries were out of line with the cluster; repaired", fixed)
        return fixed
