"""The cluster's parts put together, and their background work: this
host's liveness, lost hosts reclaimed, releases journaled while etcd was
away given back. What a mode built on the cluster uses is `Cluster`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Optional

from .. import __version__
from ..db import Database
from ..errors import InvalidRequest
from ..kernel import links
from .endpoints import Endpoints
from .etcd import ClusterUnavailable, Etcd, EtcdSettings
from .ipam_store import EtcdIpamStore
from .keys import Keys
from .members import Members
from .membership import Membership
from .reclaim import Reaper
from .settings import ClusterSettings

log = logging.getLogger("pynet.cluster")

REPLAY_EVERY = 5.0


@dataclass
class Cluster:
    """What a mode built on the cluster uses."""
    etcd: Etcd
    keys: Keys
    membership: Membership
    ipam: EtcdIpamStore
    reaper: Reaper
    endpoints: Endpoints  # every host's endpoint records: publish, follow
    members: Members  # the underlay addresses members send from
    underlay_mtu: int  # of the interface with this host's underlay address (membership.vtep)
    underlay_version: int
    underlay_interface: str  # the interface that holds it
    # Work a mode journaled while etcd was away (e.g. endpoint records to delete),
    # replayed with the IPAM's releases; each returns how much it did.
    replays: list[Callable[[], Awaitable[int]]] = field(default_factory=list)
    # What each mode holding cluster networks says of one of them here (`pynet cluster`):
    # None if it holds no network of that name, else {"device", "peers", "problems"?}.
    local_views: list[Callable[[str], Awaitable[Optional[dict]]]] = field(default_factory=list)
    # Told at each registration of this host, once its epoch is known and before peers let it
    # in (e.g. to quarantine the endpoints a reclaim made stale: Endpoints.stale()).
    registered: list[Callable[[], Awaitable[object]]] = field(default_factory=list)


async def resolve_vtep(ipr, vtep: str) -> tuple[str, int, int, str]:
    """(address, underlay MTU, IP version, interface) of this host's VTEP: an address
    pynet finds on one of its interfaces, or an interface and its first global address."""
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
                return str(ip), link.mtu, ip.version, link.name
        raise InvalidRequest(f"--vtep {vtep}: the interface has no address to use") from None
    for index, texts in addresses.items():
        if any(ipaddress.ip_interface(t).ip == wanted for t in texts) and index in by_index:
            return str(wanted), by_index[index].mtu, wanted.version, by_index[index].name
    raise InvalidRequest(f"--vtep {vtep}: no interface of this host has that address")


async def open_cluster(config: ClusterSettings, db: Database, ipr) -> Cluster:
    etcd = Etcd(EtcdSettings(config.etcd_endpoints, config.etcd_ca or None, config.etcd_cert or None,
                             config.etcd_key or None))
    keys = Keys(config.etcd_prefix)
    vtep, underlay_mtu, version, interface = await resolve_vtep(ipr, config.vtep)
    membership = Membership(etcd, keys, config.cluster_host, vtep, __version__, config.host_lease)
    ipam = EtcdIpamStore(etcd, keys, membership, db)
    await ipam.load()
    reaper = Reaper(etcd, keys, membership, config.lost_host_grace, config.reclaim_cooldown)
    endpoints = Endpoints(etcd, keys, membership, db)
    await endpoints.load()
    log.info("cluster: host %s, underlay address %s on %s (MTU %d), etcd %s", config.cluster_host, vtep, interface,
             underlay_mtu, ", ".join(config.etcd_endpoints))
    cluster = Cluster(etcd, keys, membership, ipam, reaper, endpoints, Members(etcd, keys, endpoints),
                      underlay_mtu, version, interface)
    cluster.replays.append(endpoints.replay_unpublish)

    async def epoch_known(epoch: int) -> None:
        for told in cluster.registered:
            try:
                await told()
            except Exception as exc:  # noqa: BLE001 - registered all the same; verification retries
                log.error("cluster: before announcing this host: %s", exc, exc_info=True)
    membership.before_announce = epoch_known
    membership.on_registered = ipam.registered
    # A stale endpoint's addresses stay its own here until Docker removes it.
    ipam.kept = lambda name: {ip for held_name, _, ips in endpoints.stale().values() if held_name == name
                              for ip in ips}
    return cluster


async def _replay(cluster: Cluster) -> None:
    while True:
        await asyncio.sleep(REPLAY_EVERY)
        try:
            done = await cluster.ipam.replay_releases()
            for replay in cluster.replays:
                done += await replay()
            if done:
                log.info("cluster: %d journaled releases given back to etcd", done)
        except ClusterUnavailable:
            pass
        except Exception as exc:  # noqa: BLE001 - keep going
            log.error("cluster: replaying releases failed: %s", exc, exc_info=True)


async def cluster_tasks(cluster: Cluster) -> AsyncIterator[None]:
    """Started with the server, stopped with it, after the work of the modes built on it."""
    tasks = [asyncio.create_task(cluster.membership.keep_alive()), asyncio.create_task(_replay(cluster)),
             asyncio.create_task(cluster.reaper.run()), asyncio.create_task(cluster.endpoints.run()),
             asyncio.create_task(cluster.members.run())]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await cluster.etcd.close()
