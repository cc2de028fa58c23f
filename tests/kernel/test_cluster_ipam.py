"""The cluster IPAM of several hosts against a real etcd: unique addresses
by compare-and-swap, one gateway, fencing, and what survives a restart."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets

import pytest

from driver.db import Database
from driver.cluster import store
from driver.cluster.etcd import ClusterUnavailable, Etcd, EtcdSettings
from driver.cluster.ipam_store import EtcdIpamStore
from driver.cluster.keys import Keys
from driver.cluster.membership import Membership
from ipam.errors import AddressInUse, InvalidRequest
from ipam.service import CLUSTER_OPTION, IpamService
from ipam.store import sqlite as ipam_store
from ipam.wire import ReleaseAddressRequest, RequestAddressRequest, RequestPoolRequest

pytestmark = pytest.mark.kernel

GATEWAY = {"RequestAddressType": "com.docker.network.gateway"}


class Host:
    def __init__(self, name: str, endpoint: str, prefix: str, db_path: str) -> None:
        self.etcd = Etcd(EtcdSettings((endpoint,)))
        self.keys = Keys(prefix)
        self.membership = Membership(self.etcd, self.keys, name, "198.18.0.1", "test")
        self.db = Database(db_path)
        self.store = EtcdIpamStore(self.etcd, self.keys, self.membership, self.db)
        # pynet's one IPAM service, its cluster pools in etcd
        self.ipam = IpamService(ipam_store.SqliteIpamStore(self.db), [], shared=self.store)

    async def start(self) -> "Host":
        await self.db.open([store.SCHEMA, ipam_store.SCHEMA])
        await self.etcd.connect()
        await self.membership.register()
        await self.store.load()
        await self.ipam.load()
        return self

    async def close(self) -> None:
        await self.etcd.close()
        await self.db.close()

    async def pool(self, subnet: str, name: str = "web", v6: bool = False) -> str:
        return (await self.ipam.request_pool(RequestPoolRequest(
            Pool=subnet, Options={CLUSTER_OPTION: name}, V6=v6))).PoolID

    async def address(self, pool: str, ip: str = "", gateway: bool = False) -> str:
        return (await self.ipam.request_address(RequestAddressRequest(
            PoolID=pool, Address=ip, Options=GATEWAY if gateway else None))).Address


@pytest.fixture
async def hosts(etcd_server, tmp_path):
    prefix = "/pynet-test-" + secrets.token_hex(4)
    made = [await Host(f"h{i}", etcd_server.endpoint, prefix, str(tmp_path / f"h{i}.db")).start()
            for i in (1, 2)]
    try:
        yield made
    finally:
        for h in made:
            await h.close()


async def test_concurrent_claims_on_two_hosts_never_give_an_address_twice(hosts):
    h1, h2 = hosts
    p1, p2 = await h1.pool("10.60.0.0/22"), await h2.pool("10.60.0.0/22")
    assert p1 == p2
    got = await asyncio.gather(*(h.address(p) for h, p in ((h1, p1), (h2, p2)) for _ in range(120)))
    ips = [a.split("/")[0] for a in got]
    assert len(set(ips)) == len(ips) == 240
    # Each host's addresses come from blocks it claimed; no block is claimed twice.
    assert not (h1.store.pools[p1].blocks & h2.store.pools[p2].blocks)
    for h, p in ((h1, p1), (h2, p2)):
        blocks = [ipaddress.ip_network(b) for b in h.store.pools[p].blocks]
        assert all(any(ipaddress.ip_address(ip) in b for b in blocks) for ip in h.store.pools[p].addresses)


async def test_one_gateway_for_every_host(hosts):
    h1, h2 = hosts
    p1, p2 = await h1.pool("10.61.0.0/24"), await h2.pool("10.61.0.0/24")
    assert await h1.address(p1, gateway=True) == "10.61.0.1/24"
    assert await h2.address(p2, gateway=True) == "10.61.0.1/24"
    assert await h2.address(p2, "10.61.0.1", gateway=True) == "10.61.0.1/24"
    with pytest.raises(InvalidRequest, match="gateway 10.61.0.254 differs from the cluster's 10.61.0.1"):
        await h2.address(p2, "10.61.0.254", gateway=True)
    assert "10.61.0.1/24" not in [await h1.address(p1) for _ in range(5)]


async def test_a_static_address_held_elsewhere_is_refused_with_its_host(hosts):
    h1, h2 = hosts
    p1, p2 = await h1.pool("10.62.0.0/24"), await h2.pool("10.62.0.0/24")
    assert await h1.address(p1, "10.62.0.200") == "10.62.0.200/24"
    with pytest.raises(AddressInUse, match="10.62.0.200 is already in use on host h1"):
        await h2.address(p2, "10.62.0.200")
    # Released on h1, it can be taken on h2.
    await h1.ipam.release_address(ReleaseAddressRequest(PoolID=p1, Address="10.62.0.200"))
    assert await h2.address(p2, "10.62.0.200") == "10.62.0.200/24"


async def test_an_overlapping_cluster_subnet_is_refused(hosts):
    h1, _ = hosts
    await h1.pool("10.63.0.0/16", name="a")
    with pytest.raises(InvalidRequest, match="overlaps cluster network a"):
        await h1.pool("10.63.4.0/24", name="b")


async def test_a_fenced_host_claims_nothing(hosts):
    h1, h2 = hosts
    p1 = await h1.pool("10.64.0.0/24")
    await h1.address(p1)
    # Another host declares h1 dead: its epoch moves.
    await h2.etcd.put(h2.keys.epoch("h1"), b"99")
    with pytest.raises(ClusterUnavailable, match="fenced"):
        await h1.address(p1)
    assert await h1.membership.register() == 99
    assert (await h1.address(p1)).startswith("10.64.0.")


async def test_a_restart_reads_its_holds_without_etcd(hosts, tmp_path):
    h1, _ = hosts
    p1 = await h1.pool("10.65.0.0/24")
    held = {await h1.address(p1) for _ in range(3)}
    again = EtcdIpamStore(h1.etcd, h1.keys, h1.membership, h1.db)
    await again.load()
    assert {f"{a}/24" for a in again.pools[p1].addresses} == held
    assert again.pools[p1].blocks == h1.store.pools[p1].blocks


async def test_etcd_over_tls_with_a_client_certificate(_needs_root, tmp_path):
    from tests.support.etcd import TestEtcd
    server = TestEtcd(tls=True)
    try:
        server.start()
        certs = server.certificates
        etcd = Etcd(EtcdSettings((server.endpoint,), certs["ca"], certs["cert"], certs["key"]))
        await etcd.connect()
        await etcd.put(b"/pynet-tls/probe", b"ok")
        assert await etcd.get(b"/pynet-tls/probe") == b"ok"
        await etcd.close()
        # Without the client certificate the server refuses, and the error says where.
        plain = Etcd(EtcdSettings((server.endpoint,), certs["ca"]))
        with pytest.raises(ClusterUnavailable, match=server.endpoint):
            await plain.get(b"/pynet-tls/probe")
        await plain.close()
    finally:
        server.close()
