"""Network modes register themselves; the rest of pynet asks the registry.

A mode is a package beside driver/bridge/ whose __init__ calls
`register(ModeSpec(...))`: its name (the value of `-o pynet.mode`), its
settings, its tables in the state database, how it starts on this host,
and what it adds while it runs (background tasks, health, debug endpoints,
metrics, `pynet` commands). app, config, debug, metrics and cli iterate over
the registered specs and name no mode. Adding a mode: a new package, and
one line in MODE_PACKAGES.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Optional

if TYPE_CHECKING:
    from aiohttp import web

    from ipam.store import SharedIpamStore

    from .config import Config
    from .db import Database, Schema
    from .firewall import Firewall
    from .kernel.sysctl import Sysctl
    from .metrics import Metrics
    from .modes import NetworkMode
    from .path.model import HopKind, Path
    from .reconcile import ReconciledMode

# The packages that register a mode, in the order their modes start.
MODE_PACKAGES = ("driver.bridge", "driver.cluster", "driver.overlay", "driver.routed")


@dataclass(frozen=True)
class Settings:
    """A mode's own `pynet serve` flags (each with its PYNET_* variable)."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    # The mode's settings from parsed flags, or None when they leave it off.
    # A ValueError says what is wrong with them.
    from_args: Callable[[argparse.Namespace], Any]
    needs: str  # what turns the mode on, for the refusal of a network asking for it


@dataclass(frozen=True)
class Command:
    """A `pynet` command a mode adds (it talks to pynet through its socket)."""
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Any, argparse.Namespace], Awaitable[int]]  # (cli.Context, args) -> exit status


@dataclass
class ModeHost:
    """What a mode starts on: this host's settings, state and kernel handles."""
    config: "Config"
    db: "Database"
    ipr: Any
    firewall: "Firewall"
    sysctl: "Sysctl"
    started: dict[str, "Running"] = field(default_factory=dict)  # modes started before this one


@dataclass
class Running:
    """A started mode: what Docker's calls go to, and what it adds to pynet."""
    mode: Optional["NetworkMode"]  # None: a part other modes build on (ModeSpec.mode False)
    reconciliation: Optional["ReconciledMode"] = None  # what reconciliation and `pynet doctor` ask of it
    # Work while pynet serves; started after the first answer, stopped after the last.
    tasks: Optional[Callable[[], AsyncIterator[None]]] = None
    health: Optional[Callable[[], Awaitable[tuple[str, str]]]] = None  # (check name, "ok ..." or why not)
    describe: Optional[Callable[[], Awaitable[dict[str, list]]]] = None  # its part of /debug/state
    routes: Optional[Callable[["web.Application"], None]] = None  # its /debug endpoints
    metrics: Optional[Callable[["Metrics"], None]] = None  # adds its metrics to pynet's registry
    uses_ipv6: Callable[[], bool] = lambda: False  # whether its saved networks need ip6tables
    # Where the pools of cluster networks are kept, if this mode keeps them (the IPAM
    # service asks it about every pool that names a cluster network).
    ipam_store: Optional["SharedIpamStore"] = None
    # Adds its hops to an endpoint's path (`pynet path`) when it holds the endpoint's network.
    path: Optional[Callable[["Path"], Awaitable[None]]] = None
    parts: Any = None  # what a mode built on this one uses (its builds_on), as its package declares it


@dataclass(frozen=True)
class ModeSpec:
    name: str  # the value of -o pynet.mode
    start: Callable[[ModeHost, Any], Awaitable[Running]]  # (host, its settings) -> the running mode
    mode: bool = True  # False: a part that modes build on (the cluster), no value of pynet.mode
    builds_on: tuple[str, ...] = ()  # modes it needs started first; its networks are asked about first
    schema: tuple["Schema", ...] = ()  # its tables in the state database
    settings: Optional[Settings] = None  # none: always on, with no flags of its own
    commands: tuple[Command, ...] = ()
    ipam_needs: str = ""  # what turns on the pools it keeps (ipam_store), for the refusal without it
    # The hops its networks add to a container's path (after those of the modes it builds on,
    # each before the kind it names): what `pynet path` shows and docs/packet-path.svg draws.
    path_hops: tuple["HopKind", ...] = ()


_specs: dict[str, ModeSpec] = {}


def register(spec: ModeSpec) -> None:
    if spec.name in _specs and _specs[spec.name] is not spec:
        raise ValueError(f"mode {spec.name!r} is registered twice")
    _specs[spec.name] = spec


def specs() -> list[ModeSpec]:
    """Every registered mode, each after the modes it builds on."""
    for package in MODE_PACKAGES:
        importlib.import_module(package)
    ordered: list[ModeSpec] = []

    def visit(spec: ModeSpec, path: tuple[str, ...]) -> None:
        if spec in ordered:
            return
        if spec.name in path:
            raise ValueError(f"modes build on each other in a circle: {' -> '.join((*path, spec.name))}")
        for name in spec.builds_on:
            if name not in _specs:
                raise ValueError(f"mode {spec.name!r} builds on {name!r}, which is not registered")
            visit(_specs[name], (*path, spec.name))
        ordered.append(spec)

    # In MODE_PACKAGES' order, whatever order they were imported in (a test may import
    # driver.cluster first): the modes start in the same order everywhere.
    def rank(spec: ModeSpec) -> int:
        module = getattr(spec.start, "__module__", "")
        return next((i for i, p in enumerate(MODE_PACKAGES) if module.startswith(p + ".")), len(MODE_PACKAGES))

    for spec in sorted(_specs.values(), key=rank):
        visit(spec, ())
    return ordered


def schemas() -> list["Schema"]:
    return [piece for spec in specs() for piece in spec.schema]
