"""Reading what the kernel holds for one container's path, through pyroute2:
an interface by MAC (inside a container's namespace), bridge ports, a
route lookup, a VXLAN device's settings. Reads only; each function takes
its handle."""

from __future__ import annotations

import socket
from typing import Any, Optional

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .links import MAIN_TABLE, QUARANTINE, dump

BRIDGE_PORT_STATES = {0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}
RTN_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}


async def interface_by_mac(ipr: AsyncIPRoute, mac: str) -> Optional[dict[str, Any]]:
    """The interface with this MAC (a container's end of a veth): name, state,
    MTU, addresses and the default routes that leave by it."""
    found = next((m for m in await dump(ipr, "link") if (m.get("address") or "").lower() == mac.lower()), None)
    if found is None:
        return None
    index = found["index"]
    addresses = sorted(f"{m.get('address')}/{m['prefixlen']}" for m in await dump(ipr, "addr")
                       if m["index"] == index and m.get("scope", 0) == 0)
    defaults = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in await dump(ipr, "route", family=family, table=MAIN_TABLE):
            if not route.get("dst_len") and route.get("type", 1) == 1:
                defaults.append({"via": route.get("gateway") or "", "dev_index": route.get("oif"),
                                 "ours": route.get("oif") == index})
    return {"name": found.get("ifname"), "index": index, "up": bool(found["flags"] & 1),
            "mtu": found.get("mtu"), "mac": found.get("address"), "addresses": addresses, "defaults": defaults}


async def bridge_port(ipr: AsyncIPRoute, index: int) -> Optional[dict[str, Any]]:
    """A bridge port's STP state, hairpin and isolation (None: not a bridge port)."""
    for msg in await dump(ipr, "link", family=socket.AF_BRIDGE):
        if msg["index"] == index:
            state = msg.get(("IFLA_PROTINFO", "IFLA_BRPORT_STATE"))
            hairpin = msg.get(("IFLA_PROTINFO", "IFLA_BRPORT_MODE"))
            isolated = msg.get(("IFLA_PROTINFO", "IFLA_BRPORT_ISOLATED"))
            flags = {name: msg.get(("IFLA_PROTINFO", name)) for name, _ in QUARANTINE}
            return {"state": BRIDGE_PORT_STATES.get(state, str(state)), "hairpin": bool(hairpin),
                    "isolated": bool(isolated), "quarantined": all(flags[n] == v for n, v in QUARANTINE)}
    return None


async def route_to(ipr: AsyncIPRoute, address: str, names: dict[int, str], source: str = "",
                   inbound: Optional[int] = None) -> dict[str, Any]:
    """The kernel's route lookup for `address` (`ip route get`): the interface, the
    gateway if any, and the route's type; {"error": ...} when there is no route.
    With `source` and `inbound` (a link index) it is looked up as for a packet from
    that source coming in there (policy routing included), else as from this host."""
    try:
        if source and inbound:
            try:
                msgs = list(await ipr.route("get", dst=address, src=source, iif=inbound))
            except NetlinkError:  # e.g. the inbound link is down: as from this host, then
                msgs = list(await ipr.route("get", dst=address))
        else:
            msgs = list(await ipr.route("get", dst=address))
    except NetlinkError as exc:
        return {"error": exc.args[1] if len(exc.args) > 1 else str(exc)}
    if not msgs:
        return {"error": "no route"}
    msg = msgs[0]
    oif = msg.get("oif")
    return {"dev": names.get(oif, str(oif)) if oif else "", "via": msg.get("gateway") or "",
            "type": RTN_TYPES.get(msg.get("type"), str(msg.get("type"))), "source": msg.get("prefsrc") or ""}


async def link_names(ipr: AsyncIPRoute) -> dict[int, str]:
    return {m["index"]: m.get("ifname") for m in await dump(ipr, "link")}


async def local_addresses(ipr: AsyncIPRoute) -> set[str]:
    """Every address of the namespace (what `-m addrtype --dst-type LOCAL` matches, but broadcasts)."""
    return {m.get("address") for m in await dump(ipr, "addr") if m.get("address")}


async def vxlan_settings(ipr: AsyncIPRoute, name: str) -> Optional[dict[str, Any]]:
    """A VXLAN device's VNI, local address, port, MTU, bridge and state (None: no such device)."""
    try:
        (msg,) = await ipr.link("get", ifname=name)
    except NetlinkError:
        return None
    data = msg.get(("IFLA_LINKINFO", "IFLA_INFO_DATA")) or {}
    get = data.get if hasattr(data, "get") else (lambda _key: None)
    return {"vni": get("IFLA_VXLAN_ID"), "local": get("IFLA_VXLAN_LOCAL") or get("IFLA_VXLAN_LOCAL6"),
            "port": get("IFLA_VXLAN_PORT"), "mtu": msg.get("mtu"), "up": bool(msg["flags"] & 1),
            "master": msg.get("master"), "kind": msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))}
