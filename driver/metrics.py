"""Prometheus metrics, in a registry of pynet's own (never the global one)."""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

# Plugin calls are sub-millisecond to tens of milliseconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class StateCollector:
    """Gauges read from pynet's state at scrape time: never stale, no bookkeeping.
    (Each mode adds its own: registry.Running.metrics.)"""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[GaugeMetricFamily]:
        s = self._snapshot()
        yield GaugeMetricFamily("pynet_networks", "Networks pynet holds", value=s["networks"])
        yield GaugeMetricFamily("pynet_endpoints", "Endpoints pynet holds", value=s["endpoints"])
        used = GaugeMetricFamily("pynet_pool_used_addresses", "Addresses held in a pool", labels=["pool"])
        free = GaugeMetricFamily("pynet_pool_free_addresses", "Addresses free in a pool's range",
                                 labels=["pool"])
        ratio = GaugeMetricFamily("pynet_pool_utilisation", "Share of a pool's range in use (0-1)",
                                  labels=["pool"])
        for pool in s["pools"]:
            used.add_metric([pool["id"]], pool["used"])
            free.add_metric([pool["id"]], pool["free"])
            ratio.add_metric([pool["id"]], pool["utilisation"])
        yield used
        yield free
        yield ratio


class Metrics:
    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("pynet_calls", "Docker calls answered", ["method"], registry=self.registry)
        self.errors = Counter("pynet_call_errors", "Docker calls answered with an error", ["method"],
                              registry=self.registry)
        self.latency = Histogram("pynet_call_duration_seconds", "Time to answer a Docker call", ["method"],
                                 buckets=BUCKETS, registry=self.registry)
        self.reconcile_runs = Counter("pynet_reconcile_runs", "Reconciliations run", registry=self.registry)
        self.reconcile_actions = Counter("pynet_reconcile_actions", "What reconciliations did", ["action"],
                                         registry=self.registry)
        self.firewall_restored = Counter("pynet_firewall_restored_rules",
                                         "Firewall rule changes needed to restore pynet's rules",
                                         registry=self.registry)
        self.registry.register(StateCollector(snapshot))

    def observe_call(self, method: str, seconds: float, failed: bool) -> None:
        self.calls.labels(method).inc()
        self.latency.labels(method).observe(seconds)
        if failed:
            self.errors.labels(method).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
