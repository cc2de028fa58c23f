"""The overlay mode's entry in the registry: built on the bridge mode (each
overlay network is a bridge network plus a VXLAN device) and on the
cluster (definitions, endpoint records, the cluster view), with its peers'
entries and their verification."""

from __future__ import annotations

from functools import partial
from typing import cast

from ..registry import ModeHost, ModeSpec, Running
from . import store


async def start(host: ModeHost, _settings: None) -> Running:
    from ..bridge.api import BridgeNetworks
    from ..cluster.assembly import Cluster
    from .assembly import open_overlay, overlay_tasks
    from .repair import OverlayReconciliation
    # What builds_on=("bridge", "cluster") started.
    bridge = cast(BridgeNetworks, host.started["bridge"].mode)
    cluster = cast(Cluster, host.started["cluster"].parts)
    overlay = await open_overlay(cluster, host.db, host.ipr, host.sysctl, bridge)
    # With the bridge mode's, which covers every bridge and veth, overlay ones included.
    reconciliation = OverlayReconciliation(overlay.mode)
    return Running(overlay.mode, reconciliation, tasks=partial(overlay_tasks, overlay))


SPEC = ModeSpec("overlay", start, builds_on=("bridge", "cluster"), schema=(store.SCHEMA,))
