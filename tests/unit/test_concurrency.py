"""Concurrent calls: networks do not wait for each other, and any interleaving
ends in the same state as the same calls made one after the other."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver import naming, wire
from driver.kernel import links
from ipam import wire as ipam_wire
from ipam.service import GATEWAY_TYPE

from .fakes import _id, build_harness

NETS = {"a": "10.11.0.0/24", "b": "10.12.0.0/24"}


async def make_network(h, key: str) -> tuple[str, str]:
    pool = (await h.ipam.request_pool(ipam_wire.RequestPoolRequest(Pool=NETS[key]))).PoolID
    gw = (await h.ipam.request_address(ipam_wire.RequestAddressRequest(
        PoolID=pool, Options={"RequestAddressType": GATEWAY_TYPE}))).Address
    nid = _id(f"net-{key}")
    await h.driver.create_network(wire.CreateNetworkRequest.model_validate({
        "NetworkID": nid, "Options": {}, "IPv4Data": [{"Pool": NETS[key], "Gateway": gw}]}))
    return nid, pool


async def start_container(h, nid: str, pool: str, name: str, yields: int = 0) -> str:
    """What Docker does for `docker run`: RequestAddress, CreateEndpoint, Join."""
    eid = _id(name)
    address = (await h.ipam.request_address(ipam_wire.RequestAddressRequest(PoolID=pool))).Address
    for _ in range(yields):
        await asyncio.sleep(0)
    await h.driver.create_endpoint(wire.CreateEndpointRequest.model_validate({
        "NetworkID": nid, "EndpointID": eid, "Interface": {"Address": address}}))
    await h.driver.join(wire.JoinRequest(NetworkID=nid, EndpointID=eid,
                                         SandboxKey=f"/var/run/docker/netns/{eid[:12]}"))
    return eid


async def stop_container(h, nid: str, pool: str, eid: str) -> None:
    ep = h.driver.endpoints[eid]
    await h.driver.leave(wire.EndpointRequest(NetworkID=nid, EndpointID=eid))
    await h.driver.delete_endpoint(wire.EndpointRequest(NetworkID=nid, EndpointID=eid))
    await h.ipam.release_address(ipam_wire.ReleaseAddressRequest(PoolID=pool, Address=str(ep.address.ip)))


def normal_form(h) -> dict:
    """The state with the arbitrary parts (which endpoint got which address) left out."""
    eps = h.driver.endpoints.values()
    return {
        "endpoints": sorted((e.endpoint_id, e.network_id, e.sandbox) for e in eps),
        "distinct addresses": len({e.address for e in eps}) == len(h.driver.endpoints),
        "pools": {p.pool_id: p.allocator.used_total for p in h.ipam.pools.values()},
        "links": sorted(n for n in h.ipr.links if n.startswith(("pn", "pnh"))),
    }


async def test_a_slow_network_does_not_hold_up_another(tmp_path, monkeypatch):
    h = await build_harness(tmp_path, monkeypatch)
    try:
        slow = naming.bridge_name(_id("net-a"))
        release = asyncio.Event()
        real = links.ensure_bridge

        async def ensure_bridge(ipr, name, *args, **kwargs):
            if name == slow:
                await release.wait()  # the kernel is slow for this one network
            return await real(ipr, name, *args, **kwargs)

        monkeypatch.setattr(links, "ensure_bridge", ensure_bridge)
        a = asyncio.create_task(make_network(h, "a"))
        await asyncio.sleep(0.05)
        nid_b, pool_b = await asyncio.wait_for(make_network(h, "b"), timeout=5)
        await asyncio.wait_for(start_container(h, nid_b, pool_b, "c-b"), timeout=5)
        assert not a.done()
        release.set()
        await asyncio.wait_for(a, timeout=5)
        assert len(h.driver.networks) == 2 and len(h.driver.endpoints) == 1
    finally:
        await h.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 12))
def test_any_interleaving_ends_like_the_sequence(tmp_path_factory, monkeypatch, seed, n):
    rng = random.Random(seed)
    plan = [(rng.choice("ab"), f"c{i}", rng.randrange(4)) for i in range(n)]
    stops = rng.sample(range(n), k=n // 3)

    async def scenario(concurrent: bool):
        h = await build_harness(tmp_path_factory.mktemp("db"), monkeypatch)
        try:
            nets = {k: await make_network(h, k) for k in NETS}
            starts = [start_container(h, *nets[k], name, yields if concurrent else 0)
                      for k, name, yields in plan]
            if concurrent:
                order = list(range(n))
                rng.shuffle(order)
                tasks = [asyncio.ensure_future(starts[i]) for i in order]
                eids = dict(zip(order, await asyncio.gather(*tasks), strict=True))
                eids = [eids[i] for i in range(n)]
            else:
                eids = [await s for s in starts]
            stopping = [stop_container(h, *nets[plan[i][0]], eids[i]) for i in stops]
            if concurrent:
                await asyncio.gather(*stopping)
            else:
                for s in stopping:
                    await s
            h.check_consistency()
            return normal_form(h)
        finally:
            await h.close()

    sequential = asyncio.run(scenario(False))
    interleaved = asyncio.run(scenario(True))
    assert interleaved == sequential
    assert interleaved["distinct addresses"]


@pytest.mark.parametrize("count", [50])
async def test_fifty_at_once_get_distinct_addresses(tmp_path, monkeypatch, count):
    h = await build_harness(tmp_path, monkeypatch)
    try:
        nid, pool = await make_network(h, "a")
        eids = await asyncio.gather(*(start_container(h, nid, pool, f"p{i}", i % 3) for i in range(count)))
        addresses = {h.driver.endpoints[e].address for e in eids}
        assert len(addresses) == count
        h.check_consistency()
    finally:
        await h.close()
