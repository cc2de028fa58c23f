"""The IPAM of cluster networks: addresses unique across hosts, by etcd
transactions.

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

import asyncio
import ipaddress
import json
import logging
import re
import time
from collections import defaultdict
from functools import partial
from typing import Optional

from ipam.addr import IPAddress, IPNetwork, parse_address, parse_network
from ipam.errors import AddressInUse, InvalidRequest, PoolExhausted, PoolNotFound
from ipam.router import CLUSTER_OPTION  # --ipam-opt and -o: the network's name in the cluster
from ipam.service import GLOBAL_SPACE, LOCAL_SPACE
from ipam.wire import (AddressSpacesResponse, CapabilitiesResponse, Empty, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest,
                       RequestAddressResponse, RequestPoolRequest, RequestPoolResponse)

from ..db import Database
from . import store
from .addressing import block_of, blocks, first_host
from .etcd import ClusterUnavailable, Etcd
from .keys import Keys, subnet_of_key
from .membership import Membership
from .reclaim import cooling, reclaimed

log = logging.getLogger("pynet.cluster")

POOL_PREFIX = "PynetCluster/"
GATEWAY_TYPE = "com.docker.network.gateway"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def cluster_name(options: dict, what: str) -> Optional[str]:
    """The cluster network's name in these options, checked; None if there is none."""
    name = (options or {}).get(CLUSTER_OPTION)
    if name is None:
        return None
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidRequest(f"{what}: {CLUSTER_OPTION}={name!r} is not a cluster network name"
                             " (lower-case letters, digits, '.', '_', '-'; at most 63)")
    return name


def pool_id_for(name: str, subnet: IPNetwork) -> str:
    return f"{POOL_PREFIX}{name}/{subnet}"


def is_cluster_pool(pool_id: str) -> bool:
    return pool_id.startswith(POOL_PREFIX)


class ClusterIpam:
    def __init__(self, etcd: Etcd, keys: Keys, membership: Membership, db: Database) -> None:
        self.etcd, self.keys, self.membership, self.db = etcd, keys, membership, db
        self.pools: dict[str, store.PoolRecord] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def load(self) -> None:
        self.pools = await self.db.read(store.load_pools)

    @property
    def host(self) -> str:
        return self.membership.host

    def _record(self) -> bytes:
        """The value of every claim this host makes (exact bytes: releases compare it)."""
        return json.dumps({"host": self.host, "epoch": self.membership.epoch}, sort_keys=True).encode()

    async def capabilities(self) -> CapabilitiesResponse:
        return CapabilitiesResponse(RequiresMACAddress=False, RequiresRequestReplay=False)

    async def address_spaces(self) -> AddressSpacesResponse:
        return AddressSpacesResponse(LocalDefaultAddressSpace=LOCAL_SPACE, GlobalDefaultAddressSpace=GLOBAL_SPACE)

    # --- pools -------------------------------------------------------------------

    async def request_pool(self, req: RequestPoolRequest) -> RequestPoolResponse:
        name = cluster_name(req.Options or {}, "pool")
        assert name is not None  # the router sends only cluster pools here
        what = f"cluster network {name}"
        if not req.Pool:
            raise InvalidRequest(f"{what}: --subnet is needed (every host names the same subnet)")
        if req.SubPool:
            raise InvalidRequest(f"{what}: --ip-range is not supported on cluster networks"
                                 " (each host hands out addresses from blocks of its own)")
        try:
            subnet = parse_network(req.Pool)
        except ValueError as exc:
            raise InvalidRequest(f"{what}: {exc}") from None
        if subnet.version != (6 if req.V6 else 4):
            raise InvalidRequest(f"{what}: subnet {subnet} is not an IPv{6 if req.V6 else 4} network")
        await self._check_cluster_overlap(name, subnet)
        key = self.keys.pool(name, str(subnet))
        tx = self.etcd.tx
        await self.etcd.transaction([tx.create(key) == 0], [tx.put(key, json.dumps({"subnet": str(subnet)}).encode())],
                                    [])
        pool = store.PoolRecord(pool_id_for(name, subnet), name, str(subnet), "")
        old = self.pools.get(pool.pool_id)
        if old is None:
            await self.db.write(lambda c: store.insert_pool(c, pool))
            self.pools[pool.pool_id] = pool
        log.info("pool %s: requested", pool.pool_id)
        return RequestPoolResponse(PoolID=pool.pool_id, Pool=str(subnet))

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

    async def release_pool(self, req: ReleasePoolRequest) -> Empty:
        # Only this host's hold: the cluster network lives on while other hosts use it.
        pool = self.pools.pop(req.PoolID, None)
        if pool is not None:
            await self.db.write(lambda c: store.delete_pool(c, req.PoolID))
        return Empty()

    # --- addresses -----------------------------------------------------------------

    def _pool(self, pool_id: str) -> store.PoolRecord:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise PoolNotFound(f"pool {pool_id!r} not found (was it released?)")
        return pool

    async def request_address(self, req: RequestAddressRequest) -> RequestAddressResponse:
        pool = self._pool(req.PoolID)
        subnet = ipaddress.ip_network(pool.subnet)
        asked = None
        if req.Address:
            try:
                asked = parse_address(req.Address)
            except ValueError as exc:
                raise InvalidRequest(f"pool {pool.pool_id}: {exc}") from None
            if asked not in subnet:
                raise InvalidRequest(f"cluster network {pool.name}: address {asked} is outside {subnet}")
        async with self._locks[pool.pool_id]:
            if (req.Options or {}).get("RequestAddressType") == GATEWAY_TYPE:
                addr, kind = await self._gateway(pool, subnet, asked), "gateway"
            elif asked is not None:
                addr, kind = await self._claim_static(pool, asked), "static"
            else:
                addr, kind = await self._claim_next(pool, subnet), "dynamic"
            pool.addresses[str(addr)] = kind
            await self.db.write(lambda c: store.insert_address(c, pool.pool_id, str(addr), kind))
        return RequestAddressResponse(Address=f"{addr}/{subnet.prefixlen}")

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
        if str(addr) in pool.addresses:
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
        for addr in block:
            if addr in unusable or str(addr) == pool.gateway or str(addr) in pool.addresses:
                continue
            if block_of(subnet, addr) != block:
                continue
            if await self._claim(pool, addr) is None:
                return addr
        return None

    async def release_address(self, req: ReleaseAddressRequest) -> Empty:
        pool = self.pools.get(req.PoolID)
        if pool is None:
            return Empty()
        addr = req.Address.split("/")[0]
        async with self._locks[pool.pool_id]:
            kind = pool.addresses.pop(addr, None)
            if kind is None:
                return Empty()
            if kind != "gateway":
                try:
                    await self._unclaim(pool.name, addr)
                except ClusterUnavailable as exc:
                    log.warning("cluster network %s: release of %s journaled, etcd is away (%s)", pool.name, addr, exc)
                    await self.db.write(lambda c: store.journal_release(c, pool.name, addr))
            await self.db.write(lambda c: store.delete_address(c, pool.pool_id, addr))
        return Empty()

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

    def holds_address(self, name: str, addr: str) -> bool:
        return any(p.name == name and addr in p.addresses for p in self.pools.values())
