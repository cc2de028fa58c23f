"""Every cluster network's endpoints as etcd holds them: this host's
published, every host's learned, for the modes whose data plane follows
them (the overlay's neighbour and forwarding entries, the routed mode's
routes).

Publication: a record per endpoint, written under this host's epoch (a
fenced host writes nothing) before CreateEndpoint answers, so peers
normally hold its entries before the container runs; deleted at
DeleteEndpoint, or journaled while etcd is away and deleted when it is back.

This host remembers what it published, with the epoch it published under:
after the host was reclaimed while away (its epoch moved, its records were
deleted, its addresses may now be others'), those endpoints are `stale()`,
and the modes quarantine them (their containers must be restarted).

Learning: one watch on the endpoints/ prefix, started from a snapshot's
revision; when the watch ends (etcd away, the revision compacted) the whole
prefix is listed again. After each change every follower brings the
network concerned to what the records want. What a network wants is
computed from all records at once (one address: the newest record), so an
address that moved between hosts, or a record deleted late, never takes
away entries a newer one needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import partial
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional, Protocol

from .. import naming
from ..db import Database
from ..errors import Conflict
from ..wire import Empty, EndpointRequest
from . import store
from .etcd import ClusterUnavailable, Etcd
from .keys import Keys
from .membership import Membership

log = logging.getLogger("pynet.cluster")


def _insert_published(conn, endpoint_id: str, held: tuple[str, int, list[str]]) -> None:
    store.insert_published(conn, endpoint_id, *held)


class Follower(Protocol):
    """A mode's data plane that follows the records of its networks."""

    def networks(self) -> Iterable[str]:
        """The cluster networks it holds on this host."""
        ...

    async def sync(self, name: str) -> None:
        """Bring one network's kernel entries to what `Endpoints.remote(name)` says."""
        ...


class PublishedEndpoints:
    """What a cluster mode on bridge networks does alike when an endpoint goes: the
    bridge mode drops it, and its record goes from etcd (DeleteEndpoint, or the bridge
    mode's own reclaim of an endpoint Docker no longer has). Its networks map a network
    ID to something with the cluster network's `name`."""

    bridge: Any  # a NetworkApi (the mode's narrower BridgeNetworks, which mypy would call incompatible)
    endpoints: "Endpoints"
    networks: Mapping[str, Any]

    async def endpoint_reclaimed(self, network_id: str, endpoint_id: str) -> None:
        net = self.networks.get(network_id)
        if net is not None:
            await self.endpoints.unpublish(net.name, endpoint_id)

    async def delete_endpoint(self, req: EndpointRequest) -> Empty:
        await self.bridge.delete_endpoint(req)
        await self.endpoint_reclaimed(req.NetworkID, req.EndpointID)
        return Empty()


class Endpoints:
    def __init__(self, etcd: Etcd, keys: Keys, membership: Membership, db: Database, retry: float = 1.0) -> None:
        self.etcd, self.keys, self.membership, self.db = etcd, keys, membership, db
        self.records: dict[str, tuple[int, dict]] = {}  # key -> (revision, record)
        self.followers: list[Follower] = []
        self.on_programmed: Optional[Callable[[float], None]] = None  # seconds from publish to programmed
        self.retry = retry
        self.synced = asyncio.Event()  # a snapshot has been applied
        self.listeners: list[Callable[[], Awaitable[None]]] = []  # told after any change of the records
        # This host's endpoints: endpoint ID -> (network name, the epoch it was published under, ips).
        self.published: dict[str, tuple[str, int, list[str]]] = {}

    async def load(self) -> None:
        self.published = await self.db.read(store.load_published)

    def stale(self) -> dict[str, tuple[str, int, list[str]]]:
        """This host's endpoints published under an earlier epoch: the host was reclaimed
        since, their records are gone and their addresses may be another container's."""
        epoch = self.membership.epoch
        if epoch is None:
            return {}
        return {eid: held for eid, held in self.published.items() if held[1] != epoch}

    def follow(self, follower: Follower) -> None:
        self.followers.append(follower)

    # --- what is wanted ----------------------------------------------------------

    def remote(self, name: str) -> dict[str, dict]:
        """Address -> the newest record that holds it in network `name`, where that record
        is another host's (an address whose newest record is this host's is local, however
        many stale records elsewhere still name it)."""
        newest: dict[str, tuple[int, dict]] = {}
        for key, (revision, record) in self.records.items():
            parts = self.keys.parts(key.encode())
            if len(parts) != 3 or parts[1] != name:
                continue
            for ip in record.get("ips", []):
                if ip not in newest or newest[ip][0] < revision:
                    newest[ip] = (revision, record)
        return {ip: record for ip, (_, record) in newest.items() if record.get("host") != self.membership.host}

    # --- this host's endpoints -------------------------------------------------------

    async def publish(self, name: str, endpoint_id: str, ips: list[str], **fields: str) -> None:
        m = self.membership
        record = {"host": m.host, "epoch": m.epoch, "vtep": m.vtep, **fields, "ips": ips,
                  "published": time.time()}
        tx = self.etcd.tx
        ok, _ = await self.etcd.transaction(m.fence(), [tx.put(self.keys.endpoint(name, endpoint_id),
                                                               json.dumps(record).encode())], [])
        if not ok:
            raise Conflict(f"endpoint {naming.short(endpoint_id)}: host {m.host} was fenced out of"
                           " the cluster (declared lost): it registers again; retry")
        epoch = record["epoch"]
        assert isinstance(epoch, int)  # fence() above held: registered under it
        await self.db.write(lambda c: store.insert_published(c, endpoint_id, name, epoch, ips))
        self.published[endpoint_id] = (name, epoch, ips)

    async def unpublish(self, name: str, endpoint_id: str) -> None:
        """Delete this host's record now, or when etcd is back (Docker's delete must not fail for it)."""
        key = self.keys.endpoint(name, endpoint_id)
        if self.published.pop(endpoint_id, None) is not None:
            await self.db.write(lambda c: store.delete_published(c, endpoint_id))
        try:
            await self._unpublish(key)
        except ClusterUnavailable as exc:
            log.warning("endpoint %s: its record stays in etcd until etcd is back (%s)",
                        naming.short(endpoint_id), exc)
            await self.db.write(lambda c: store.journal_unpublish(c, key.decode()))

    async def unpublish_network(self, name: str) -> None:
        """This host's records of a network deleted here (what Docker did not delete one by
        one, while pynet could not hear it, goes with it)."""
        for endpoint_id in [eid for eid, held in self.published.items() if held[0] == name]:
            await self.unpublish(name, endpoint_id)

    async def _unpublish(self, key: bytes) -> None:
        """Delete this host's record (never another host's, should the key have moved)."""
        found = await self.etcd.get(key)
        if found is None or json.loads(found).get("host") != self.membership.host:
            return
        tx = self.etcd.tx
        await self.etcd.transaction([*self.membership.fence(), tx.value(key) == found], [tx.delete(key)], [])

    async def replay_unpublish(self) -> int:
        """Records left in etcd while it was away: deleted now."""
        keys = await self.db.read(store.pending_unpublish)
        for key in keys:
            await self._unpublish(key.encode())
            await self.db.write(partial(store.forget_unpublish, key=key))
        return len(keys)

    # --- learning from etcd ----------------------------------------------------------

    async def sync(self, name: Optional[str] = None) -> None:
        """The followers holding `name` (all their networks if None) brought to the records.
        One that fails is logged and left to its verification: the others still follow."""
        for follower in self.followers:
            for held in list(follower.networks()):
                if name is None or held == name:
                    try:
                        await follower.sync(held)
                    except Exception as exc:  # noqa: BLE001 - the kernel refused; verification retries
                        log.error("cluster: network %s: bringing the kernel to the cluster's records failed: %s;"
                                  " the next verification retries", held, exc)

    async def snapshot(self) -> int:
        found, revision = await self.etcd.get_prefix_revisions(self.keys.all("endpoints"))
        self.records = {}
        for key, value, written in found:
            try:
                self.records[key.decode()] = (written, json.loads(value))
            except ValueError:
                log.warning("cluster: endpoint record %s is not JSON; ignored", key.decode())
        await self._backfill()
        await self.sync()
        self.synced.set()
        return revision

    async def _backfill(self) -> None:
        """This host's records in etcd that it has no row of (published by a pynet from
        before it kept them): remembered with the epoch they carry."""
        missing = {}
        for key, (_, record) in self.records.items():
            parts = self.keys.parts(key.encode())
            if len(parts) == 3 and record.get("host") == self.membership.host and parts[2] not in self.published \
                    and isinstance(record.get("epoch"), int):
                missing[parts[2]] = (parts[1], record["epoch"], list(record.get("ips", [])))
        for endpoint_id, held in missing.items():
            await self.db.write(partial(_insert_published, endpoint_id=endpoint_id, held=held))
            self.published[endpoint_id] = held

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
        remote = record.get("host") != self.membership.host
        return parts[1], record.get("published") if remote else None

    async def _on_event(self, event) -> None:
        name, published = self._apply(event)
        if name is None:
            return
        held = any(name in f.networks() for f in self.followers)
        await self.sync(name)
        await self._tell()
        if held and published is not None and self.on_programmed is not None:
            self.on_programmed(max(0.0, time.time() - published))

    async def _tell(self) -> None:
        for listener in self.listeners:
            await listener()

    async def run(self) -> None:
        """Snapshot, then watch, for ever; list again whenever the watch ends."""
        async def snapshot() -> int:
            revision = await self.snapshot()
            await self._tell()
            return revision
        await self.etcd.follow(self.keys.all("endpoints"), snapshot, self._on_event, "endpoint", self.retry)
