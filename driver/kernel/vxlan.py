"""VXLAN devices and the neighbour and forwarding entries that point a
remote container's MAC at its host, through pyroute2.

No flood-and-learn: the device learns nothing and floods nothing; ARP and
neighbour discovery for remote containers are answered on this host from
the permanent entries pynet writes (`proxy`). Entries are always written
with replace semantics, so a moved or reused address never keeps an old one.
"""

from __future__ import annotations

import errno
import socket
from typing import Optional

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import Conflict, KernelError
from .links import dump, get_link, link_index, set_port_isolated

VXLAN_PORT = 4789
NUD_PERMANENT = 0x80
NTF_SELF = 0x02


async def ensure_vxlan(ipr: AsyncIPRoute, name: str, vni: int, local: str, bridge_index: int,
                       alias: str, mtu: Optional[int] = None) -> bool:
    """The network's VXLAN device, up on its bridge. Returns True if created now."""
    link = await get_link(ipr, name)
    if link is not None and (link.kind != "vxlan" or link.alias not in (alias, None)):
        raise Conflict(f"interface {name} already exists and is not this network's VXLAN device"
                       f" (kind {link.kind or 'unknown'}, alias {link.alias!r})")
    created = False
    if link is None:
        extra = {"mtu": mtu} if mtu else {}
        try:
            await ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local,
                           vxlan_port=VXLAN_PORT, vxlan_learning=0, vxlan_proxy=1, **extra)
        except NetlinkError as exc:
            raise KernelError(f"VXLAN {name} (VNI {vni}, local {local}): cannot create: {exc}") from None
        created = True
    try:
        await ipr.link("set", ifname=name, master=bridge_index, state="up", ifalias=alias)
        # An isolated port: a quarantined container's port (isolated too) exchanges nothing
        # with it, while every other port of the bridge does.
        await set_port_isolated(ipr, name, True)
    except (NetlinkError, KernelError) as exc:
        if created:
            await ipr.link("del", ifname=name)
        raise KernelError(f"VXLAN {name}: cannot attach to its bridge: {exc}") from None
    return created


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


async def set_peer(ipr: AsyncIPRoute, device: str, ip: str, mac: str, vtep: str) -> None:
    """A remote container: its address answered locally with its MAC, and its
    MAC sent to its host's VTEP."""
    index = link_index(ipr, device)
    if index is None:
        raise KernelError(f"VXLAN {device} is gone: cannot add the peer {ip}")
    try:
        await ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT,
                        family=_family(ip))
        await ipr.fdb("replace", ifindex=index, lladdr=mac, dst=vtep, state=NUD_PERMANENT, flags=NTF_SELF)
    except NetlinkError as exc:
        raise KernelError(f"VXLAN {device}: peer {ip} ({mac}) at {vtep}: {exc}") from None


async def drop_peer(ipr: AsyncIPRoute, device: str, ip: str, mac: str) -> None:
    """Forget a remote container; entries already gone are fine."""
    index = link_index(ipr, device)
    if index is None:
        return
    for what, kwargs in (("neigh", {"dst": ip, "family": _family(ip)}), ("fdb", {"flags": NTF_SELF})):
        try:
            await getattr(ipr, what)("del", ifindex=index, lladdr=mac, **kwargs)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                raise KernelError(f"VXLAN {device}: dropping peer {ip}: {exc}") from None


async def peers(ipr: AsyncIPRoute, device: str) -> tuple[dict[str, str], dict[str, str]]:
    """What the kernel has on a VXLAN device: ({ip: mac} permanent neighbours, {mac: vtep}).

    Its dumps take their turn on the shared handle (`links.dump`): a second
    dump while one runs is answered EBUSY."""
    index = link_index(ipr, device)
    if index is None:
        return {}, {}
    neigh: dict[str, str] = {}
    fdb: dict[str, str] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in await dump(ipr, "neigh", ifindex=index, family=family):
            if msg["state"] & NUD_PERMANENT and msg.get("lladdr"):
                neigh[msg.get("dst")] = msg.get("lladdr")
    for msg in await dump(ipr, "fdb", ifindex=index):
        if msg["ifindex"] == index and msg.get("dst") and msg.get("lladdr") != "00:00:00:00:00:00":
            fdb[msg.get("lladdr")] = msg.get("dst")
    return neigh, fdb
