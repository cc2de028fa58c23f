"""Host routes to remote containers, through pyroute2: one /32 per remote
address, through the underlay address of the host that runs it, in the main
table and marked with pynet's own routing protocol number, so that pynet's
routes are told apart from everybody else's (`ip route show proto 158`).
"""

from __future__ import annotations

import errno
import socket
from typing import Optional

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import KernelError
from .links import MAIN_TABLE, dump, link_index

PROTO = 158  # unassigned in iproute2's rt_protos; pynet's routes carry it
RTN_LOCAL = 2


async def set_host_route(ipr: AsyncIPRoute, ip: str, via: str) -> None:
    """`ip` reached through `via` (replace: a moved address never keeps its old host)."""
    try:
        await ipr.route("replace", dst=f"{ip}/32", gateway=via, table=MAIN_TABLE, proto=PROTO)
    except NetlinkError as exc:
        raise KernelError(f"route to {ip} via {via}: {exc}") from None


async def drop_host_route(ipr: AsyncIPRoute, ip: str) -> None:
    """Forget the route to `ip`, if pynet's; one already gone is fine."""
    try:
        await ipr.route("del", dst=f"{ip}/32", table=MAIN_TABLE, proto=PROTO)
    except NetlinkError as exc:
        if exc.code not in (errno.ESRCH, errno.ENOENT):
            raise KernelError(f"route to {ip}: cannot delete: {exc}") from None


async def host_routes(ipr: AsyncIPRoute) -> dict[str, str]:
    """pynet's host routes in the kernel: {address: next hop}."""
    found: dict[str, str] = {}
    for msg in await dump(ipr, "route", family=socket.AF_INET, table=MAIN_TABLE):
        if msg.get("proto") == PROTO and msg.get("dst_len") == 32 and msg.get("dst"):
            found[msg.get("dst")] = msg.get("gateway") or ""
    return found


async def next_hop(ipr: AsyncIPRoute, address: str, interface: str) -> tuple[bool, str]:
    """Whether `address` is on the segment of `interface` (reached out of it without a
    router), and if not, why: the router in between, another interface, no route."""
    try:
        msgs = list(await ipr.route("get", dst=address))
    except NetlinkError as exc:
        return False, f"no route to it ({exc.args[1] if len(exc.args) > 1 else exc})"
    if not msgs:
        return False, "no route to it"
    msg = msgs[0]
    if msg.get("type") == RTN_LOCAL:
        return False, "it is an address of this host"
    gateway: Optional[str] = msg.get("gateway")
    if gateway:
        return False, f"it is reached through the router {gateway}, not on this host's segment"
    wanted = link_index(ipr, interface)
    if wanted is None or msg.get("oif") != wanted:
        return False, f"it is reached out of another interface than the underlay's ({interface})"
    return True, ""
