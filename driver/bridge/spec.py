"""The bridge mode's entry in the registry: always on, no settings of its own."""

from __future__ import annotations

from functools import partial

from ..registry import ModeHost, ModeSpec, Running
from . import store
from .mode import BridgeMode
from .path import HOPS, add_hops
from .repair import BridgeReconciliation
from .views import add_metrics, describe


async def start(host: ModeHost, _settings: None) -> Running:
    config = host.config
    driver = BridgeMode(host.db, host.ipr, host.firewall, config.netns_dirs, host.sysctl,
                           netns_mount=config.netns_mount)
    await driver.load()
    return Running(driver, BridgeReconciliation(driver), describe=partial(describe, driver),
                   metrics=partial(add_metrics, driver), path=partial(add_hops, driver),
                   uses_ipv6=lambda: any(n.ipv6 for n in driver.networks.values()))


SPEC = ModeSpec("bridge", start, schema=(store.SCHEMA, store.migrate), path_hops=HOPS)
