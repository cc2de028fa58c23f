"""The routed mode's parts, put together on the bridge mode and the
cluster, and their background work: verification (the cluster runs the
watch of endpoint records the routes follow)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import AsyncIterator

from ..bridge.api import BridgeNetworks
from ..cluster.assembly import Cluster
from ..db import Database
from ..periodic import every
from .mode import RoutedMode
from .routes import Routes

log = logging.getLogger("pynet.routed")

VERIFY_EVERY = 30.0


@dataclass
class Routed:
    cluster: Cluster
    routes: Routes
    mode: RoutedMode


async def open_routed(cluster: Cluster, db: Database, ipr, bridge: BridgeNetworks) -> Routed:
    routes = Routes(cluster.endpoints, ipr, cluster.underlay_interface)
    mode = RoutedMode(bridge, db, cluster.etcd, cluster.keys, cluster.endpoints, routes,
                      cluster.underlay_interface, cluster.underlay_mtu, cluster.ipam.defines,
                      cluster.underlay_version)
    await mode.load()
    cluster.endpoints.follow(routes)
    cluster.local_views.append(mode.local_view)
    return Routed(cluster, routes, mode)


async def routed_tasks(routed: Routed) -> AsyncIterator[None]:
    """Started with the server, stopped with it (before the cluster's)."""
    task = asyncio.create_task(every(VERIFY_EVERY, routed.mode.verify, "routed verification"))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
