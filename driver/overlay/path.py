"""The overlay's part of `pynet path`: the network's VXLAN device, and per
peer host the neighbour and forwarding entries of its containers, each
checked against the cluster's records in etcd."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import TYPE_CHECKING

from ..kernel import lookup
from ..path.model import Hop, HopKind, Path, Problem, doctor
from .quarantine import FIX

if TYPE_CHECKING:
    from .mode import OverlayMode

HOPS = (
    HopKind("vxlan", "VXLAN device", "host", "VNI, local VTEP, port, MTU, its bridge", before="uplink"),
    HopKind("peers", "peer hosts", "underlay", "per host: neighbour and FDB entries of its containers,"
            " checked against etcd", before="uplink"),
)


def _same(a: object, b: str) -> bool:
    try:
        return ipaddress.ip_address(str(a)) == ipaddress.ip_address(b)
    except ValueError:
        return False


async def add_hops(mode: "OverlayMode", p: Path) -> None:
    net = mode.networks.get(p.network_id)
    if net is None:
        return
    p.claim("overlay", net.network_id)
    bridge = next((h.name for h in p.hops if h.kind == "bridge"), "")
    device = Hop("vxlan", net.device, holds={"vni": net.vni, "vtep": mode.vtep, "mtu": mode.mtu})
    seen = await lookup.vxlan_settings(mode.ipr, net.device)
    recreate = doctor("overlay devices recreated", "recreates the device on the network's bridge")
    if seen is None:
        device.problems.append(Problem(f"VXLAN device {net.device} is missing", recreate))
    else:
        device.holds.update(state="up" if seen["up"] else "down", port=seen["port"], local=seen["local"],
                            mtu=seen["mtu"])
        if seen["vni"] != net.vni or not _same(seen["local"], mode.vtep):
            device.problems.append(Problem(
                f"{net.device} has VNI {seen['vni']} from {seen['local']}, the network wants VNI {net.vni} from"
                f" {mode.vtep}", f"delete {net.device} (`ip link del {net.device}`), then {recreate}"))
        elif seen["master"] is None or not seen["up"]:
            device.problems.append(Problem(f"{net.device} is {'down' if not seen['up'] else 'off its bridge'}",
                                           doctor("overlay devices recreated", f"puts it back on {bridge}, up")))
    stale = next((s for s in mode.quarantine.stale([net.name]) if s.endpoint_id == p.endpoint_id), None)
    if stale is not None:
        device.problems.append(Problem(stale.why(mode.endpoints.membership.epoch), FIX))
    peers = await mode.peers.view(net.name)
    by_host: dict[str, list[dict]] = defaultdict(list)
    for peer in peers:
        by_host[peer.get("host") or "?"].append(peer)
    hop = Hop("peers", f"{len(by_host)} hosts", holds={
        "hosts": {host: len(entries) for host, entries in sorted(by_host.items())},
        "etcd_read": mode.peers.synced.is_set()})
    hop.items = [{"host": peer.get("host") or "?", "ip": peer["ip"], "mac": peer["mac"], "vtep": peer.get("vtep"),
                  "in_kernel": peer["in_kernel"], "unexpected": bool(peer.get("unexpected"))} for peer in peers]
    # Judged only where doctor judges too: with the cluster's records read and the device there.
    judged = mode.peers.synced.is_set() and seen is not None
    missing = [p_["ip"] for p_ in peers if not p_["in_kernel"]] if judged else []
    unexpected = [p_["ip"] for p_ in peers if p_.get("unexpected")] if judged else []
    repair = doctor("overlay peers repaired", "writes the entries the cluster wants and drops the others")
    if missing:
        hop.problems.append(Problem(f"{len(missing)} remote containers lack their neighbour or FDB entry"
                                    f" ({', '.join(missing[:5])})", repair))
    if unexpected:
        hop.problems.append(Problem(f"{len(unexpected)} entries no container in etcd explains"
                                    f" ({', '.join(unexpected[:5])})", repair))
    for peer in peers:
        if not peer.get("unexpected"):
            p.remote[peer["ip"]] = (peer.get("host") or "?",
                                    f"VXLAN {net.device} (VNI {net.vni}) to VTEP {peer.get('vtep')}")
    p.insert([device, hop], before="uplink")
