"""pynet's own endpoints on the plugin socket, beside Docker's API.

    GET  /healthz          ready or not, and why
    GET  /debug/state      networks, endpoints, pools, published ports (JSON)
    GET  /debug/doctor     what is out of line between state, kernel and firewall (JSON)
    GET  /metrics          Prometheus text format
    POST /debug/reconcile  put it right (the only call here that changes anything)

Docker only ever POSTs to /Plugin.*, /NetworkDriver.* and /IpamDriver.*,
so none of these can shadow its API.
"""

from __future__ import annotations

import time
from typing import Any
from dataclasses import asdict, dataclass

from aiohttp import web

from ipam.addr import parse_address
from ipam.service import IpamService

from . import __version__
from .config import Config
from .metrics import Metrics
from .bridge import NetworkDriver
from .reconcile import Reconciler


def pool_usage(pool) -> dict:
    a = pool.allocator
    return {"id": pool.pool_id, "pool": str(a.pool), "range": str(a.sub_pool), "size": a.size,
            "used": a.used_total, "free": a.free,
            "utilisation": round(a.used_in_range / a.size, 4) if a.size else 0.0}


def state_counts(driver: NetworkDriver, ipam: IpamService) -> dict:
    """What the state gauges need (read at scrape time)."""
    return {"networks": len(driver.networks), "endpoints": len(driver.endpoints),
            "ports": sum(len(e.bindings) for e in driver.endpoints.values()),
            "pools": [pool_usage(p) for p in ipam.pools.values()]}


@dataclass
class DebugApi:
    config: Config
    driver: NetworkDriver
    ipam: IpamService
    reconciler: Reconciler
    metrics: Metrics
    started: float = 0.0
    cluster: Any = None  # overlay.assembly.Cluster, when pynet runs with cluster settings

    # --- handlers ----------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        checks = {}
        try:
            await self.driver.db.read(lambda c: c.execute("SELECT 1").fetchone())
            checks["state"] = f"ok ({self.config.database})"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["state"] = f"failing: {exc}"
        try:
            await self.driver.ipr.link("get", ifname="lo")  # pynet's pyroute2 handle answers
            checks["kernel"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["kernel"] = f"failing: {exc}"
        runs = self.reconciler.runs
        checks["reconciled"] = f"ok ({runs} runs, last: {dict(self.reconciler.last) or 'nothing to do'})" \
            if runs else "not yet"
        ready = all(v.startswith("ok") for v in checks.values())
        if self.cluster is not None:
            # etcd away is degraded, not down: running containers and single-host networks work.
            checks["cluster"] = await self._cluster_check()
        body = {"ready": ready, "degraded": not checks.get("cluster", "ok").startswith("ok"),
                "version": __version__, "checks": checks,
                "uptime_seconds": round(time.monotonic() - self.started, 1),
                "networks": len(self.driver.networks), "endpoints": len(self.driver.endpoints),
                "state_dir": self.config.state_dir, "socket": self.config.socket,
                "settings": self.settings()}
        return web.json_response(body, status=200 if ready else 503)

    async def cluster_view(self, _: web.Request) -> web.Response:
        if self.cluster is None:
            return web.json_response({"Err": "pynet runs without cluster settings (--etcd-endpoints)"}, status=404)
        from .overlay.etcd import ClusterUnavailable
        from .overlay.views import cluster_view
        try:
            return web.json_response(await cluster_view(self.cluster))
        except ClusterUnavailable as exc:
            return web.json_response({"Err": str(exc)}, status=503)

    async def remove_host(self, request: web.Request) -> web.Response:
        if self.cluster is None:
            return web.json_response({"Err": "pynet runs without cluster settings (--etcd-endpoints)"}, status=404)
        from .overlay.etcd import ClusterUnavailable
        body = await request.json()
        host = body.get("host") if isinstance(body, dict) else None
        if not isinstance(host, str) or not host:
            return web.json_response({"Err": "remove-host needs {\"host\": NAME}"}, status=400)
        try:
            return web.json_response({"done": await self.cluster.reaper.remove(host)})
        except (ValueError, ClusterUnavailable) as exc:
            return web.json_response({"Err": str(exc)}, status=409)

    async def _cluster_check(self) -> str:
        membership = self.cluster.membership
        if not membership.alive.is_set():
            return (f"degraded: host {membership.host} is not registered with etcd at"
                    f" {self.cluster.etcd.settings.describe()}: new endpoints on cluster networks fail;"
                    " running containers and single-host networks are unaffected")
        return f"ok (host {membership.host}, epoch {membership.epoch}, VTEP {membership.vtep})"

    def settings(self) -> dict:
        """What an operator tunes (PYNET_*, `docker plugin set`), as this pynet runs with it."""
        shown_apart = ("socket", "state_dir")
        return {k: v for k, v in asdict(self.config).items() if k not in shown_apart}

    async def state(self, _: web.Request) -> web.Response:
        d = self.driver
        holders = await self._holders()
        networks = [{
            "id": n.network_id, "bridge": n.bridge,
            "subnets": [s.to_json() for s in n.subnets],
            "options": n.options.to_json(),
            "mode": "internal" if n.options.internal else ("nat" if n.options.masquerade else "routed"),
            "endpoints": sum(1 for e in d.endpoints.values() if e.network_id == n.network_id),
        } for n in d.networks.values()]
        endpoints = [{
            "id": e.endpoint_id, "network": e.network_id, "host_interface": e.host_if,
            "container_interface": e.peer_if, "mac": e.mac,
            "addresses": [str(a) for a in (e.address, e.address6) if a],
            "sandbox": e.sandbox, "published": [b.to_json() for b in e.bindings],
        } for e in d.endpoints.values()]
        pools = []
        for pool in self.ipam.pools.values():
            usage = pool_usage(pool)
            usage["network"] = d.network_using(pool.network)
            usage["addresses"] = holders.get(pool.pool_id, {})
            pools.append(usage)
        return web.json_response({"version": __version__, "networks": networks, "endpoints": endpoints,
                                  "pools": pools})

    async def _holders(self) -> dict[str, dict[str, str]]:
        """pool ID -> address -> who holds it."""
        holders = self.driver.holders()
        result: dict[str, dict[str, str]] = {}
        for pool_id, address, kind in await self.ipam.allocated():
            who = holders.get(parse_address(address))
            result.setdefault(pool_id, {})[address] = who[1] if who else f"{kind}, held by no endpoint"
        return result

    async def doctor(self, _: web.Request) -> web.Response:
        findings = await self.reconciler.inspect()
        return web.json_response({"findings": [f.to_json() for f in findings]})

    async def reconcile(self, _: web.Request) -> web.Response:
        done = await self.reconciler.run()
        return web.json_response({"done": dict(done)})

    async def metrics_text(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/debug/state", self.state)
        app.router.add_get("/debug/doctor", self.doctor)
        app.router.add_post("/debug/reconcile", self.reconcile)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_get("/debug/cluster", self.cluster_view)
        app.router.add_post("/debug/cluster/remove-host", self.remove_host)

