"""Which hosts are members of the cluster, and from which underlay addresses
they send: the addresses a member's data plane may accept (the overlay's
VXLAN guard).

A host is let in when it registers (its hosts/ record, written before it
publishes any endpoint), and stays in while any endpoint record of it
remains: a host away but not reclaimed keeps its containers, and its
records, for the grace period. It is cut off when it is reclaimed or
removed (its endpoints deleted) and no longer registered. While etcd is
away the last known set stands.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable, Optional

from .endpoints import Endpoints
from .etcd import Etcd
from .keys import Keys

log = logging.getLogger("pynet.cluster")


class Members:
    def __init__(self, etcd: Etcd, keys: Keys, endpoints: Endpoints, retry: float = 1.0) -> None:
        self.etcd, self.keys, self.endpoints, self.retry = etcd, keys, endpoints, retry
        self.registered: dict[str, str] = {}  # host -> underlay address, from hosts/
        self.listeners: list[Callable[[], Awaitable[None]]] = []  # told after any change
        self.known = asyncio.Event()  # the hosts and the endpoints have both been listed
        self._listed = False  # the hosts have been
        endpoints.listeners.append(self._tell)

    def addresses(self) -> Optional[set[str]]:
        """The underlay addresses of every member, or None before both lists were read."""
        if not self.known.is_set():
            return None
        found = set(self.registered.values())
        found |= {record["vtep"] for _, record in self.endpoints.records.values()
                  if isinstance(record.get("vtep"), str)}
        return found

    async def _tell(self) -> None:
        if self.endpoints.synced.is_set() and self._listed:
            self.known.set()
        for listener in self.listeners:
            await listener()

    def _record(self, key: bytes, value: bytes) -> None:
        try:
            vtep = json.loads(value).get("vtep")
        except ValueError:
            return
        if isinstance(vtep, str):
            self.registered[self.keys.parts(key)[1]] = vtep

    async def _snapshot(self) -> int:
        found, revision = await self.etcd.get_prefix(self.keys.all("hosts"))
        self.registered = {}
        for key, value in found:
            self._record(key, value)
        self._listed = True
        await self._tell()
        return revision

    async def _on_event(self, event) -> None:
        if event.kind == "DELETE":
            self.registered.pop(self.keys.parts(event.kv.key)[1], None)
        else:
            self._record(event.kv.key, event.kv.value)
        await self._tell()

    async def run(self) -> None:
        await self.etcd.follow(self.keys.all("hosts"), self._snapshot, self._on_event, "host", self.retry)
