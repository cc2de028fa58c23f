"""The bridge mode's part of `pynet path`: the hops of every endpoint (its
networks' and those of the modes built on them), read from the live kernel
and checked against the endpoint's record, and a packet's way from the
container to a destination, walked through the routes and pynet's rules.

A hop that disagrees with the state says which `pynet doctor --repair`
action puts it right (the same actions as bridge/repair.py's findings), or
what to do where pynet cannot.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Optional

from pyroute2.netlink.exceptions import NetlinkError

from .. import naming
from ..chains import (DNAT, FORWARD, INPUT, POSTROUTING, Rule, base_chain_rules, base_jumps, docker_bridge_rules,
                      jump_position)
from ..kernel import links, lookup, netns
from ..kernel.iptables import Snapshot
from ..kernel.sysctl import sysctl_name
from ..path.model import Hop, HopKind, Path, Problem, Step, doctor
from ..path.walk import Packet, Verdict, walk, with_destination
from . import store
from .setup import wanted_sysctls

if TYPE_CHECKING:
    from .mode import BridgeMode

HOPS = (
    HopKind("container", "container interface", "container", "address, MAC, MTU, state, default route"),
    HopKind("veth", "host veth", "host", "state, bridge, port state, hairpin, MTU"),
    HopKind("bridge", "bridge", "host", "gateway addresses, MTU, ICC, NAT, internal"),
    HopKind("firewall", "pynet's rules", "host", "filter and nat rules of the network, with packet counters"),
    HopKind("ports", "published ports", "host", "host address and port, DNAT rule and its counter, held socket"),
    HopKind("uplink", "way out", "host", "the host's default route, masquerade, forwarding"),
)

_COMMENT = re.compile(r' -m comment --comment "?[^" ]*"?')


def shown(rule: Rule | str) -> str:
    """A rule as an operator reads it: `-A CHAIN spec`, without pynet's tag."""
    text = rule if isinstance(rule, str) else f"-A {rule.chain} {rule.text}"
    return _COMMENT.sub("", text)


async def add_hops(d: "BridgeMode", p: Path) -> None:
    ep = d.endpoints.get(p.endpoint_id)
    net = d.networks.get(ep.network_id) if ep else None
    if ep is None or net is None:
        return
    p.claim("bridge", net.network_id)
    families = [f for f in d.firewall.families if f == 4 or net.ipv6]
    counted = {}
    for family in d.firewall.families:
        counted[family] = await d.firewall.iptables.counted(family)
    names = await lookup.link_names(d.ipr)
    p.hops += [await container_hop(d, ep, net), await veth_hop(d, ep, net), await bridge_hop(d, net),
               firewall_hop(d, ep, net, counted, families)]
    if ep.bindings:
        p.hops.append(ports_hop(d, ep, counted))
    p.hops.append(await uplink_hop(d, net, names))
    if p.to is not None:
        p.later(lambda path: destination_steps(d, ep, net, path, counted, names))


# --- the hops ----------------------------------------------------------------------------------


async def container_hop(d: "BridgeMode", ep: store.Endpoint, net: store.Network) -> Hop:
    hop = Hop("container", "-", holds={"sandbox": ep.sandbox, "mac": ep.mac,
                                       "addresses": [str(a) for a in (ep.address, ep.address6) if a]})
    if not ep.sandbox:
        hop.holds["state"] = "no container has joined (Docker created the endpoint only)"
        return hop
    where = d.local_sandbox(ep.sandbox)
    if not await asyncio.to_thread(netns.is_alive, where):
        hop.problems.append(Problem(
            f"its container's namespace {where} is not mounted: the container stopped while pynet could not"
            " hear it, or pynet does not see Docker's netns directory",
            doctor("stale endpoints reclaimed", "forgets the endpoint and frees its addresses and ports, once"
                   " it sees other containers' namespaces (else mount Docker's netns directory where pynet"
                   " looks: PYNET_NETNS_MOUNT)")))
        return hop
    try:
        async with netns.route_handle(where) as inner:
            seen = await lookup.interface_by_mac(inner, ep.mac)
            names = await lookup.link_names(inner) if seen else {}
    except (NetlinkError, OSError) as exc:
        hop.problems.append(Problem(f"pynet cannot read the container's namespace {where}: {exc}",
                                    "run pynet where it sees Docker's netns directory (PYNET_NETNS_MOUNT)"))
        return hop
    if seen is None:
        if await links.get_link(d.ipr, ep.host_if) is None:
            hop.problems.append(Problem(f"no interface with MAC {ep.mac} in the container (its veth is gone)",
                                        doctor("endpoints rebuilt", "gives the container a new veth with its"
                                               " MAC, addresses and routes")))
        else:
            hop.problems.append(Problem(f"no interface with MAC {ep.mac} in the container, though its veth"
                                        f" {ep.host_if} is there (its MAC was changed inside?)",
                                        "not pynet's to change inside a container: `docker restart` it"))
        return hop
    hop.name = seen["name"]
    defaults = [f"via {r['via']} dev {names.get(r['dev_index'], r['dev_index'])}" for r in seen["defaults"]]
    hop.holds.update(state="up" if seen["up"] else "down", mtu=seen["mtu"], addresses=seen["addresses"],
                     default_routes=defaults)
    if not seen["up"]:
        hop.problems.append(Problem(f"{seen['name']} is down in the container",
                                    "not pynet's to change inside a container: `docker restart` it"))
    wanted = [str(a) for a in (ep.address, ep.address6) if a]
    lost = [a for a in wanted if a not in seen["addresses"]]
    if lost:
        hop.problems.append(Problem(f"{seen['name']} lacks its address {', '.join(lost)}",
                                    "not pynet's to change inside a container: `docker restart` it"))
    if not seen["defaults"] and not net.options.internal and (net.gateway4 or net.gateway6):
        hop.problems.append(Problem("the container has no default route (Docker sets one through a gateway"
                                    " of one of its networks)", "`docker restart` the container"))
    if net.options.mtu and seen["mtu"] != net.options.mtu:
        hop.problems.append(Problem(f"MTU {seen['mtu']}, the network's is {net.options.mtu}",
                                    "`docker restart` the container"))
    return hop


async def veth_hop(d: "BridgeMode", ep: store.Endpoint, net: store.Network) -> Hop:
    hop = Hop("veth", ep.host_if, holds={"peer": ep.peer_if})
    link = await links.get_link(d.ipr, ep.host_if)
    if link is None:
        alive = bool(ep.sandbox) and await asyncio.to_thread(netns.is_alive, d.local_sandbox(ep.sandbox))
        hop.problems.append(Problem(f"veth {ep.host_if} is gone", doctor(
            "endpoints rebuilt", "creates a new pair and moves it into the container") if alive else
            doctor("stale endpoints reclaimed", "forgets the endpoint")))
        return hop
    bridge = links.link_index(d.ipr, net.bridge)
    port = await lookup.bridge_port(d.ipr, link.index)
    hop.holds.update(state="up" if link.up else "down", mtu=link.mtu, bridge=net.bridge if
                     link.master == bridge and bridge is not None else None,
                     port_state=port["state"] if port else None, hairpin=port["hairpin"] if port else None,
                     isolated=port["isolated"] if port else None)
    if bridge is None:
        hop.problems.append(Problem(f"its bridge {net.bridge} is missing", doctor(
            "bridges recreated", "recreates the bridge; then `pynet doctor --repair` again attaches the veth"
            " (endpoints repaired)")))
    elif link.master != bridge or not link.up:
        hop.problems.append(Problem(f"veth {ep.host_if} is not up on bridge {net.bridge}",
                                    doctor("endpoints repaired", "attaches it to the bridge and brings it up")))
    elif port and port["state"] == "disabled":
        hop.problems.append(Problem("its bridge port is disabled: the container's end is down (no carrier)",
                                    "not pynet's to change inside a container: `docker restart` it"))
    elif port and port["state"] != "forwarding":
        hop.problems.append(Problem(f"its bridge port is {port['state']}, not forwarding",
                                    "pynet's bridges run no STP: a port stays so only if someone turned it on"))
    return hop


async def bridge_hop(d: "BridgeMode", net: store.Network) -> Hop:
    o = net.options
    hop = Hop("bridge", net.bridge, holds={
        "gateways": [str(g) for g in net.bridge_gateways], "icc": o.icc, "internal": o.internal,
        "nat": o.masquerade and not o.internal, "subnets": [str(s.pool) for s in net.subnets]})
    link = await links.get_link(d.ipr, net.bridge)
    if link is None:
        hop.problems.append(Problem(f"bridge {net.bridge} is missing", doctor(
            "bridges recreated", "recreates the bridge, its gateway addresses and settings")))
        return hop
    have = (await links.dump_addresses(d.ipr)).get(link.index, set())
    hop.holds.update(state="up" if link.up else "down", mtu=link.mtu)
    lost = [str(g) for g in net.bridge_gateways if str(g) not in have]
    if lost or not link.up:
        hop.problems.append(Problem(f"bridge {net.bridge} is down" if not link.up else
                                    f"bridge {net.bridge} lost its gateway address {', '.join(lost)}",
                                    doctor("bridges repaired", "brings the bridge up with its gateway addresses")))
    return hop


Counted = dict[int, tuple[Snapshot, dict[tuple[str, str, str], int]]]


def _rule_items(rules: list[Rule], counted: Counted, shown_families: list[int]) -> tuple[list[dict], dict[int, int]]:
    items: list[dict] = []
    missing: dict[int, int] = {}
    for rule in rules:
        if rule.family not in counted:
            continue
        snap, counts = counted[rule.family]
        present = snap.count(rule.table, rule.chain, rule.text) >= 1
        if not present:
            missing[rule.family] = missing.get(rule.family, 0) + 1
        if rule.family in shown_families:
            items.append({"family": rule.family, "table": rule.table, "rule": shown(rule), "present": present,
                          "packets": counts.get((rule.table, rule.chain, rule.text), 0) if present else None})
    return items, missing


def firewall_hop(d: "BridgeMode", ep: store.Endpoint, net: store.Network, counted: Counted,
                 families: list[int]) -> Hop:
    jumps = [r for r in base_jumps() if r.chain in ("FORWARD", "POSTROUTING", "INPUT")
             or (ep.bindings and r.table == "nat")]
    jumps += [*base_chain_rules(), *docker_bridge_rules(d.docker_bridges)]  # isolation, for every network
    rules = d.network_rules(net)
    hop = Hop("firewall", f"network {naming.short(net.network_id)}'s rules")
    jump_items, jumps_missing = _rule_items(jumps, counted, families)
    for family in families:
        snap = counted[family][0]
        if jump_position(snap.chain_rules("filter", "FORWARD")) is not None:
            hop.problems.append(Problem(
                f"pynet's IPv{family} FORWARD jump is not first (after DOCKER-USER): another rule decides before"
                " pynet's", doctor("firewall rules restored", "moves it back")))
    items, missing = _rule_items(rules, counted, families)
    hop.items = jump_items + items
    hop.holds = {"rules": len(items), "families": families}
    for family, n in sorted(jumps_missing.items()):
        hop.problems.append(Problem(f"{n} of pynet's IPv{family} jumps and isolation rules are missing: its rules"
                                    " do not all apply", doctor("firewall rules restored", "puts them back")))
    for family, n in sorted(missing.items()):
        hop.problems.append(Problem(f"{n} of the network's IPv{family} rules are missing",
                                    doctor("firewall rules restored", "puts the network's rules back, in order")))
    return hop


def ports_hop(d: "BridgeMode", ep: store.Endpoint, counted: Counted) -> Hop:
    hop = Hop("ports", f"{len(ep.bindings)} published")
    held = d.publisher.held(ep.endpoint_id)
    for b in ep.bindings:
        (rule,) = d.binding_rules(replace(ep, bindings=[b]))
        items, missing = _rule_items([rule], counted, [rule.family])
        socket_held = (b.proto, str(b.host_ip), b.host_port) in held
        hop.items.append({"published": str(b), "rule": shown(rule), "present": not missing,
                          "packets": items[0]["packets"] if items else None, "socket_held": socket_held})
        if missing:
            hop.problems.append(Problem(f"the DNAT rule of {b} is missing", doctor(
                "firewall rules restored", "puts the port rules back")))
        if not socket_held:
            hop.problems.append(Problem(f"pynet does not hold host port {b.host_port}/{b.proto}: another program"
                                        " may have it", "free the port, then `docker restart` the container"))
    return hop


async def uplink_hop(d: "BridgeMode", net: store.Network, names: dict[int, str]) -> Hop:
    o = net.options
    if o.internal:
        return Hop("uplink", "none", holds={"internal": True, "why": "--internal: no way out of the network"})
    hop = Hop("uplink", "host routing", holds={"masquerade": o.masquerade})
    for family in (4, 6):
        if family == 6 and not net.ipv6:
            continue
        defaults = [r for r in await links.dump(d.ipr, "route", family=2 if family == 4 else 10,
                                                table=links.MAIN_TABLE)
                    if not r.get("dst_len") and r.get("type", 1) == 1]
        hop.holds[f"default{family}"] = [f"via {r.get('gateway') or '-'} dev {names.get(r.get('oif'), '?')}"
                                         for r in defaults]
    if links.link_index(d.ipr, net.bridge) is None:
        return hop  # its settings go with the bridge: the bridge hop says so
    wrong = [k for k in wanted_sysctls(net) if await asyncio.to_thread(d.sysctl.read, k) != "1"]
    if wrong:
        cannot = await asyncio.to_thread(d.sysctl.writable)
        settings = ", ".join(sysctl_name(k) for k in wrong)
        hop.problems.append(Problem(
            f"{settings} not 1: containers cannot reach outside, or ports published on 127.0.0.1 do not answer",
            f"pynet cannot set them ({cannot}): on the host, run "
            + " ".join(f"`sysctl -w {sysctl_name(k)}=1`" for k in wrong) if cannot
            else doctor("settings restored", "sets them to 1")))
    return hop


# --- a packet's way to a destination -----------------------------------------------------------


def _step_of(at: str, v: Verdict, counted: Counted, family: int, table: str, what: str, verdict: str) -> Step:
    counts = counted[family][1] if family in counted else {}
    packets = counts.get((table, v.chain, v.spec)) if v.spec else None
    return Step(at, what, shown(v.rule) if v.rule else "", packets, verdict)


async def destination_steps(d: "BridgeMode", ep: store.Endpoint, net: store.Network, p: Path,
                            counted: Counted, names: dict[int, str]) -> None:
    assert p.to is not None
    dst = p.to.address
    family = dst.version
    own = ep.address if family == 4 else ep.address6
    if own is None:
        p.steps.append(Step("container", f"the container has no IPv{family} address on this network",
                            verdict="drop"))
        return
    steps = p.steps
    # 1. In the container: which interface, which gateway.
    if dst == own.ip:
        steps.append(Step("container", "its own address: the packet never leaves the container", verdict="deliver"))
        return
    if dst.is_loopback:
        steps.append(Step("container", "the container's own loopback", verdict="deliver"))
        return
    inside = await _route_in_container(d, ep, str(dst))
    if inside is not None:
        if "error" in inside:
            unreadable = inside["error"].startswith("the container's")
            steps.append(Step("container", inside["error"] if unreadable else
                              f"no route to {dst} in the container ({inside['error']})",
                              "" if unreadable else f"ip route get {dst}",
                              verdict="unknown" if unreadable else "drop"))
            return
        rule = f"{dst} dev {inside['dev']}" + (f" via {inside['via']}" if inside["via"] else "")
        if inside["mac"] != ep.mac.lower():
            steps.append(Step("container", f"leaves by {inside['dev']}, another network's interface: not this"
                              " path (pick that network with --network)", rule, verdict="leave"))
            return
        steps.append(Step("container", f"leaves by {inside['dev']}" + (
            f" for its gateway {inside['via']}" if inside["via"] else " straight onto the bridge (on-link)"),
            rule))
    else:
        steps.append(Step("container", "no container joined: its way is read from the network alone",
                          verdict="unknown"))
    steps.append(Step("veth", f"into the host through {ep.host_if}, onto bridge {net.bridge}"))

    # 2. On the host: pynet's nat and filter chains, and the host's routes.
    local = frozenset(await lookup.local_addresses(d.ipr))
    pkt = Packet(family, str(own.ip), str(dst), p.to.proto, p.to.port, iif=net.bridge, local=local)
    if family not in counted:
        steps.append(Step("firewall", f"pynet keeps no IPv{family} rules on this host", verdict="unknown"))
        return
    snap = counted[family][0]
    if pkt.is_local(pkt.dst):
        v = walk(snap, "nat", DNAT, pkt)
        if v.target == "DNAT":
            pkt = with_destination(pkt, v.to_destination)
            steps.append(_step_of("firewall", v, counted, family, "nat",
                                  f"published port: destination rewritten to {v.to_destination}", "rewrite"))
        elif v.undecided:
            steps.append(_step_of("firewall", v, counted, family, "nat", v.undecided, "unknown"))
            return
    if pkt.is_local(pkt.dst):
        v = walk(snap, "filter", INPUT, pkt)
        if v.undecided:
            steps.append(_step_of("firewall", v, counted, family, "filter", v.undecided, "unknown"))
            return
        if v.target in ("DROP", "REJECT"):
            steps.append(_step_of("firewall", v, counted, family, "filter", "dropped on its way into the host",
                                  "drop"))
            return
        steps.append(Step("host", f"{pkt.dst} is this host's own address: delivered to the host"
                          + (f" (port {pkt.dport}: whatever listens there)" if pkt.dport else ""),
                          shown(v.rule) if v.target else "", verdict="deliver"))
        return
    route = await lookup.route_to(d.ipr, pkt.dst, names, source=pkt.src, inbound=links.link_index(d.ipr, net.bridge))
    if "error" in route:
        steps.append(Step("host", f"no route to {pkt.dst} on the host ({route['error']})",
                          f"ip route get {pkt.dst}", verdict="drop"))
        return
    pkt = replace(pkt, oif=route["dev"])
    route_text = f"{pkt.dst} dev {route['dev']}" + (f" via {route['via']}" if route["via"] else "")
    if pkt.oif == net.bridge:
        # Bridged, not routed: iptables sees it only with br_netfilter's call-iptables on.
        key = "net/bridge/bridge-nf-call-iptables" if family == 4 else "net/bridge/bridge-nf-call-ip6tables"
        if await asyncio.to_thread(d.sysctl.read, key) == "0":
            steps.append(Step("bridge", f"bridged: iptables is not consulted ({sysctl_name(key)} = 0)"))
            steps.append(await _next_hop(d, net, p, pkt, route, route_text))
            return
    v = walk(snap, "filter", FORWARD, pkt)
    if v.undecided:
        steps.append(_step_of("firewall", v, counted, family, "filter", v.undecided, "unknown"))
        return
    if v.target in ("DROP", "REJECT"):
        why = ("another network: isolation" if "ISOLATION" in v.chain else
               "ICC is off on this network" if pkt.oif == net.bridge and not net.options.icc else
               "the network is --internal" if net.options.internal else "pynet's rules drop it")
        steps.append(_step_of("firewall", v, counted, family, "filter", f"dropped: {why}", "drop"))
        return
    steps.append(_step_of("firewall", v, counted, family, "filter", "forwarded" if v.target == "ACCEPT" else
                          "no verdict in pynet's chains: the host's other rules decide",
                          "pass" if v.target == "ACCEPT" else "unknown"))
    v = walk(snap, "nat", POSTROUTING, pkt)
    if v.undecided:
        steps.append(_step_of("firewall", v, counted, family, "nat", v.undecided, "unknown"))
    elif v.target == "MASQUERADE":
        steps.append(_step_of("firewall", v, counted, family, "nat",
                              f"source rewritten to {route['source'] or 'the address of ' + pkt.oif}", "rewrite"))
    steps.append(await _next_hop(d, net, p, pkt, route, route_text))


async def _next_hop(d: "BridgeMode", net: store.Network, p: Path, pkt: Packet, route: dict,
                    route_text: str) -> Step:
    dst = ipaddress.ip_address(pkt.dst)
    target = next((e for e in d.endpoints.values() if dst in [a.ip for a in (e.address, e.address6) if a]
                   and d.networks.get(e.network_id) and d.networks[e.network_id].bridge == pkt.oif), None)
    if target is not None:
        return Step("bridge", f"delivered to endpoint {naming.short(target.endpoint_id)} through veth"
                    f" {target.host_if}", route_text, verdict="deliver")
    if pkt.dst in p.remote:
        host, how = p.remote[pkt.dst]
        return Step(p.mode, f"to host {host}: {how}", route_text, verdict="leave")
    if pkt.oif == net.bridge:
        return Step("bridge", f"no container holds {pkt.dst} on this network: its ARP goes unanswered",
                    route_text, verdict="drop")
    return Step("uplink", f"leaves the host by {pkt.oif}" + (f" through {route['via']}" if route["via"] else ""),
                route_text, verdict="leave")


async def _route_in_container(d: "BridgeMode", ep: store.Endpoint, address: str) -> Optional[dict]:
    if not ep.sandbox:
        return None
    where = d.local_sandbox(ep.sandbox)
    if not await asyncio.to_thread(netns.is_alive, where):
        return {"error": f"the container's namespace {where} is not mounted"}
    try:
        async with netns.route_handle(where) as inner:
            names = await lookup.link_names(inner)
            route = await lookup.route_to(inner, address, names)
            if "error" not in route:
                macs = {m.get("ifname"): (m.get("address") or "").lower() for m in await links.dump(inner, "link")}
                route["mac"] = macs.get(route["dev"], "")
            return route
    except (NetlinkError, OSError) as exc:
        return {"error": f"the container's namespace cannot be read: {exc}"}
