"""The store of cluster networks' pools: addresses unique across hosts, by
etcd transactions (ipam.store.SharedIpamStore, behind pynet's one IPAM
service, which reads and checks Docker's requests).

Each host hands out addresses from blocks it claimed (a create-if-absent on
the block's key), and claims each address too (a create-if-absent on the
address's key), every write fenced by the host's epoch: a static `--ip`
inside another host's block is still caught, and a host declared dead
cannot claim anything. A claim Docker repeats succeeds when this host holds
it already. What this host holds is also in its SQLite database, so a
restart of pynet writes nothing to etcd. The gateway is the same address on
every host: it is recorded once per subnet, never claimed by a host.
Releases etcd cannot take now are journaled here and replayed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from functools import partial
from typing import Callable, Optional

from ipam.addr import IPAddress, IPNetwork
from ipam.errors import AddressInUse, InvalidRequest, PoolExhausted, PoolNotFound

from ..db import Database
from . import store
from .blocks import block_of, blocks, first_host
from .etcd import ClusterUnavailable, Etcd
from .keys import Keys, subnet_of_key
from .membership import Membership
from .reclaim import cooling, reclaimed

log = logging.getLogger("pynet.cluster")

POOL_PREFIX = "PynetCluster/"


def pool_id_for(name: str, subnet: IPNetwork) -> str:
    return f"{POOL_PREFIX}{name}/{subnet}"


def is_cluster_pool(pool_id: str) -> bool:
    return pool_id.startswith(POOL_PREFIX)


class EtcdIpamStore:
    def __init__(self, etcd: Etcd, keys: Keys, membership: Membership, db: Database) -> None:
        # Addresses this host's containers still use though it no longer holds them in etcd
        # (a reclaim made them stale, Endpoints.stale): never handed out here until they go.
        self.kept: Callable[[str], set[str]] = lambda name: set()
        self.etcd, self.keys, self.membership, self.db = etcd, keys, membership, db
        self.pools: dict[str, store.PoolRecord] = {}

    async def load(self) -> None:
        self.pools = await self.db.read(store.load_pools)

    @property
    def host(self) -> str:
        return self.membership.host

    def _record(self) -> bytes:
        """The value of every claim this host makes (exact bytes: releases compare it)."""
        return json.dumps({"host": self.host, "epoch": self.membership.epoch}, sort_keys=True).encode()

    def holds_pool(self, pool_id: str) -> bool:
        return is_cluster_pool(pool_id)

    def defines(self, name: str, subnet: str) -> bool:
        """Whether this host asked for `subnet` of cluster network `name` (RequestPool
        with pynet.cluster=NAME): its addresses come from this host's blocks."""
        return any(p.name == name and p.subnet == subnet for p in self.pools.values())

    def subnet(self, pool_id: str) -> Optional[IPNetwork]:
        pool = self.pools.get(pool_id)
        return ipaddress.ip_network(pool.subnet) if pool is not None else None

    # --- pools -------------------------------------------------------------------

    async def define_pool(self, name: str, subnet: IPNetwork, sub_pool: Optional[IPNetwork]) -> str:
        if sub_pool is not None:
            raise InvalidRequest(f"cluster network {name}: --ip-range is not supported on cluster networks"
                                 " (each host hands out addresses from blocks of its own)")
        await self._check_cluster_overlap(name, subnet)
        key = self.keys.pool(name, str(subnet))
        tx = self.etcd.tx
        await self.etcd.transaction([tx.create(key) == 0], [tx.put(key, json.dumps({"subnet": str(subnet)}).encode())],
                                    [])
        pool = store.PoolRecord(pool_id_for(name, subnet), name, str(subnet), "")
        if pool.pool_id not in self.pools:
            await self.db.write(lambda c: store.insert_pool(c, pool))
            self.pools[pool.pool_id] = pool
        return pool.pool_id

    async def _check_cluster_overlap(self, name: str, subnet: IPNetwork) -> None:
        found, _ = await self.etcd.get_prefix(self.keys.all("pools"))
        for key, _value in found:
            parts = self.keys.parts(key)  # ["pools", name, subnet]
            if len(parts) != 3 or parts[1] == name:
                continue
            other = ipaddress.ip_network(subnet_of_key(parts[2]))
            if other.version == subnet.version and other.overlaps(subnet):
                raise InvalidRequest(f"cluster network {name}: subnet {subnet} overlaps cluster network"
                                     f" {parts[1]} ({other})")

    async def release_pool(self, pool_id: str) -> None:
        # Only this host's hold: the cluster network lives on while other hosts use it.
        if self.pools.pop(pool_id, None) is not None:
            await self.db.write(lambda c: store.delete_pool(c, pool_id))

    # --- addresses (the IPAM service has each pool's claims take turns) ----------------

    def _pool(self, pool_id: str) -> store.PoolRecord:
        pool = self.pools.get(pool_id)
        if pool is None:  # released while the claim waited its turn
            raise PoolNotFound(f"pool {pool_id!r} not found (was it released?)")
        return pool

    async def gateway(self, pool_id: str, asked: Optional[IPAddress]) -> IPAddress:
        pool = self._pool(pool_id)
        return await self._hold(pool, await self._gateway(pool, ipaddress.ip_network(pool.subnet), asked), "gateway")

    async def claim(self, pool_id: str, addr: IPAddress) -> None:
        pool = self._pool(pool_id)
        await self._hold(pool, await self._claim_static(pool, addr), "static")

    async def claim_next(self, pool_id: str) -> IPAddress:
        pool = self._pool(pool_id)
        return await self._hold(pool, await self._claim_next(pool, ipaddress.ip_network(pool.subnet)), "dynamic")

    async def _hold(self, pool: store.PoolRecord, addr: IPAddress, kind: str) -> IPAddress:
        """What this host holds, in its own database too (a restart writes nothing to etcd)."""
        pool.addresses[str(addr)] = kind
        await self.db.write(lambda c: store.insert_address(c, pool.pool_id, str(addr), kind))
        return addr

    async def _gateway(self, pool: store.PoolRecord, subnet: IPNetwork, asked: Optional[IPAddress]) -> IPAddress:
        """The subnet's one gateway: the first host that asks sets it, the others must agree."""
        wanted = asked or first_host(subnet)
        if wanted is None:
            raise InvalidRequest(f"cluster network {pool.name}: subnet {subnet} has no address for a gateway")
        key = self.keys.pool(pool.name, pool.subnet)
        tx = self.etcd.tx
        value = json.dumps({"subnet": pool.subnet, "gateway": str(wanted)}).encode()
        ok, answer = await self.etcd.transaction([tx.value(key) == json.dumps({"subnet": pool.subnet}).encode()],
                                                 [tx.put(key, value)], [tx.get(key)])
        if not ok:
            current = json.loads(answer[0][0][0]) if answer and answer[0] and answer[0][0][0] else {}
            gateway = current.get("gateway")
            if gateway is None:
                raise InvalidRequest(f"cluster network {pool.name}: subnet {subnet} is not defined in the cluster")
            if asked is not None and gateway != str(asked):
                raise InvalidRequest(f"cluster network {pool.name}: gateway {asked} differs from the cluster's"
                                     f" {gateway} for {subnet} (every host must use the same)")
            wanted = ipaddress.ip_address(gateway)
        pool.gateway = str(wanted)
        await self.db.write(lambda c: store.insert_pool(c, pool))
        return wanted

    async def _claim(self, pool: store.PoolRecord, addr: IPAddress) -> Optional[str]:
        """Claim one address for this host; None when it is ours, else the host that holds it."""
        key = self.keys.address(pool.name, str(addr))
        tx = self.etcd.tx
        ok, answer = await self.etcd.transaction([*self.membership.fence(), tx.create(key) == 0],
                                                 [tx.put(key, self._record())], [tx.get(key)])
        if ok:
            return None
        raw = answer[0][0][0] if answer and answer[0] else None
        if raw is None:
            raise ClusterUnavailable(f"host {self.host} was fenced out of the cluster (its epoch moved):"
                                     " it registers again")
        if reclaimed(raw):  # a lost host's address: free once it has cooled down
            if cooling(raw, time.time()):
                return f"none (reclaimed from host {json.loads(raw).get('was')}, cooling down)"
            ok, _ = await self.etcd.transaction([*self.membership.fence(), tx.value(key) == raw],
                                                [tx.put(key, self._record())], [])
            return None if ok else "another host (taken just now)"
        holder = json.loads(raw).get("host", "?")
        return None if holder == self.host else holder

    async def registered(self, epoch: int) -> None:
        """After each registration: if this host's epoch moved while it was away, it was
        reclaimed, and nothing it held is its own any more (it resurrects nothing)."""
        saved = await self.db.read(store.saved_epoch)
        if saved is not None and saved != epoch:
            held = sum(len(p.addresses) for p in self.pools.values())
            log.error("cluster: host %s was reclaimed while away (epoch %d -> %d): its %d cluster addresses and"
                      " its blocks are no longer its own; containers it still runs on cluster networks must be"
                      " restarted", self.host, saved, epoch, held)
            for pool in self.pools.values():
                pool.addresses = {a: k for a, k in pool.addresses.items() if k == "gateway"}
                pool.blocks.clear()
            await self.db.write(store.forget_holds)
        if saved != epoch:
            await self.db.write(lambda c: store.save_epoch(c, epoch))

    async def _claim_static(self, pool: store.PoolRecord, addr: IPAddress) -> IPAddress:
        if str(addr) == pool.gateway:
            raise AddressInUse(f"address {addr} is the gateway of cluster network {pool.name}")
        holder = await self._claim(pool, addr)
        if holder is not None:
            raise AddressInUse(f"address {addr} is already in use on host {holder} (cluster network {pool.name})")
        if str(addr) in pool.addresses or str(addr) in self.kept(pool.name):
            raise AddressInUse(f"address {addr} is already in use on this host (cluster network {pool.name})")
        return addr

    async def _claim_next(self, pool: store.PoolRecord, subnet: IPNetwork) -> IPAddress:
        for held in sorted(pool.blocks, key=lambda b: ipaddress.ip_network(b)):
            addr = await self._next_in(pool, subnet, ipaddress.ip_network(held))
            if addr is not None:
                return addr
        for block in blocks(subnet):  # a new block: the first nobody claimed
            if str(block) in pool.blocks or not await self._claim_block(pool, block):
                continue
            addr = await self._next_in(pool, subnet, block)
            if addr is not None:
                return addr
        raise PoolExhausted(f"cluster network {pool.name}: no free address left in {subnet} for host {self.host}")

    async def _claim_block(self, pool: store.PoolRecord, block: IPNetwork) -> bool:
        key = self.keys.block(pool.name, str(block))
        tx = self.etcd.tx
        ok, answer = await self.etcd.transaction([*self.membership.fence(), tx.create(key) == 0],
                                                 [tx.put(key, self._record())], [tx.get(key)])
        if not ok:
            raw = answer[0][0][0] if answer and answer[0] else None
            if raw is None or json.loads(raw).get("host") != self.host:
                return False
        pool.blocks.add(str(block))
        await self.db.write(lambda c: store.insert_block(c, pool.pool_id, str(block)))
        log.info("cluster network %s: host %s claimed block %s", pool.name, self.host, block)
        return True

    async def _next_in(self, pool: store.PoolRecord, subnet: IPNetwork, block: IPNetwork) -> Optional[IPAddress]:
        unusable = {subnet.network_address, *( [subnet.broadcast_address] if subnet.version == 4 else [])}
        kept = self.kept(pool.name)
        for addr in block:
            if addr in unusable or str(addr) == pool.gateway or str(addr) in pool.addresses or str(addr) in kept:
                continue
            if block_of(subnet, addr) != block:
                continue
            if await self._claim(pool, addr) is None:
                return addr
        return None

    async def release(self, pool_id: str, ip: IPAddress) -> bool:
        pool = self.pools.get(pool_id)
        addr = str(ip)
        kind = pool.addresses.pop(addr, None) if pool is not None else None
        if pool is None or kind is None:
            return False
        if kind != "gateway":
            try:
                await self._unclaim(pool.name, addr)
            except ClusterUnavailable as exc:
                log.warning("cluster network %s: release of %s journaled, etcd is away (%s)", pool.name, addr, exc)
                await self.db.write(lambda c: store.journal_release(c, pool.name, addr))
        await self.db.write(lambda c: store.delete_address(c, pool.pool_id, addr))
        return True

    async def _unclaim(self, name: str, addr: str) -> None:
        key = self.keys.address(name, addr)
        tx = self.etcd.tx
        await self.etcd.transaction([tx.value(key) == self._record()], [tx.delete(key)], [])

    async def replay_releases(self) -> int:
        """Releases journaled while etcd was away, unless the address is held again."""
        done = 0
        for name, addr in await self.db.read(store.pending_releases):
            held = any(p.name == name and addr in p.addresses for p in self.pools.values())
            if not held:
                await self._unclaim(name, addr)
            await self.db.write(partial(store.forget_release, name=name, address=addr))
            done += 1
        return done
