"""What a mode built on bridge networks uses (driver/bridge/api.py): steps of
its own added to a network's set-up, run at creation, at a repeat and at a
repair, and undone with the bridge when one fails."""

from __future__ import annotations

import pytest

from driver import naming, wire
from driver.bridge import store
from driver.bridge.api import Build, Step

from .fakes import _id, build_harness

NET = "10.31.0.0/24"


def create(nid: str) -> wire.CreateNetworkRequest:
    return wire.CreateNetworkRequest.model_validate({
        "NetworkID": nid, "Options": {}, "IPv4Data": [{"Pool": NET, "Gateway": "10.31.0.1/24"}]})


def recording(runs: list[tuple[str, int]], fail: bool = False) -> Step:
    async def run(b: Build) -> None:
        runs.append((b.net.network_id, b.index))
        b.undo.push(lambda: runs.append(("undone", 0)), "the test's step")
        if fail:
            raise OSError("no such device")
    return Step("the test's step", lambda b: True, run)


async def test_an_added_step_runs_on_the_bridge_at_creation_repeat_and_repair(tmp_path, monkeypatch):
    h = await build_harness(tmp_path, monkeypatch)
    try:
        nid, runs = _id("net"), []
        h.driver.extend(nid, recording(runs))
        await h.driver.create_network(create(nid))
        bridge_index = h.ipr.links[naming.bridge_name(nid)]["index"]
        await h.driver.create_network(create(nid))  # Docker's repeat
        assert await h.driver.set_up_again(nid)
        assert runs == [(nid, bridge_index)] * 3
        h.driver.withdraw(nid)
        assert await h.driver.set_up_again(nid) and len(runs) == 3
        assert not await h.driver.set_up_again(_id("unknown"))
    finally:
        await h.close()


async def test_a_repair_keeps_the_bridge_when_an_added_step_fails(tmp_path, monkeypatch):
    """A saved network: its bridge serves this host's containers whatever the added step does."""
    h = await build_harness(tmp_path, monkeypatch)
    try:
        nid, runs = _id("net"), []
        await h.driver.create_network(create(nid))
        h.driver.extend(nid, recording(runs, fail=True))
        h.ipr.links.pop(naming.bridge_name(nid))  # a reboot took it
        with pytest.raises(OSError):
            await h.driver.set_up_again(nid)
        assert runs[-1] == ("undone", 0)  # the step's own undo ran
        assert naming.bridge_name(nid) in h.ipr.links and nid in h.driver.networks
    finally:
        await h.close()


async def test_a_failing_added_step_undoes_the_network(tmp_path, monkeypatch):
    h = await build_harness(tmp_path, monkeypatch)
    try:
        nid, runs = _id("net"), []
        h.driver.extend(nid, recording(runs, fail=True))
        with pytest.raises(OSError):
            await h.driver.create_network(create(nid))
        assert runs == [(nid, runs[0][1]), ("undone", 0)]
        assert naming.bridge_name(nid) not in h.ipr.links and nid not in h.driver.networks
        assert await h.db.read(store.load) == ([], [])
    finally:
        await h.close()
