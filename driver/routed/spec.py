"""The routed mode's entry in the registry: built on the bridge mode (each
routed network is a bridge network with proxy ARP and cross-host rules) and
on the cluster (definitions, blocks, endpoint records, the cluster view),
with its routes, their verification and its health."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Iterable, cast

from prometheus_client.core import GaugeMetricFamily

from ..metrics import Metrics
from ..registry import ModeHost, ModeSpec, Running
from . import store
from .path import HOPS, add_hops

if TYPE_CHECKING:
    from .assembly import Routed


async def start(host: ModeHost, _settings: None) -> Running:
    from ..bridge.api import BridgeNetworks
    from ..cluster.assembly import Cluster
    from .assembly import open_routed, routed_tasks
    from .repair import RoutedReconciliation
    # What builds_on=("bridge", "cluster") started.
    bridge = cast(BridgeNetworks, host.started["bridge"].mode)
    cluster = cast(Cluster, host.started["cluster"].parts)
    routed = await open_routed(cluster, host.db, host.ipr, bridge)
    return Running(routed.mode, RoutedReconciliation(routed.mode), tasks=partial(routed_tasks, routed),
                   health=partial(health, routed), metrics=partial(add_metrics, routed),
                   path=partial(add_hops, routed.mode))


async def health(routed: "Routed") -> tuple[str, str]:
    routes = routed.routes
    off = routes.unreachable()
    if off:
        return "routed", "degraded: " + "; ".join(
            f"host {', '.join(sorted(u.hosts))} ({via}): {u.why}: its containers get no route here"
            for via, u in sorted(off.items()))
    count = sum(len(have) for have in routes.programmed.values())
    return "routed", f"ok ({len(routed.mode.networks)} networks, {count} routes to remote containers)"


class _Routed:
    def __init__(self, routed: "Routed") -> None:
        self.routed = routed

    def collect(self) -> Iterable[GaugeMetricFamily]:
        routes = self.routed.routes
        yield GaugeMetricFamily("pynet_routed_routes", "Routes to remote containers of routed networks",
                                value=sum(len(have) for have in routes.programmed.values()))
        yield GaugeMetricFamily("pynet_routed_unreachable_hosts",
                                "Hosts with routed containers that are not on this host's segment",
                                value=sum(len(u.hosts) for u in routes.unreachable().values()))


def add_metrics(routed: "Routed", metrics: Metrics) -> None:
    metrics.registry.register(_Routed(routed))


SPEC = ModeSpec("routed", start, builds_on=("bridge", "cluster"), schema=(store.SCHEMA,), path_hops=HOPS)
