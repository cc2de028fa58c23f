"""Network modes register themselves; pynet's generic parts ask the registry
and name no mode."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from driver import registry, wire
from driver.cli import all_commands
from driver.config import add_serve_arguments, config_from_args
from driver.errors import InvalidRequest
from driver.modes import GENERIC, MODE, Modes
from driver.cluster.settings import ClusterSettings
from driver.registry import ModeSpec, Running

from .fakes import build_harness
from .test_modes import FakeMode

ROOT = Path(__file__).resolve().parents[2]
NID = "1ed2" + "a" * 60
GENERIC_FILES = ("app.py", "config.py", "debug.py", "metrics.py", "cli.py", "modes.py", "server.py")


async def _start(host, settings) -> Running:
    return Running(FakeMode())


def test_modes_start_after_what_they_build_on():
    names = [spec.name for spec in registry.specs()]
    assert names[:3] == ["bridge", "cluster", "overlay"]
    assert all(spec.name not in spec.builds_on for spec in registry.specs())
    assert [spec.name for spec in registry.specs() if not spec.mode] == ["cluster"]  # a part, not a mode


def test_the_order_does_not_follow_the_order_of_imports(monkeypatch):
    specs = {spec.name: spec for spec in registry.specs()}
    monkeypatch.setattr(registry, "_specs", {name: specs[name] for name in ("cluster", "overlay", "bridge")})
    assert [spec.name for spec in registry.specs()][:3] == ["bridge", "cluster", "overlay"]


def test_a_circle_of_modes_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "MODE_PACKAGES", ())
    monkeypatch.setattr(registry, "_specs", {})
    registry.register(ModeSpec("a", _start, builds_on=("b",)))
    registry.register(ModeSpec("b", _start, builds_on=("a",)))
    with pytest.raises(ValueError, match="circle: a -> b -> a"):
        registry.specs()


def test_a_mode_registered_twice_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_specs", {})
    registry.register(ModeSpec("a", _start))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(ModeSpec("a", _start))


def test_the_generic_files_import_no_mode():
    """app, config, debug, metrics, cli, the mode router and the server: a new mode edits none of them."""
    for name in GENERIC_FILES:
        tree = ast.parse((ROOT / "driver" / name).read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert [m for m in imported if m.split(".")[0] in ("bridge", "overlay", "cluster")
                or m.startswith(("driver.bridge", "driver.overlay", "driver.cluster"))] == [], name


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_each_mode_brings_its_settings():
    assert parse().modes == {"cluster": None}
    config = parse("--etcd-endpoints", "127.0.0.1:2379", "--vtep", "198.18.0.1", "--cluster-host", "a")
    assert config.modes["cluster"] == ClusterSettings(("127.0.0.1:2379",), cluster_host="a", vtep="198.18.0.1")
    with pytest.raises(ValueError, match="--etcd-endpoints needs --vtep"):
        parse("--etcd-endpoints", "127.0.0.1:2379")


def test_each_mode_brings_its_commands():
    assert {"status", "doctor", "cluster"} <= set(all_commands())


async def test_a_mode_that_is_off_is_refused_with_what_turns_it_on(tmp_path, monkeypatch):
    h = await build_harness(tmp_path, monkeypatch)
    try:
        # The cluster is off, so are the modes that build on it; the cluster is no mode to ask for.
        assert list(h.modes.modes) == ["bridge"] and set(h.modes.off) == {"overlay", "routed"}
        for mode in ("overlay", "routed"):
            req = wire.CreateNetworkRequest(NetworkID=NID, Options={GENERIC: {MODE: mode}})
            with pytest.raises(InvalidRequest, match=rf"-o pynet.mode={mode} needs pynet's cluster settings"
                                                     r" \(--etcd-endpoints and --vtep"):
                await h.modes.create_network(req)
    finally:
        await h.close()


async def test_a_mode_built_on_another_is_asked_first():
    under, over = FakeMode(), FakeMode()
    modes = Modes({"bridge": under, "over": over})
    under.networks.add(NID)
    over.networks.add(NID)  # its network is a network of the mode under it too
    await modes.join(wire.JoinRequest(NetworkID=NID, EndpointID=NID, SandboxKey="/run/docker/netns/x"))
    assert [name for name, _ in over.calls] == ["join"] and under.calls == []
