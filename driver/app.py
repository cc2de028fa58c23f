"""Assembles pynet: state database, IPAM, the registered network modes,
firewall, socket. Names no mode: each registers itself (registry.py)."""

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
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import web
from pyroute2 import AsyncIPRoute

from ipam.store import sqlite as ipam_store
from ipam.pools import parse_default_pools
from ipam.service import IpamService

from . import registry
from .config import IPTABLES, Config
from .db import Database
from .firewall import Firewall
from .firewall_events import FirewallEvents
from .kernel import links
from .kernel.iptables import Iptables
from .kernel.netlink_thread import KernelThread
from .kernel.sysctl import Sysctl
from .debug import DebugApi, state_counts
from .metrics import Metrics
from .modes import DEFAULT_MODE, Modes, NetworkMode
from .periodic import every
from .reconcile import Reconciler
from .listener import PluginSocket
from .registry import ModeHost, Running
from .server import make_app

log = logging.getLogger("pynet")


@dataclass
class Core:
    modes: Modes  # what Docker's calls go to
    running: list[Running]  # the modes started here, in start order
    ipam: IpamService
    reconciler: Reconciler

    def mode(self, name: str) -> NetworkMode:
        return self.modes.modes[name]


@dataclass
class Plugin:
    config: Config
    db: Database
    ipr: AsyncIPRoute | KernelThread
    core: Core
    firewall: Firewall
    debug: DebugApi

    @property
    def modes(self) -> Modes:
        return self.core.modes

    @property
    def reconciler(self) -> Reconciler:
        return self.core.reconciler


async def open_state(path: str) -> Database:
    """The state database, with every table pynet keeps there."""
    db = Database(path)
    await db.open([*registry.schemas(), ipam_store.SCHEMA])
    return db


async def assemble(config: Config, db: Database, ipr: AsyncIPRoute, firewall: Firewall, sysctl: Sysctl) -> Core:
    """The modes this configuration turns on, the IPAM and reconciliation on given state
    and kernel handles, loaded: the one wiring the service, the kernel tests and the unit
    fakes share."""
    defaults = parse_default_pools(config.default_pools)
    host = ModeHost(config, db, ipr, firewall, sysctl)
    needs: dict[str, str] = {}  # what turns on each mode or part that is off here
    for spec in registry.specs():
        settings = config.modes.get(spec.name)
        if spec.settings is not None and settings is None:
            needs[spec.name] = spec.settings.needs
        elif missing := [name for name in spec.builds_on if name not in host.started]:
            needs[spec.name] = " and ".join(needs.get(name, name) for name in missing)
        else:
            host.started[spec.name] = await spec.start(host, settings)
    modes = Modes({name: running.mode for name, running in host.started.items() if running.mode is not None},
                  DEFAULT_MODE, {spec.name: needs[spec.name] for spec in registry.specs()
                                 if spec.mode and spec.name in needs})
    shared = next((r.ipam_store for r in host.started.values() if r.ipam_store is not None), None)
    shared_needs = " or ".join(s.ipam_needs for s in registry.specs() if s.ipam_needs) or "a mode that keeps them"
    ipam = IpamService(ipam_store.SqliteIpamStore(db), defaults, host_routes=lambda: links.host_routes(ipr),
                       holder_of=modes.holder_of, network_using=modes.network_using,
                       on_release=modes.address_released, shared=shared, shared_needs=shared_needs)
    await ipam.load()
    reconciler = Reconciler([r.reconciliation for r in host.started.values() if r.reconciliation], firewall,
                            ipam.unheld, ipam.release_in, min_age=config.stale_after)
    return Core(modes, list(host.started.values()), ipam, reconciler)


async def build(config: Config, ipr: AsyncIPRoute | None = None,
                iptables: Iptables | None = None) -> Plugin:
    """Open the state and load it; the kernel handles can be given (tests)."""
    parse_default_pools(config.default_pools)  # refuse a bad setting before anything
    db = await open_state(config.database)
    ipr = ipr or KernelThread()
    v4, v6 = IPTABLES[config.iptables]
    firewall = Firewall(iptables or Iptables(v4=v4, v6=v6))
    core = await assemble(config, db, ipr, firewall, Sysctl(root=config.sysctl_root))
    await firewall.probe(need_ipv6=any(running.uses_ipv6() for running in core.running))
    core.reconciler.fresh_state = db.created
    if db.created:
        log.warning("pynet: new state database %s: links and rules pynet made that it does not explain"
                    " are kept and reported, not deleted, until pynet restarts on this state", config.database)
    metrics = Metrics(lambda: state_counts(core.reconciler, core.ipam))
    for running in core.running:
        if running.metrics is not None:
            running.metrics(metrics)
    debug = DebugApi(config, db, ipr, core.modes, core.running, core.ipam, core.reconciler, metrics,
                     started=time.monotonic())
    firewall.on_restored = metrics.firewall_restored.inc
    core.reconciler.on_done = lambda done: _count_reconcile(metrics, done)
    # Before the first call, what calls need (after a reboot nothing is there);
    # the rest as soon as pynet serves (see serve()).
    await core.reconciler.run(full=False)
    return Plugin(config, db, ipr, core, firewall, debug)


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
    app = make_app(plugin.modes, plugin.core.ipam, plugin.debug)
    app.cleanup_ctx.append(lambda _app: background(plugin))
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
    """The rest of reconciliation once serving, the periodic checks, and each mode's
    own work; stopped with the server (aiohttp's cleanup context), after the last
    call is answered."""
    config = plugin.config
    tasks = [asyncio.create_task(every(0, plugin.reconciler.run, "reconcile", once=True))]
    if config.firewall_interval > 0:
        events = firewall_events(config) if await plugin.firewall.iptables.uses_nftables() else None
        tasks.append(asyncio.create_task(plugin.firewall.watch(config.firewall_interval, events)))
    if config.reconcile_interval > 0:
        tasks.append(asyncio.create_task(plugin.reconciler.watch(config.reconcile_interval)))
    try:
        async with AsyncExitStack() as modes_work:  # each mode's own work: stopped first, in reverse
            for running in plugin.core.running:
                if running.tasks is not None:
                    await modes_work.enter_async_context(asynccontextmanager(running.tasks)())
            yield
    finally:
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
