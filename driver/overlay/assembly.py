"""The overlay mode's parts, put together on the bridge mode, and their
background work: liveness, the peer watch, verification, journaled releases."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import AsyncIterator

from .. import __version__
from ..bridge.api import BridgeNetworks
from ..db import Database
from ..errors import InvalidRequest
from ..kernel import links
from ..kernel.sysctl import Sysctl
from ..cluster.etcd import ClusterUnavailable, Etcd, EtcdSettings
from ..cluster.ipam_store import EtcdIpamStore
from ..cluster.keys import Keys
from ..cluster.membership import Membership
from ..cluster.reclaim import Reaper
from ..cluster.settings import ClusterSettings
from .addressing import overlay_mtu
from .mode import OverlayMode, keep_verifying
from .peers import Peers

log = logging.getLogger("pynet.cluster")

VERIFY_EVERY = 30.0
REPLAY_EVERY = 5.0


@dataclass
class Cluster:
    etcd: Etcd
    membership: Membership
    ipam: EtcdIpamStore
    peers: Peers
    mode: OverlayMode
    reaper: Reaper


async def resolve_vtep(ipr, vtep: str) -> tuple[str, int, int]:
    """(address, underlay MTU, IP version) of this host's VTEP: an address pynet finds
    on one of its interfaces, or an interface and its first global address."""
    addresses = await links.dump_addresses(ipr)
    found = await links.dump_links(ipr)
    by_index = {link.index: link for link in found.values()}
    try:
        wanted = ipaddress.ip_address(vtep)
    except ValueError:
        link = found.get(vtep)
        if link is None:
            raise InvalidRequest(f"--vtep {vtep}: no such interface") from None
        for text in sorted(addresses.get(link.index, ())):
            ip = ipaddress.ip_interface(text).ip
            if ip.is_global or ip.is_private and not ip.is_link_local:
                return str(ip), link.mtu, ip.version
        raise InvalidRequest(f"--vtep {vtep}: the interface has no address to use") from None
    for index, texts in addresses.items():
        if any(ipaddress.ip_interface(t).ip == wanted for t in texts) and index in by_index:
            return str(wanted), by_index[index].mtu, wanted.version
    raise InvalidRequest(f"--vtep {vtep}: no interface of this host has that address")


# Every remote container is a permanent neighbour entry: permanent entries are never
# collected but count against gc_thresh3 (1024 by default), past which new ones fail.
NEIGHBOUR_LIMITS = {"gc_thresh1": 8192, "gc_thresh2": 49152, "gc_thresh3": 65536}


async def raise_neighbour_limits(sysctl: Sysctl) -> None:
    """Raise the neighbour tables' limits (never lower them); say so where pynet cannot."""
    for family in ("ipv4", "ipv6"):
        for name, wanted in NEIGHBOUR_LIMITS.items():
            key = f"net/{family}/neigh/default/{name}"
            current = await asyncio.to_thread(sysctl.read, key)
            if current is None:
                continue  # only the host's first namespace has them (pynet in another: the host's apply)
            if current.isdigit() and int(current) >= wanted:
                continue
            problem = await sysctl.ensure(key, str(wanted))
            if problem:
                log.warning("cluster: %s: with many remote containers the neighbour table may overflow", problem)


async def open_cluster(config: ClusterSettings, db: Database, ipr, sysctl: Sysctl, bridge: BridgeNetworks) -> Cluster:
    etcd = Etcd(EtcdSettings(config.etcd_endpoints, config.etcd_ca or None, config.etcd_cert or None,
                             config.etcd_key or None))
    keys = Keys(config.etcd_prefix)
    vtep, underlay_mtu, version = await resolve_vtep(ipr, config.vtep)
    await raise_neighbour_limits(sysctl)
    membership = Membership(etcd, keys, config.cluster_host, vtep, __version__, config.host_lease)
    ipam = EtcdIpamStore(etcd, keys, membership, db)
    await ipam.load()
    membership.on_registered = ipam.registered
    reaper = Reaper(etcd, keys, membership, config.lost_host_grace, config.reclaim_cooldown)
    peers = Peers(etcd, keys, config.cluster_host, ipr)
    mode = OverlayMode(bridge, db, ipr, etcd, keys, membership, peers, vtep, overlay_mtu(underlay_mtu, version))
    await mode.load()
    log.info("cluster: host %s, VTEP %s (overlay MTU %d), etcd %s", config.cluster_host, vtep, mode.mtu,
             ", ".join(config.etcd_endpoints))
    return Cluster(etcd, membership, ipam, peers, mode, reaper)


async def _replay(cluster: Cluster) -> None:
    while True:
        await asyncio.sleep(REPLAY_EVERY)
        try:
            done = await cluster.ipam.replay_releases() + await cluster.mode.replay_unpublish()
            if done:
                log.info("cluster: %d journaled releases given back to etcd", done)
        except ClusterUnavailable:
            pass
        except Exception as exc:  # noqa: BLE001 - keep going
            log.error("cluster: replaying releases failed: %s", exc, exc_info=True)


async def cluster_tasks(cluster: Cluster) -> AsyncIterator[None]:
    """Started with the server, stopped with it (aiohttp's cleanup context)."""
    tasks = [asyncio.create_task(cluster.membership.keep_alive()), asyncio.create_task(cluster.peers.run()),
             asyncio.create_task(keep_verifying(cluster.mode, VERIFY_EVERY)),
             asyncio.create_task(_replay(cluster)), asyncio.create_task(cluster.reaper.run())]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await cluster.etcd.close()
