"""Assembles pynet: state database, IPAM, network driver, firewall, socket."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Sequence

from aiohttp import web
from pyroute2 import AsyncIPRoute

from ipam.store import sqlite as ipam_store
from ipam.pools import DefaultPool, parse_default_pools
from ipam.contract import IpamApi
from ipam.router import IpamRouter
from ipam.service import IpamService

from .bridge import store as driver_store
from .overlay import store as overlay_store
from .config import IPTABLES, Config
from .db import Database
from .firewall import Firewall
from .firewall_events import FirewallEvents
from .kernel import links
from .kernel.firewall import Iptables
from .kernel.netlink_thread import KernelThread
from .kernel.sysctl import Sysctl
from .debug import DebugApi, state_counts
from .metrics import Metrics
from .modes import Modes
from .bridge import NetworkDriver
from .periodic import every
from .reconcile import Reconciler
from .listener import PluginSocket
from .server import make_app

if TYPE_CHECKING:
    from .overlay.assembly import Cluster


def is_cluster_pool(pool_id: str) -> bool:
    from .overlay.cluster_ipam import is_cluster_pool as check
    return check(pool_id)

log = logging.getLogger("pynet")


@dataclass
class Plugin:
    config: Config
    db: Database
    ipr: AsyncIPRoute | KernelThread
    driver: NetworkDriver  # the bridge mode
    modes: Modes  # what Docker's calls go to
    ipam: IpamService
    firewall: Firewall
    reconciler: Reconciler
    debug: DebugApi
    ipam_api: IpamApi  # what Docker's IPAM calls go to: the host's pools, and the cluster's if any
    cluster: "Cluster | None" = None


async def open_state(path: str) -> Database:
    """The state database, with every table pynet keeps there."""
    db = Database(path)
    await db.open([driver_store.SCHEMA, driver_store.migrate, ipam_store.SCHEMA, overlay_store.SCHEMA])
    return db


@dataclass
class Core:
    driver: NetworkDriver  # the bridge mode
    modes: Modes  # what Docker's calls go to
    ipam: IpamService
    reconciler: Reconciler


async def assemble(db: Database, ipr: AsyncIPRoute, firewall: Firewall, sysctl: Sysctl,
                   defaults: list[DefaultPool], netns_dirs: Sequence[str], netns_mount: str = "",
                   stale_after: float = 60.0) -> Core:
    """The modes, the IPAM and reconciliation on given state and kernel handles,
    loaded: the one wiring the service, the kernel tests and the unit fakes share."""
    driver = NetworkDriver(db, ipr, firewall, netns_dirs, sysctl, netns_mount=netns_mount)
    modes = Modes({"bridge": driver})  # a new mode: one more entry here
    ipam = IpamService(ipam_store.SqliteIpamStore(db), defaults, host_routes=lambda: links.host_routes(ipr),
                       holder_of=modes.holder_of, network_using=modes.network_using,
                       on_release=modes.address_released)
    await driver.load()
    await ipam.load()
    reconciler = Reconciler([mode.reconciliation() for mode in modes.modes.values()], firewall,
                            ipam.unheld, ipam.release_in, min_age=stale_after)
    return Core(driver, modes, ipam, reconciler)


async def build(config: Config, ipr: AsyncIPRoute | None = None,
                iptables: Iptables | None = None) -> Plugin:
    """Open the state and load it; the kernel handles can be given (tests)."""
    defaults = parse_default_pools(config.default_pools)  # refuse a bad setting before anything
    db = await open_state(config.database)
    ipr = ipr or KernelThread()
    v4, v6 = IPTABLES[config.iptables]
    firewall = Firewall(iptables or Iptables(v4=v4, v6=v6))
    core = await assemble(db, ipr, firewall, Sysctl(root=config.sysctl_root), defaults, config.netns_dirs,
                          config.netns_mount, config.stale_after)
    driver, modes, ipam, reconciler = core.driver, core.modes, core.ipam, core.reconciler
    await firewall.probe(need_ipv6=any(n.ipv6 for n in driver.networks.values()))
    reconciler.fresh_state = db.created
    if db.created:
        log.warning("pynet: new state database %s: links and rules pynet made that it does not explain"
                    " are kept and reported, not deleted, until pynet restarts on this state", config.database)
    metrics = Metrics(lambda: state_counts(driver, ipam))
    debug = DebugApi(config, driver, ipam, reconciler, metrics, started=time.monotonic())
    firewall.on_restored = metrics.firewall_restored.inc
    reconciler.on_done = lambda done: _count_reconcile(metrics, done)
    # Before the first call, what calls need (after a reboot nothing is there);
    # the rest as soon as pynet serves (see serve()).
    await reconciler.run(full=False)
    cluster = None
    if config.clustered:
        from .overlay.assembly import open_cluster
        cluster = await open_cluster(config, db, ipr, driver)
        # The overlay first: it holds its networks, which the bridge mode builds on.
        modes = Modes({"overlay": cluster.mode, "bridge": driver}, default="bridge")
        debug.cluster = cluster
        reconciler.modes.append(cluster.mode.reconciliation())
        metrics.add_cluster(cluster.membership.alive.is_set)
        cluster.etcd.observer = metrics.observe_etcd
        cluster.peers.on_programmed = metrics.programmed.observe
    ipam_api = IpamRouter(ipam, cluster.ipam if cluster else None, is_cluster_pool)
    return Plugin(config, db, ipr, driver, modes, ipam, firewall, reconciler, debug, ipam_api, cluster)


def _count_reconcile(metrics: Metrics, done) -> None:
    metrics.reconcile_runs.inc()
    for action, n in done.items():
        metrics.reconcile_actions.labels(action).inc(n)


def lock_state_dir(state_dir: str) -> int:
    """One pynet per state directory: a second one (an old and a new plugin on one
    host, or a plugin beside the service) would take the other's links and rules
    for leftovers and delete them. The lock goes with the process, even on kill -9."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, "pynet.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"pynet: state directory {state_dir} is in use by another pynet (a second"
                         " plugin or the service on the same directory): stop that one first") from None
    return fd


_claims: list[socket.socket] = []  # held for the life of the process


def claim_network_namespace(name: str = "pynet") -> None:
    """One pynet per network namespace, whatever its state directory: two would
    take each other's bridges, veths and rules for leftovers. An abstract socket
    name belongs to the network namespace (a plugin and the service share it)
    and goes with the process."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        claim.bind("\0" + name)
    except OSError:
        claim.close()
        raise SystemExit("pynet: another pynet is running on this host (network namespace): a second"
                         " one would delete its networks as leftovers; stop that one first") from None
    _claims.append(claim)


async def serve(config: Config) -> None:
    # First: a SIGTERM during start-up must still stop pynet through the drain below.
    stop = asyncio.Event()
    install_stop_handlers(asyncio.get_running_loop(), stop)
    lock_state_dir(config.state_dir)
    claim_network_namespace()
    plugin = await build(config)
    listener = PluginSocket.open(config.socket)
    # aiohttp's own shutdown comes after listener.stop() has drained every
    # connection: it needs only a few seconds for one that outlived the drain.
    app = make_app(plugin.modes, plugin.ipam_api, plugin.debug)
    app.cleanup_ctx.append(lambda _app: background(plugin))
    if plugin.cluster is not None:
        from .overlay.assembly import cluster_tasks
        cluster = plugin.cluster
        app.cleanup_ctx.append(lambda _app: cluster_tasks(cluster))
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    await listener.start(runner)
    log.info("pynet serving on %s%s (state %s)", listener.path,
             " (socket from systemd)" if listener.inherited else "", config.database)

    await stop.wait()
    log.info("pynet stopping: answering the calls already accepted, taking no new one")
    await listener.stop()
    await runner.cleanup()  # stops the background tasks too
    await plugin.db.close()
    plugin.ipr.close()
    log.info("pynet stopped")


async def background(plugin: Plugin) -> AsyncIterator[None]:
    """The rest of reconciliation once serving, then the periodic checks; stopped
    with the server (aiohttp's cleanup context), after the last call is answered."""
    config = plugin.config
    tasks = [asyncio.create_task(every(0, plugin.reconciler.run, "reconcile", once=True))]
    if config.firewall_interval > 0:
        events = firewall_events(config) if await plugin.firewall.iptables.uses_nftables() else None
        tasks.append(asyncio.create_task(plugin.firewall.watch(config.firewall_interval, events)))
    if config.reconcile_interval > 0:
        tasks.append(asyncio.create_task(plugin.reconciler.watch(config.reconcile_interval)))
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def firewall_events(config: Config) -> FirewallEvents | None:
    """The kernel's change reports (pynet's iptables writes through nftables);
    None (a check every --firewall-interval seconds) where it cannot have them."""
    try:
        return FirewallEvents()
    except OSError as exc:
        log.warning("firewall: the kernel does not report changes here (%s): checking every %g s",
                    exc, config.firewall_interval)
        return None


def install_stop_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT stop pynet, but only pynet itself.

    pyroute2 forks a short-lived child to open a netlink socket in a
    container's namespace, and stops it with SIGTERM. asyncio's own signal
    handling (a wakeup fd the child shares) would make that child's signal
    stop pynet: here the forked child just exits.
    """
    main = os.getpid()

    def handler(signum, _frame) -> None:
        if os.getpid() != main:
            os._exit(0)
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    # Standard output: dockerd logs a managed plugin's stderr as level=error, whatever it says.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pyroute2 logs every netlink message at DEBUG: noise that costs real time.
    logging.getLogger("pyroute2").setLevel(max(logging.getLevelName(level), logging.INFO))
