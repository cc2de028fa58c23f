"""pynet's one IPAM service with a store several hosts share: the pools that
name a cluster network go to that store, which decides; the service reads
and checks Docker's requests for them as for the host's own pools.
Here the shared store is an in-memory fake; tests/kernel/test_cluster_ipam.py
runs the etcd one."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Optional

import pytest

from ipam.addr import IPAddress, IPNetwork
from ipam.errors import AddressInUse, InvalidRequest, PoolExhausted, PoolNotFound
from ipam.service import CLUSTER_OPTION, GATEWAY_TYPE, IpamService
from ipam.store import SharedIpamStore
from ipam.wire import ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest, RequestPoolRequest

from driver.db import Database
from ipam.store import sqlite


class FakeSharedStore:
    """What another host holds is in `elsewhere`; this host's holds in `held`."""

    def __init__(self) -> None:
        self.subnets: dict[str, IPNetwork] = {}
        self.held: dict[str, set[IPAddress]] = {}
        self.elsewhere: dict[IPAddress, str] = {}
        self.gateways: dict[str, IPAddress] = {}
        self.calls: list[str] = []

    def holds_pool(self, pool_id: str) -> bool:
        return pool_id.startswith("Fake/")

    def subnet(self, pool_id: str) -> Optional[IPNetwork]:
        return self.subnets.get(pool_id)

    async def define_pool(self, name: str, subnet: IPNetwork, sub_pool: Optional[IPNetwork]) -> str:
        pool_id = f"Fake/{name}/{subnet}"
        self.subnets[pool_id] = subnet
        self.held.setdefault(pool_id, set())
        return pool_id

    async def release_pool(self, pool_id: str) -> None:
        self.subnets.pop(pool_id, None)

    async def gateway(self, pool_id: str, asked: Optional[IPAddress]) -> IPAddress:
        first: IPAddress = next(iter(self.subnets[pool_id].hosts()))  # type: ignore[assignment]
        return self.gateways.setdefault(pool_id, asked or first)

    async def claim(self, pool_id: str, addr: IPAddress) -> None:
        await asyncio.sleep(0)  # a shared store answers over the network
        if addr in self.elsewhere:
            raise AddressInUse(f"address {addr} is already in use on host {self.elsewhere[addr]}")
        self.held[pool_id].add(addr)

    async def claim_next(self, pool_id: str) -> IPAddress:
        for addr in self.subnets[pool_id].hosts():
            if addr not in self.held[pool_id] and addr not in self.elsewhere and addr != self.gateways.get(pool_id):
                await self.claim(pool_id, addr)
                return addr
        raise PoolExhausted("none left")

    async def release(self, pool_id: str, addr: IPAddress) -> bool:
        self.calls.append(f"release {addr}")
        if addr not in self.held.get(pool_id, set()):
            return False
        self.held[pool_id].discard(addr)
        return True


def cluster_pool(subnet: str, name: str = "web") -> RequestPoolRequest:
    return RequestPoolRequest(Pool=subnet, Options={CLUSTER_OPTION: name})


@pytest.fixture
def shared() -> FakeSharedStore:
    return FakeSharedStore()


@pytest.fixture
def released() -> list:
    return []


@pytest.fixture
async def db(tmp_path):
    database = Database(str(tmp_path / "pynet.db"))
    await database.open([sqlite.SCHEMA])
    yield database
    await database.close()


@pytest.fixture
def service(db, shared, released) -> IpamService:
    async def on_release(pool, addr):
        released.append((pool, addr))
    return IpamService(sqlite.SqliteIpamStore(db), [], shared=shared, on_release=on_release)


def test_the_fake_offers_what_the_service_asks():
    store: SharedIpamStore = FakeSharedStore()  # mypy holds the fake to the protocol
    assert store.holds_pool("Fake/x")


async def test_a_cluster_pool_without_a_shared_store_says_what_turns_it_on(db):
    alone = IpamService(sqlite.SqliteIpamStore(db), [], shared_needs="pynet's cluster settings (--etcd-endpoints)")
    with pytest.raises(InvalidRequest, match=r"cluster networks need pynet's cluster settings \(--etcd-endpoints\)"):
        await alone.request_pool(cluster_pool("10.70.0.0/24"))


@pytest.mark.parametrize("req, message", [
    (RequestPoolRequest(Options={CLUSTER_OPTION: "web"}), "--subnet is needed"),
    (RequestPoolRequest(Pool="10.70.0.0/24", Options={CLUSTER_OPTION: "Web!"}), "is not a cluster network name"),
    (RequestPoolRequest(Pool="10.70.0.0/24", Options={CLUSTER_OPTION: "web"}, V6=True), "is not an IPv6 network"),
    (RequestPoolRequest(Pool="10.70.0.0/33", Options={CLUSTER_OPTION: "web"}), "cluster network web"),
])
async def test_cluster_pool_requests_are_checked_before_the_store_is_asked(service, shared, req, message):
    with pytest.raises(InvalidRequest, match=message):
        await service.request_pool(req)
    assert shared.subnets == {}


async def test_addresses_of_a_cluster_pool_come_from_the_shared_store(service, shared, released):
    pool = (await service.request_pool(cluster_pool("10.70.0.0/24"))).PoolID
    assert pool == "Fake/web/10.70.0.0/24" and pool not in service.pools
    gateway = await service.request_address(RequestAddressRequest(PoolID=pool, Options={
        "RequestAddressType": GATEWAY_TYPE}))
    assert gateway.Address == "10.70.0.1/24"
    shared.elsewhere[ipaddress.ip_address("10.70.0.2")] = "h2"
    got = await asyncio.gather(*(service.request_address(RequestAddressRequest(PoolID=pool)) for _ in range(3)))
    assert sorted(r.Address for r in got) == ["10.70.0.3/24", "10.70.0.4/24", "10.70.0.5/24"]
    with pytest.raises(AddressInUse, match="in use on host h2"):
        await service.request_address(RequestAddressRequest(PoolID=pool, Address="10.70.0.2"))
    with pytest.raises(InvalidRequest, match="10.71.0.9 is outside 10.70.0.0/24"):
        await service.request_address(RequestAddressRequest(PoolID=pool, Address="10.71.0.9"))
    await service.release_address(ReleaseAddressRequest(PoolID=pool, Address="10.70.0.3"))
    await service.release_address(ReleaseAddressRequest(PoolID=pool, Address="10.70.0.3"))  # again: fine
    # Not told to the modes: a cluster endpoint is also a record in etcd that only its mode removes.
    assert released == [] and ipaddress.ip_address("10.70.0.3") not in shared.held[pool]
    await service.release_pool(ReleasePoolRequest(PoolID=pool))
    with pytest.raises(PoolNotFound):
        await service.request_address(RequestAddressRequest(PoolID=pool))
    await service.release_address(ReleaseAddressRequest(PoolID=pool, Address="10.70.0.4"))  # unknown: fine


async def test_the_hosts_own_pools_are_untouched_by_the_shared_store(service, shared):
    pool = (await service.request_pool(RequestPoolRequest(Pool="10.72.0.0/24"))).PoolID
    assert (await service.request_address(RequestAddressRequest(PoolID=pool))).Address == "10.72.0.1/24"
    assert shared.subnets == {} and pool in service.pools
