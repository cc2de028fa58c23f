"""The overlay mode's parts, put together on the bridge mode and the
cluster, and their background work: verification (the cluster runs the
watch of endpoint records the peers follow)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import AsyncIterator

from ..bridge.api import BridgeNetworks
from ..cluster.assembly import Cluster
from ..db import Database
from ..firewall import Firewall
from ..kernel.sysctl import Sysctl
from .addressing import overlay_mtu
from ..periodic import every
from .mode import OverlayMode
from .guard import VxlanGuard
from .peers import Peers

log = logging.getLogger("pynet.overlay")

VERIFY_EVERY = 30.0
LOOK_EVERY = 10.0  # the VXLAN guard's counter and the senders it dropped


@dataclass
class Overlay:
    cluster: Cluster
    peers: Peers
    mode: OverlayMode
    guard: VxlanGuard


# Every remote container is a permanent neighbour entry: permanent entries are never
# collected but count against gc_thresh3 (1024 by default), past which new ones fail.
NEIGHBOUR_LIMITS = {"gc_thresh1": 8192, "gc_thresh2": 49152, "gc_thresh3": 65536}


async def raise_neighbour_limits(sysctl: Sysctl) -> None:
    """Raise the neighbour tables' limits (never lower them); say so where pynet cannot."""
    for family in ("ipv4", "ipv6"):
        for name, wanted in NEIGHBOUR_LIMITS.items():
            key = f"net/{family}/neigh/default/{name}"
            current = await asyncio.to_thread(sysctl.read, key)
            if current is None:
                continue  # only the host's first namespace has them (pynet in another: the host's apply)
            if current.isdigit() and int(current) >= wanted:
                continue
            problem = await sysctl.ensure(key, str(wanted))
            if problem:
                log.warning("cluster: %s: with many remote containers the neighbour table may overflow", problem)


async def open_overlay(cluster: Cluster, db: Database, ipr, sysctl: Sysctl, firewall: Firewall,
                       bridge: BridgeNetworks) -> Overlay:
    await raise_neighbour_limits(sysctl)
    membership = cluster.membership
    peers = Peers(cluster.endpoints, ipr)
    mode = OverlayMode(bridge, db, ipr, cluster.etcd, cluster.keys, cluster.endpoints, peers, membership.vtep,
                       overlay_mtu(cluster.underlay_mtu, cluster.underlay_version))
    await mode.load()
    cluster.endpoints.follow(peers)
    cluster.local_views.append(mode.local_view)
    cluster.registered.append(mode.quarantine_stale)  # a registration may find this host was reclaimed
    await mode.quarantine_stale()  # reclaimed before a restart: the saved records say so
    guard = VxlanGuard(firewall, cluster.members, membership.vtep)
    log.info("overlay: VTEP %s, overlay MTU %d", membership.vtep, mode.mtu)
    return Overlay(cluster, peers, mode, guard)


async def overlay_tasks(overlay: Overlay) -> AsyncIterator[None]:
    """Started with the server, stopped with it (before the cluster's)."""
    tasks = [asyncio.create_task(every(VERIFY_EVERY, overlay.mode.verify, "overlay verification")),
             asyncio.create_task(every(LOOK_EVERY, overlay.guard.look, "VXLAN guard's look"))]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
