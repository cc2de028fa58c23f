"""Every remote container of this host's overlay networks, in the kernel: a
permanent neighbour entry (its address to its MAC) and a forwarding entry
(its MAC to its host's VTEP) on the network's VXLAN device, as the
cluster's endpoint records say (driver/cluster/endpoints.py learns them).
A periodic verification reads the kernel and repairs drift."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Iterable

from ..cluster.endpoints import Endpoints
from ..kernel import vxlan

log = logging.getLogger("pynet.cluster")


@dataclass(frozen=True)
class Peer:
    mac: str
    vtep: str


class Peers:
    """The overlay's follower of the endpoint records."""

    def __init__(self, endpoints: Endpoints, ipr) -> None:
        self.endpoints, self.ipr = endpoints, ipr
        self.devices: dict[str, str] = {}  # cluster network name -> this host's VXLAN device
        self.programmed: dict[str, dict[str, Peer]] = {}  # device -> ip -> peer
        self._lock = asyncio.Lock()

    @property
    def synced(self) -> asyncio.Event:
        return self.endpoints.synced

    def networks(self) -> Iterable[str]:
        return self.devices

    def wanted(self, name: str) -> dict[str, Peer]:
        return {ip: Peer(record["mac"], record["vtep"]) for ip, record in self.endpoints.remote(name).items()
                if "mac" in record}

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

    async def view(self, name: str) -> list[dict]:
        """Each remote container of one network, and whether the kernel holds its entries."""
        device = self.devices.get(name)
        if device is None:  # being deleted
            return []
        neigh, fdb = await vxlan.peers(self.ipr, device)
        hosts = {ip: record.get("host") for ip, record in self.endpoints.remote(name).items()}
        wanted = self.wanted(name)
        # "vtep" as before the routed mode's "via" (JSON readers of /debug/cluster).
        out = [{"ip": ip, "host": hosts.get(ip), "mac": peer.mac, "via": peer.vtep, "vtep": peer.vtep,
                "in_kernel": neigh.get(ip) == peer.mac and fdb.get(peer.mac) == peer.vtep}
               for ip, peer in sorted(wanted.items())]
        out += [{"ip": ip, "mac": mac, "via": fdb.get(mac), "vtep": fdb.get(mac), "in_kernel": True,
                 "unexpected": True}
                for ip, mac in sorted(neigh.items()) if ip not in wanted]
        return out

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
