"""The overlay mode's entry in the registry: built on the bridge mode (each
overlay network is a bridge network plus a VXLAN device) and on the
cluster (definitions, endpoint records, the cluster view), with its peers'
entries and their verification."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Iterable, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..metrics import Metrics
from ..registry import ModeHost, ModeSpec, Running
from . import store
from .path import HOPS, add_hops

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
    overlay = await open_overlay(cluster, host.db, host.ipr, host.sysctl, host.firewall, bridge)
    # With the bridge mode's, which covers every bridge and veth, overlay ones included.
    reconciliation = OverlayReconciliation(overlay.mode, overlay.guard)
    return Running(overlay.mode, reconciliation, tasks=partial(overlay_tasks, overlay),
                   health=partial(health, overlay), metrics=partial(add_metrics, overlay),
                   path=partial(add_hops, overlay.mode))


async def health(overlay: "Overlay") -> tuple[str, str]:
    """Degraded while containers a reclaim of this host left behind are quarantined."""
    mode = overlay.mode
    stale = mode.quarantine.stale(mode.names())
    if stale:
        return "overlay", (f"degraded: {len(stale)} endpoints quarantined (this host was reclaimed while away):"
                           f" {', '.join(s.endpoint_id[:12] for s in stale[:5])}; restart their containers")
    return "overlay", f"ok ({len(mode.networks)} networks)"


class _Guard:
    def __init__(self, overlay: "Overlay") -> None:
        self.overlay = overlay

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        yield CounterMetricFamily("pynet_overlay_vxlan_dropped_packets",
                                  "VXLAN packets dropped because they came from no cluster member's address"
                                  " (as the kernel's counter stood at the last look, every 10 s)",
                                  value=self.overlay.guard.dropped)
        mode = self.overlay.mode
        yield GaugeMetricFamily("pynet_overlay_quarantined_endpoints",
                                "Endpoints kept off the overlay: a reclaim of this host left them behind",
                                value=len(mode.quarantine.stale(mode.names())))


def add_metrics(overlay: "Overlay", metrics: Metrics) -> None:
    metrics.registry.register(_Guard(overlay))


SPEC = ModeSpec("overlay", start, builds_on=("bridge", "cluster"), schema=(store.SCHEMA,), path_hops=HOPS)
