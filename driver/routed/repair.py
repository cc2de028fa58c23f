"""The routed mode's part of reconciliation and `pynet doctor`: each remote
container's route against what the cluster says, and the hosts that are not
on this host's segment. The bridge mode checks the bridges, veths and rules
of every network, routed ones included (their added rules too)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import naming
from ..findings import Decision, Finding
from ..kernel import routes as kroutes

if TYPE_CHECKING:
    from .mode import RoutedMode


@dataclass
class RoutedSnapshot:
    wrong: dict[str, list[str]] = field(default_factory=dict)  # network ID -> remote addresses without their route
    stray: list[str] = field(default_factory=list)  # pynet's routes no container explains
    problems: dict[str, list[str]] = field(default_factory=dict)  # network ID -> hosts off this segment
    synced: bool = False


class RoutedReconciliation:
    def __init__(self, mode: "RoutedMode") -> None:
        self.mode = mode

    def counts(self) -> tuple[int, int]:
        return 0, 0  # its networks and endpoints are the bridge mode's, counted there

    def known_networks(self) -> set[str]:
        return set(self.mode.networks)

    async def observe(self, full: bool) -> RoutedSnapshot:
        routes = self.mode.routes
        snap = RoutedSnapshot(synced=routes.synced.is_set())
        if not snap.synced:
            return snap  # without a snapshot of etcd, nothing says what the routes should be
        kernel = await kroutes.host_routes(routes.ipr)
        wanted: set[str] = set()
        for net in list(self.mode.networks.values()):
            want = routes.wanted(net.name)
            wanted |= set(want)
            snap.wrong[net.network_id] = sorted(ip for ip, via in want.items() if kernel.get(ip) != via)
            snap.problems[net.network_id] = routes.problems(net.name)
        snap.stray = sorted(ip for ip in kernel if ip not in wanted)
        return snap

    def decide(self, snapshot: Any, full: bool, min_age: float, spare_leftovers: bool) -> list[Decision]:
        out: list[Decision] = []
        for nid, wrong in snapshot.wrong.items():
            net = self.mode.networks.get(nid)
            if net is None:
                continue
            subject = f"network {naming.short(nid)} (routed cluster network {net.name})"
            if wrong:
                out.append(Decision(Finding(
                    "routes repaired", subject,
                    f"{len(wrong)} remote containers without their route ({', '.join(wrong[:5])})",
                    "containers here cannot reach those on other hosts",
                    "route them through their hosts' underlay addresses again"), self.mode.routes.verify))
            for problem in snapshot.problems.get(nid, []):
                out.append(Decision(Finding(
                    "hosts off this segment", subject, problem,
                    "a route through a router would blackhole, so pynet routes none there",
                    "put the hosts on one L2 segment (or use -o pynet.mode=overlay, which crosses routers)"),
                    None, warn=problem))
        if snapshot.stray:
            out.append(Decision(Finding(
                "routes repaired", "routed networks",
                f"{len(snapshot.stray)} of pynet's routes no container explains ({', '.join(snapshot.stray[:5])})",
                "traffic to those addresses goes to a host that no longer has them",
                "delete them"), self.mode.routes.verify))
        return out

    def expected_rules(self) -> list:
        return []

    def held_subnets(self) -> list:
        return []
