"""The overlay's part of reconciliation and `pynet doctor`: each overlay
network's VXLAN device, and each remote container's neighbour and
forwarding entries against what the cluster says, and the endpoints a
reclaim of this host left behind (quarantined). The bridge mode checks
the bridges, veths and rules of every network, overlay ones included."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

from .. import naming
from ..findings import Decision, Expected, Finding
from ..kernel import links, lookup, vxlan
from .quarantine import FIX

if TYPE_CHECKING:
    from .guard import VxlanGuard
    from .mode import OverlayMode, OverlayNetwork


@dataclass
class OverlaySnapshot:
    devices: dict[str, bool] = field(default_factory=dict)  # network ID -> its VXLAN device exists
    detached: dict[str, str] = field(default_factory=dict)  # network ID -> its device is down or off its bridge
    wrong: dict[str, list[str]] = field(default_factory=dict)  # network ID -> peers missing or wrong
    unexpected: dict[str, list[str]] = field(default_factory=dict)  # network ID -> entries nobody wants
    stale: list = field(default_factory=list)  # quarantine.Stale: endpoints a reclaim left behind
    open_ports: list[str] = field(default_factory=list)  # their veths whose port is not cut off (rebuilt?)


class OverlayReconciliation:
    def __init__(self, mode: "OverlayMode", guard: Optional["VxlanGuard"] = None) -> None:
        self.mode, self.guard = mode, guard

    def counts(self) -> tuple[int, int]:
        return 0, 0  # its networks and endpoints are the bridge mode's, counted there

    def known_networks(self) -> set[str]:
        return set(self.mode.networks)

    async def observe(self, full: bool) -> OverlaySnapshot:
        snap = OverlaySnapshot(stale=self.mode.quarantine.stale(self.mode.names()))
        ipr = self.mode.ipr
        for stale in snap.stale:
            index = links.link_index(ipr, stale.veth)
            port = await lookup.bridge_port(ipr, index) if index is not None else None
            if port is not None and not port["quarantined"]:
                snap.open_ports.append(stale.veth)
        for net in list(self.mode.networks.values()):
            device = await links.get_link(ipr, net.device)
            snap.devices[net.network_id] = device is not None
            if device is not None and (not device.up or device.master is None):
                snap.detached[net.network_id] = "down" if not device.up else "off its bridge"
            if not snap.devices[net.network_id] or not self.mode.peers.synced.is_set():
                continue  # without a snapshot of etcd, nothing says what the peers should be
            neigh, fdb = await vxlan.peers(ipr, net.device)
            want = self.mode.peers.wanted(net.name)
            snap.wrong[net.network_id] = sorted(ip for ip, peer in want.items()
                                                if neigh.get(ip) != peer.mac or fdb.get(peer.mac) != peer.vtep)
            snap.unexpected[net.network_id] = sorted(ip for ip in neigh if ip not in want)
        return snap

    def decide(self, snapshot: Any, full: bool, min_age: float, spare_leftovers: bool) -> list[Decision]:
        out: list[Decision] = []
        for nid, present in snapshot.devices.items():
            net = self.mode.networks.get(nid)
            if net is None:
                continue
            subject = f"network {naming.short(nid)} (cluster network {net.name})"
            if not present:
                out.append(Decision(Finding(
                    "overlay devices recreated", subject, f"VXLAN device {net.device} is missing",
                    "its containers reach nothing on other hosts", "recreate the device on the network's bridge"),
                    partial(self._device, net)))
                continue
            if nid in snapshot.detached:
                out.append(Decision(Finding(
                    "overlay devices recreated", subject, f"VXLAN device {net.device} is {snapshot.detached[nid]}",
                    "its containers reach nothing on other hosts", "put the device back on the network's bridge,"
                    " up"), partial(self._device, net)))
            wrong, unexpected = snapshot.wrong.get(nid, []), snapshot.unexpected.get(nid, [])
            if wrong or unexpected:
                problem = "; ".join(p for p in (
                    f"{len(wrong)} remote containers without their entries ({', '.join(wrong[:5])})" if wrong else "",
                    f"{len(unexpected)} entries no container explains ({', '.join(unexpected[:5])})"
                    if unexpected else "") if p)
                out.append(Decision(Finding(
                    "overlay peers repaired", subject, problem,
                    "containers here cannot reach those on other hosts, or reach stale addresses",
                    "write the entries the cluster wants and drop the others"), self.mode.peers.verify))
        epoch = self.mode.endpoints.membership.epoch
        for stale in snapshot.stale:
            # Nothing pynet may fix: the container holds an address that may be another's.
            out.append(Decision(Finding(
                "quarantined endpoints", f"endpoint {naming.short(stale.endpoint_id)} (cluster network"
                f" {stale.network})", stale.why(epoch).split(": ", 1)[1],
                "its container reaches nothing across hosts, and nothing across hosts reaches it", FIX), None))
        if snapshot.open_ports:
            out.append(Decision(Finding(
                "quarantines restored", "quarantined endpoints", f"the bridge ports of {len(snapshot.open_ports)}"
                f" quarantined endpoints are open ({', '.join(snapshot.open_ports[:5])}; a veth rebuilt?)",
                "a stale container may answer an address another host's container holds",
                "cut their ports off again"), self.mode.quarantine_stale))
        return out

    async def _device(self, net: "OverlayNetwork") -> None:
        await self.mode.ensure_device(net)

    def expected_rules(self) -> list[Expected]:
        if self.guard is None or self.guard.rules is None:
            return []
        return [Expected(Finding("firewall rules restored", "overlay VXLAN guard",
                                 "IPv{family} rules that accept VXLAN from cluster members only are missing",
                                 "anyone on the underlay can send frames into this host's overlay networks",
                                 "put the guard's rules back"), self.guard.rules)]

    def held_subnets(self) -> list:
        return []
