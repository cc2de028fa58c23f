"""pynet's own endpoints on the plugin socket, beside Docker's API.

    GET  /healthz          ready or not, and why
    GET  /debug/state      networks, endpoints, pools, published ports (JSON)
    GET  /debug/doctor     what is out of line between state, kernel and firewall (JSON)
    GET  /debug/path       one endpoint's packet path, hop by hop (?endpoint=ID&to=ADDRESS[:PORT])
    GET  /metrics          Prometheus text format
    (and what each running mode adds: registry.Running.routes)
    POST /debug/reconcile  put it right (the only call here that changes anything)

Docker only ever POSTs to /Plugin.*, /NetworkDriver.* and /IpamDriver.*,
so none of these can shadow its API.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any

from aiohttp import web

from ipam.addr import parse_address
from ipam.service import IpamService

from . import __version__
from .config import Config
from .db import Database
from .metrics import Metrics
from .modes import Modes
from .path.service import path_of
from .reconcile import Reconciler
from .registry import Running


def pool_usage(pool) -> dict:
    a = pool.allocator
    return {"id": pool.pool_id, "pool": str(a.pool), "range": str(a.sub_pool), "size": a.size,
            "used": a.used_total, "free": a.free,
            "utilisation": round(a.used_in_range / a.size, 4) if a.size else 0.0}


def state_counts(reconciler: Reconciler, ipam: IpamService) -> dict:
    """What the state gauges need (read at scrape time)."""
    networks, endpoints = reconciler.counts()
    return {"networks": networks, "endpoints": endpoints, "pools": [pool_usage(p) for p in ipam.pools.values()]}


@dataclass
class DebugApi:
    config: Config
    db: Database
    ipr: Any
    modes: Modes
    running: list[Running]
    ipam: IpamService
    reconciler: Reconciler
    metrics: Metrics
    started: float = 0.0

    # --- handlers ----------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        checks = {}
        try:
            await self.db.read(lambda c: c.execute("SELECT 1").fetchone())
            checks["state"] = f"ok ({self.config.database})"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["state"] = f"failing: {exc}"
        try:
            await self.ipr.link("get", ifname="lo")  # pynet's pyroute2 handle answers
            checks["kernel"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["kernel"] = f"failing: {exc}"
        runs = self.reconciler.runs
        checks["reconciled"] = f"ok ({runs} runs, last: {dict(self.reconciler.last) or 'nothing to do'})" \
            if runs else "not yet"
        ready = all(v.startswith("ok") for v in checks.values())
        # A mode's own checks make pynet degraded, not down: the other networks work.
        degraded = False
        for running in self.running:
            if running.health is not None:
                name, text = await running.health()
                checks[name] = text
                degraded = degraded or not text.startswith("ok")
        networks, endpoints = self.reconciler.counts()
        body = {"ready": ready, "degraded": degraded, "version": __version__, "checks": checks,
                "uptime_seconds": round(time.monotonic() - self.started, 1),
                "networks": networks, "endpoints": endpoints,
                "state_dir": self.config.state_dir, "socket": self.config.socket,
                "settings": self.settings()}
        return web.json_response(body, status=200 if ready else 503)

    def settings(self) -> dict:
        """What an operator tunes (PYNET_*, `docker plugin set`), as this pynet runs with it:
        pynet's own settings and those of each mode that is on, side by side."""
        shown_apart = ("socket", "state_dir", "modes")
        shown = {f.name: getattr(self.config, f.name) for f in fields(self.config) if f.name not in shown_apart}
        for mode_settings in self.config.modes.values():
            if is_dataclass(mode_settings) and not isinstance(mode_settings, type):
                shown.update(asdict(mode_settings))
        return shown

    async def state(self, _: web.Request) -> web.Response:
        """Each mode's networks and endpoints, and every pool with who holds each address."""
        body: dict[str, Any] = {"version": __version__, "networks": [], "endpoints": []}
        for running in self.running:
            if running.describe is not None:
                for key, items in (await running.describe()).items():
                    body.setdefault(key, []).extend(items)
        holders = await self._holders()
        pools = []
        for pool in self.ipam.pools.values():
            usage = pool_usage(pool)
            usage["network"] = self.modes.network_using(pool.network)
            usage["addresses"] = holders.get(pool.pool_id, {})
            pools.append(usage)
        body["pools"] = pools
        return web.json_response(body)

    async def _holders(self) -> dict[str, dict[str, str]]:
        """pool ID -> address -> who holds it."""
        holders = self.modes.holders()
        result: dict[str, dict[str, str]] = {}
        for pool_id, address, kind in await self.ipam.allocated():
            who = holders.get(parse_address(address))
            result.setdefault(pool_id, {})[address] = who[1] if who else f"{kind}, held by no endpoint"
        return result

    async def doctor(self, _: web.Request) -> web.Response:
        findings = await self.reconciler.inspect()
        return web.json_response({"findings": [f.to_json() for f in findings]})

    async def path(self, request: web.Request) -> web.Response:
        return await path_of(request, [r.path for r in self.running if r.path is not None],
                             [r.describe for r in self.running if r.describe is not None])

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
        app.router.add_get("/debug/path", self.path)
        app.router.add_post("/debug/reconcile", self.reconcile)
        app.router.add_get("/metrics", self.metrics_text)
        for running in self.running:
            if running.routes is not None:
                running.routes(app)

