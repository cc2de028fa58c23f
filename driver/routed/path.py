"""The routed mode's part of `pynet path`: per peer host, the /32 route of
each of its containers through the host's underlay address, checked against
the cluster's records in etcd and the segment check."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from ..path.model import Hop, HopKind, Path, Problem, doctor

if TYPE_CHECKING:
    from .mode import RoutedMode

HOPS = (
    HopKind("routes", "routes to peer hosts", "host", "per host: a /32 route (proto 158) of each of its"
            " containers through its underlay address, checked against etcd", before="uplink"),
)


async def add_hops(mode: "RoutedMode", p: Path) -> None:
    net = mode.networks.get(p.network_id)
    if net is None:
        return
    p.claim("routed", net.network_id)
    routes = await mode.routes.view(net.name)
    by_host: dict[str, int] = defaultdict(int)
    for route in routes:
        by_host[route["host"] or "?"] += 1
    hop = Hop("routes", f"{len(by_host)} hosts through {mode.underlay}", holds={
        "underlay": mode.underlay, "hosts": dict(sorted(by_host.items())), "etcd_read": mode.routes.synced.is_set()})
    hop.items = [{"host": r["host"], "ip": r["ip"], "via": r["via"], "in_kernel": r["in_kernel"],
                  **({"off_segment": r["off_segment"]} if "off_segment" in r else {})} for r in routes]
    missing = [r["ip"] for r in routes if not r["in_kernel"] and "off_segment" not in r]
    if missing:
        hop.problems.append(Problem(f"{len(missing)} remote containers have no route ({', '.join(missing[:5])})",
                                    doctor("routes repaired", "writes the routes the cluster wants")))
    for problem in mode.routes.problems(net.name):
        hop.problems.append(Problem(problem, "put that host on this host's segment (no router in between),"
                                    " or use -o pynet.mode=overlay"))
    for r in routes:
        if "off_segment" not in r:
            p.remote[r["ip"]] = (r["host"] or "?", f"route via {r['via']} out of {mode.underlay}")
    p.insert([hop], before="uplink")
