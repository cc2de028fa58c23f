"""The overlay mode's entry in the registry: built on the bridge mode (each
overlay network is a bridge network plus a VXLAN device) and on the
cluster, with the peer watch, the cluster view and the `pynet cluster`
command."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from aiohttp import web
from prometheus_client import Histogram

from ..metrics import BUCKETS, Metrics
from ..registry import Command, ModeHost, ModeSpec, Running
from . import store
from .cli import add_arguments as cluster_arguments, cmd_cluster

if TYPE_CHECKING:
    from .assembly import Overlay


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
    return Running(overlay.mode, reconciliation, tasks=partial(overlay_tasks, overlay),
                   routes=partial(add_routes, overlay), metrics=partial(add_metrics, overlay))


def add_routes(overlay: "Overlay", app: web.Application) -> None:
    from ..cluster.etcd import ClusterUnavailable
    from .views import cluster_view

    async def view(_: web.Request) -> web.Response:
        try:
            return web.json_response(await cluster_view(overlay))
        except ClusterUnavailable as exc:
            return web.json_response({"Err": str(exc)}, status=503)

    app.router.add_get("/debug/cluster", view)


def add_metrics(overlay: "Overlay", metrics: Metrics) -> None:
    programmed = Histogram("pynet_cluster_publish_to_programmed_seconds",
                           "From a remote endpoint's publication in etcd to its entries in this host's kernel",
                           buckets=BUCKETS, registry=metrics.registry)
    overlay.peers.on_programmed = programmed.observe


SPEC = ModeSpec(
    "overlay", start,
    builds_on=("bridge", "cluster"), schema=(store.SCHEMA,),
    commands=(Command("cluster", "the overlay's cluster: hosts, networks, blocks, and this host's peers",
                      cluster_arguments, cmd_cluster),))
