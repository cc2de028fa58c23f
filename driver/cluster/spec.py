"""The cluster's entry in the registry: a part the cluster modes build on
(not a value of pynet.mode), on with the cluster settings. It brings the
settings, its tables, this host's liveness and the reclaiming of lost
hosts, the endpoint records modes follow, health, etcd's metrics, the
cluster networks' pools (the IPAM's shared store), the cluster view and
`pynet cluster` (with the removal of a lost host)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Iterable

from aiohttp import web
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from ..metrics import BUCKETS, Metrics
from ..registry import Command, ModeHost, ModeSpec, Running, Settings
from . import settings, store
from .cli import add_arguments as cluster_arguments, cmd_cluster
from .settings import ClusterSettings

if TYPE_CHECKING:
    from .assembly import Cluster


async def start(host: ModeHost, config: ClusterSettings) -> Running:
    # The etcd client is a heavy import: only where the cluster is on.
    from .assembly import cluster_tasks, open_cluster
    cluster = await open_cluster(config, host.db, host.ipr)
    return Running(None, tasks=partial(cluster_tasks, cluster), health=partial(health, cluster),
                   routes=partial(add_routes, cluster), metrics=partial(add_metrics, cluster),
                   ipam_store=cluster.ipam, parts=cluster)


async def health(cluster: "Cluster") -> tuple[str, str]:
    # etcd away is degraded, not down: running containers and single-host networks work.
    membership = cluster.membership
    if not membership.alive.is_set():
        return "cluster", (f"degraded: host {membership.host} is not registered with etcd at"
                           f" {cluster.etcd.settings.describe()}: new endpoints on cluster networks fail;"
                           " running containers and single-host networks are unaffected")
    return "cluster", f"ok (host {membership.host}, epoch {membership.epoch}, VTEP {membership.vtep})"


def add_routes(cluster: "Cluster", app: web.Application) -> None:
    from .etcd import ClusterUnavailable
    from .views import cluster_view

    async def view(_: web.Request) -> web.Response:
        try:
            return web.json_response(await cluster_view(cluster))
        except ClusterUnavailable as exc:
            return web.json_response({"Err": str(exc)}, status=503)

    async def remove_host(request: web.Request) -> web.Response:
        body = await request.json()
        host = body.get("host") if isinstance(body, dict) else None
        if not isinstance(host, str) or not host:
            return web.json_response({"Err": "remove-host needs {\"host\": NAME}"}, status=400)
        try:
            return web.json_response({"done": await cluster.reaper.remove(host)})
        except (ValueError, ClusterUnavailable) as exc:
            return web.json_response({"Err": str(exc)}, status=409)

    app.router.add_get("/debug/cluster", view)
    app.router.add_post("/debug/cluster/remove-host", remove_host)


class _Registered:
    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily("pynet_cluster_registered", "1 when this host is registered with etcd",
                                value=1 if self.cluster.membership.alive.is_set() else 0)


def add_metrics(cluster: "Cluster", metrics: Metrics) -> None:
    """etcd up, its call latency and count; how soon remote endpoints reach this host's kernel."""
    calls = Counter("pynet_cluster_etcd_requests", "Requests pynet made to etcd", ["call", "outcome"],
                    registry=metrics.registry)
    latency = Histogram("pynet_cluster_etcd_request_duration_seconds", "Time of an etcd request", ["call"],
                        buckets=BUCKETS, registry=metrics.registry)
    metrics.registry.register(_Registered(cluster))

    def observe_etcd(call: str, seconds: float, ok: bool) -> None:
        calls.labels(call, "ok" if ok else "unavailable").inc()
        latency.labels(call).observe(seconds)

    cluster.etcd.observer = observe_etcd
    programmed = Histogram("pynet_cluster_publish_to_programmed_seconds",
                           "From a remote endpoint's publication in etcd to its entries in this host's kernel",
                           buckets=BUCKETS, registry=metrics.registry)
    cluster.endpoints.on_programmed = programmed.observe


SPEC = ModeSpec(
    "cluster", start, mode=False,
    schema=(store.SCHEMA,),
    commands=(Command("cluster", "the cluster: hosts, networks, blocks, and this host's peers",
                      cluster_arguments, cmd_cluster),),
    settings=Settings(settings.add_arguments, settings.from_args, settings.NEEDS),
    ipam_needs=settings.NEEDS)
