"""What the bridge mode shows of itself: its networks and endpoints in
/debug/state, and its gauges in /metrics."""

from __future__ import annotations

from typing import Iterable

from prometheus_client.core import GaugeMetricFamily

from ..metrics import Metrics
from .mode import BridgeMode


async def describe(driver: BridgeMode) -> dict[str, list]:
    networks = [{
        "id": n.network_id, "bridge": n.bridge,
        "subnets": [s.to_json() for s in n.subnets],
        "options": n.options.to_json(),
        "mode": "internal" if n.options.internal else ("nat" if n.options.masquerade else "routed"),
        "endpoints": sum(1 for e in driver.endpoints.values() if e.network_id == n.network_id),
    } for n in driver.networks.values()]
    endpoints = [{
        "id": e.endpoint_id, "network": e.network_id, "host_interface": e.host_if,
        "container_interface": e.peer_if, "mac": e.mac,
        "addresses": [str(a) for a in (e.address, e.address6) if a],
        "sandbox": e.sandbox, "published": [b.to_json() for b in e.bindings],
    } for e in driver.endpoints.values()]
    return {"networks": networks, "endpoints": endpoints}


class _PublishedPorts:
    """Read from the state at scrape time: never stale, no bookkeeping."""

    def __init__(self, driver: BridgeMode) -> None:
        self.driver = driver

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily("pynet_published_ports", "Published host ports",
                                value=sum(len(e.bindings) for e in self.driver.endpoints.values()))


def add_metrics(driver: BridgeMode, metrics: Metrics) -> None:
    metrics.registry.register(_PublishedPorts(driver))
