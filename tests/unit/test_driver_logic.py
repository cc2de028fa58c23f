"""Driver decisions on an in-memory kernel: races and failures found in review."""

from __future__ import annotations

import asyncio

import pytest

from driver import naming, wire
from driver.bridge import store
from driver.bridge.repair import rebuild_endpoint
from driver.errors import Conflict

from .fakes import _id, build_harness
from .test_concurrency import make_network, start_container


async def test_a_delete_whose_write_failed_is_finished_by_dockers_retry(tmp_path, monkeypatch):
    h = await build_harness(tmp_path, monkeypatch)
    try:
        nid, _ = await make_network(h, "a")
        real = h.db.write

        async def disk_full(fn):
            raise OSError("disk full")

        h.db.write = disk_full
        with pytest.raises(OSError):
            await h.driver.delete_network(wire.NetworkRequest(NetworkID=nid))
        h.db.write = real
        await h.driver.delete_network(wire.NetworkRequest(NetworkID=nid))  # Docker's retry
        assert await h.db.read(store.load) == ([], [])
    finally:
        await h.close()


async def test_reconciliation_never_reclaims_an_endpoint_whose_veth_is_there(tmp_path, monkeypatch):
    h = await build_harness(tmp_path, monkeypatch)
    try:
        nid, pool = await make_network(h, "a")
        eid = await start_container(h, nid, pool, "live")
        ep = h.driver.endpoints[eid]
        # Judged from a link list taken before the endpoint existed: its veth looked missing.
        assert not await h.driver.reclaim_endpoint(ep, "looked gone", only_if_veth_gone=True)
        assert not await rebuild_endpoint(h.driver, ep)
        assert eid in h.driver.endpoints and ep.host_if in h.ipr.links
    finally:
        await h.close()


async def test_two_networks_asking_for_one_bridge_name_at_once(tmp_path, monkeypatch):
    h = await build_harness(tmp_path, monkeypatch)
    try:
        def req(key, subnet):
            return wire.CreateNetworkRequest.model_validate({
                "NetworkID": _id(key), "IPv4Data": [{"Pool": subnet, "Gateway": subnet[:-4] + "1/24"}],
                "Options": {"com.docker.network.generic": {"com.docker.network.bridge.name": "br-shared"}}})
        results = await asyncio.gather(h.driver.create_network(req("x", "10.31.0.0/24")),
                                       h.driver.create_network(req("y", "10.32.0.0/24")),
                                       return_exceptions=True)
        assert sum(isinstance(r, Conflict) for r in results) == 1, results
        (survivor,) = h.driver.networks.values()
        assert h.ipr.links["br-shared"]["ifalias"] == naming.network_alias(survivor.network_id)
    finally:
        await h.close()
