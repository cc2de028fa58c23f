"""Bridges, veth pairs and addresses, through pyroute2's AsyncIPRoute.

Every function takes the netlink handle as its first argument and makes one
kernel concern idempotent: "ensure" functions accept what is already there
when it is pynet's own (checked by ifalias) and refuse anybody else's.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import weakref
from typing import Optional

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import Conflict, KernelError
from .link_reader import Link, reader

IFA_F_NODAD = 0x02  # IPv6 gateway usable at once, without duplicate address detection
MAIN_TABLE = 254
# A bridge port's settings inside a link change (`ip link set X type bridge_slave hairpin on`).
HAIRPIN = {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"),
                     ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", 1)]})]}



def _port_setting(name: str, value: int) -> dict:
    """A bridge port's setting inside a link change (`ip link set X type bridge_slave ...`)."""
    return {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"), ("IFLA_INFO_SLAVE_DATA", {"attrs": [(name, value)]})]}


async def set_port_isolated(ipr: AsyncIPRoute, name: str, isolated: bool) -> bool:
    """`bridge link set dev NAME isolated on|off`: an isolated port exchanges no frames
    with another isolated port of its bridge (it does with the others). False if the
    link is gone."""
    try:
        await ipr.link("set", ifname=name, IFLA_LINKINFO=_port_setting("IFLA_BRPORT_ISOLATED", int(isolated)))
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise KernelError(f"bridge port {name}: cannot set isolated {'on' if isolated else 'off'}: {exc}") from None
    return True


# A quarantined container's bridge port: no frame between it and any isolated port (every
# VXLAN port), none flooded to it (ARP, neighbour discovery, unknown unicast), its MAC never
# learned there: nothing on its bridge finds it, and it reaches nothing across hosts.
QUARANTINE = (("IFLA_BRPORT_ISOLATED", 1), ("IFLA_BRPORT_LEARNING", 0), ("IFLA_BRPORT_UNICAST_FLOOD", 0),
              ("IFLA_BRPORT_MCAST_FLOOD", 0), ("IFLA_BRPORT_BCAST_FLOOD", 0))
NUD_PERMANENT = 0x80


async def quarantine_port(ipr: AsyncIPRoute, name: str) -> bool:
    """Cut a bridge port off as QUARANTINE says, and forget the MACs learned on it.
    False if the link is gone."""
    index = link_index(ipr, name)
    if index is None:
        return False
    data = {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"), ("IFLA_INFO_SLAVE_DATA", {"attrs": list(QUARANTINE)})]}
    try:
        await ipr.link("set", index=index, IFLA_LINKINFO=data)
        for entry in await dump(ipr, "fdb"):
            if entry["ifindex"] == index and not entry["state"] & NUD_PERMANENT and entry.get("master"):
                await ipr.fdb("del", ifindex=index, lladdr=entry.get("lladdr"), master=entry.get("master"))
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise KernelError(f"bridge port {name}: cannot quarantine it: {exc}") from None
    return True


_dump_locks: "weakref.WeakKeyDictionary[AsyncIPRoute, asyncio.Lock]" = weakref.WeakKeyDictionary()


async def dump(ipr: AsyncIPRoute, what: str, **filters) -> list:
    """Every message of a `link`, `addr`, `route`, `neigh` or `fdb` dump.

    The kernel runs one dump at a time on a netlink socket and answers a
    second with EBUSY; pynet's handlers, reconciliation and firewall check
    share one handle, so its dumps take turns, each read to its end."""
    lock = _dump_locks.setdefault(ipr, asyncio.Lock())
    async with lock:
        return [msg async for msg in await getattr(ipr, what)("dump", **filters)]


async def get_link(ipr: AsyncIPRoute, name: str) -> Optional[Link]:
    """The link `name` of the handle's namespace, or None."""
    return await reader(ipr).get(name)


def link_index(ipr: AsyncIPRoute, name: str) -> Optional[int]:
    """The index of link `name`, or None, without waiting for the RTNL lock."""
    return reader(ipr).index(name)


async def ensure_bridge(ipr: AsyncIPRoute, name: str, alias: str, mtu: Optional[int] = None,
                        adopt_unmarked: bool = False) -> tuple[int, bool]:
    """Create (or adopt pynet's own) bridge `name`, up. Returns (index, created).

    The alias can only be set after creation, so a crash in between leaves an
    unmarked bridge: `adopt_unmarked` accepts it when the name is pynet's own.
    """
    link = await get_link(ipr, name)
    created = False
    if link is None:
        try:
            await ipr.link("add", ifname=name, kind="bridge")
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:  # lost a race with a concurrent creator
                raise KernelError(f"bridge {name}: cannot create: {exc}") from None
        link = await get_link(ipr, name)
        if link is None:
            raise KernelError(f"bridge {name}: vanished right after it was created")
        created = link.alias is None
    elif link.kind != "bridge" or link.alias not in ((alias, None) if adopt_unmarked else (alias,)):
        raise Conflict(f"interface {name} already exists and is not this network's bridge"
                       f" (kind {link.kind or 'unknown'}, alias {link.alias!r})")
    settings: dict[str, object] = {"state": "up", "ifalias": alias}
    if mtu:
        settings["mtu"] = mtu
    try:
        await ipr.link("set", index=link.index, **settings)
    except NetlinkError as exc:
        if created:
            await delete_link(ipr, name)
        raise KernelError(f"bridge {name}: cannot bring up: {exc}") from None
    return link.index, created


async def ensure_addresses(ipr: AsyncIPRoute, index: int, name: str,
                           interfaces: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]) -> None:
    """Add the addresses (e.g. gateways) that `index` does not have yet."""
    present = {(msg.get("address"), msg.get("prefixlen")) for msg in await dump(ipr, "addr", index=index)}
    for iface in interfaces:
        if (str(iface.ip), iface.network.prefixlen) in present:
            continue
        extra = {"flags": IFA_F_NODAD} if iface.version == 6 else {}
        try:
            await ipr.addr("add", index=index, address=str(iface.ip),
                           prefixlen=iface.network.prefixlen, **extra)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise KernelError(f"{name}: cannot add address {iface}: {exc}") from None


async def delete_link(ipr: AsyncIPRoute, name: str) -> bool:
    """Delete a link; False if it was not there."""
    try:
        await ipr.link("del", ifname=name)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise KernelError(f"link {name}: cannot delete: {exc}") from None
    return True


async def delete_owned_link(ipr: AsyncIPRoute, name: str, alias: Optional[str]) -> bool:
    """Delete `name` only if it (still) carries `alias` (never anybody else's link)."""
    link = await get_link(ipr, name)
    if link is None or link.alias != alias:
        return False
    return await delete_link(ipr, name)


async def ensure_veth(ipr: AsyncIPRoute, host: str, peer: str, bridge_index: int, alias: str,
                      mac: str, mtu: Optional[int] = None) -> bool:
    """A veth pair with `host` up on the bridge and `peer` left for Docker to move.

    Returns True if it was created now. A pair that exists already with this
    endpoint's alias (or none: a crash between creating and marking it; the
    name is derived from the endpoint ID) is put right and kept.
    """
    extra = {"mtu": mtu} if mtu else {}
    created = False
    try:
        # The pair, on the bridge and up, in one request: each change waits for the
        # RTNL lock, which Docker holds for long stretches while it starts containers.
        await ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, "address": mac, **extra},
                       master=bridge_index, state="up", **extra)
        created = True
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise KernelError(f"veth {host}/{peer}: cannot create: {exc}") from None
        link = await get_link(ipr, host)
        if link is None:  # the peer's name is taken
            raise KernelError(f"veth {host}/{peer}: cannot create: {exc}") from None
        if link.alias not in (alias, None) or link.kind != "veth":
            raise Conflict(f"interface {host} already exists and is not this endpoint's veth"
                           f" (kind {link.kind or 'unknown'}, alias {link.alias!r})") from None
    try:
        if not created:  # a pair from before: on the bridge and up first (port settings need the port)
            await ipr.link("set", ifname=host, master=bridge_index, state="up")
        # Marked, and hairpin on (a container may reach its own published port
        # through the host): one request.
        await ipr.link("set", ifname=host, ifalias=alias, IFLA_LINKINFO=HAIRPIN)
    except NetlinkError as exc:
        if created:
            await delete_link(ipr, host)
        raise KernelError(f"veth {host}: cannot attach to bridge: {exc}") from None
    return created


async def host_routes(ipr: AsyncIPRoute) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Destinations of the main routing table, without default routes."""
    routes = []
    for family in (2, 10):  # AF_INET, AF_INET6
        for msg in await dump(ipr, "route", family=family, table=MAIN_TABLE):
            dst, length = msg.get("dst"), msg.get("dst_len")
            if not dst or not length:
                continue
            try:
                routes.append(ipaddress.ip_network(f"{dst}/{length}", strict=False))
            except ValueError:
                continue
    return routes


async def dump_links(ipr: AsyncIPRoute) -> dict[str, Link]:
    """Every link of the namespace by name."""
    return {link.name: link for link in await reader(ipr).dump()}


async def dump_addresses(ipr: AsyncIPRoute) -> dict[int, set[str]]:
    """Every address of the namespace, as "ip/len", by link index."""
    found: dict[int, set[str]] = {}
    for msg in await dump(ipr, "addr"):
        found.setdefault(msg["index"], set()).add(f"{msg.get('address')}/{msg['prefixlen']}")
    return found


async def move_to_netns(ipr: AsyncIPRoute, name: str, netns_path: str) -> None:
    """Move a link into the network namespace mounted at `netns_path`."""
    try:
        await ipr.link("set", ifname=name, net_ns_fd=netns_path)
    except (NetlinkError, OSError) as exc:
        raise KernelError(f"link {name}: cannot move into {netns_path}: {exc}") from None


async def configure_container_interface(inner: AsyncIPRoute, name: str, prefix: str, mac: str,
                                        interfaces: list, gateways: list) -> str:
    """Inside a container's namespace: give `name` the first free `<prefix>N`
    name, its MAC and addresses, bring it up, and add a default route through
    each gateway whose family has none yet. Returns the new name."""
    taken = {msg.get("ifname") for msg in await dump(inner, "link")}
    new = next(f"{prefix}{i}" for i in range(1000) if f"{prefix}{i}" not in taken)
    try:
        (link,) = await inner.link("get", ifname=name)
        index = link["index"]
        await inner.link("set", index=index, ifname=new, address=mac)
        for iface in interfaces:
            extra = {"flags": IFA_F_NODAD} if iface.version == 6 else {}
            await inner.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                             **extra)
        await inner.link("set", index=index, state="up")
        for gateway in gateways:
            family = 2 if gateway.version == 4 else 10
            defaults = [r for r in await dump(inner, "route", family=family, table=MAIN_TABLE)
                        if not r.get("dst_len")]
            if not defaults:
                await inner.route("add", family=family, dst="0.0.0.0/0" if family == 2 else "::/0",
                                  gateway=str(gateway), oif=index)
    except NetlinkError as exc:
        raise KernelError(f"container interface {new}: {exc}") from None
    return new
