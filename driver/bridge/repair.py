"""The bridge mode's part of reconciliation: observe, decide, and the fixes.

observe() reads, all at once, what the kernel has (links, addresses, kernel
settings, which container namespaces are alive) beside a copy of the state.
decide() is pure: from that snapshot alone it says what is out of line, why
it matters, and the fix, a call on the driver made only when applied. The
Reconciler (driver/reconcile.py) applies the fixes, or shows them (`pynet
doctor`), and runs the passes every mode shares.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Awaitable, Callable, Optional

from ipam.addr import IPAddress, IPNetwork

from .. import naming
from ..findings import Decision, Expected, Finding, unexplained
from ..kernel import links, netns
from ..kernel.link_reader import Link
from ..kernel.sysctl import sysctl_name
from ..rollback import Rollback
from . import store
from .setup import wanted_sysctls

if TYPE_CHECKING:
    from .mode import BridgeMode

log = logging.getLogger("pynet.driver")

# Seconds after Join past which a container end still on the host is no container
# starting (Docker moves it in within moments, however loaded the host).
JOIN_GRACE = 60.0


@dataclass
class Snapshot:
    """The state (copied) and what the kernel had, at one moment."""

    networks: dict[str, store.Network]
    endpoints: dict[str, store.Endpoint]  # known before the link dump: a newer one is not judged by it
    in_flight: set[str]
    joined_at: dict[str, float]
    loaded_at: float
    now: float
    links: dict[str, Link]  # by name
    addresses: dict[int, set[str]] = field(default_factory=dict)  # link index -> "ip/len"
    wrong_sysctls: dict[str, list[str]] = field(default_factory=dict)  # network ID -> keys not at 1
    sysctls_read_only: Optional[str] = None  # why pynet cannot set them, if it cannot
    alive: dict[str, bool] = field(default_factory=dict)  # SandboxKey -> namespace still mounted
    sandbox_paths: dict[str, str] = field(default_factory=dict)  # SandboxKey -> where pynet looks
    known_after: set[str] = field(default_factory=set)  # network and endpoint IDs known once the dump was read


async def observe(d: "BridgeMode", full: bool) -> Snapshot:
    snap = Snapshot(networks=dict(d.networks), endpoints=dict(d.endpoints), in_flight=set(d.in_flight),
                    joined_at=dict(d.joined_at), loaded_at=d.loaded_at, now=time.time(),
                    links=await links.dump_links(d.ipr))
    # Calls go on while the kernel is read: a network or endpoint made meanwhile has
    # links in the dump that the copies above do not explain. What pynet knows now
    # explains them.
    snap.known_after = {*d.networks, *d.endpoints, *d.in_flight}
    snap.addresses = await links.dump_addresses(d.ipr)

    def read_settings() -> None:
        for net in snap.networks.values():
            wrong = [k for k in wanted_sysctls(net) if d.sysctl.read(k) != "1"]
            if wrong:
                snap.wrong_sysctls[net.network_id] = wrong
        if snap.wrong_sysctls:
            snap.sysctls_read_only = d.sysctl.writable()

    def read_sandboxes() -> None:
        for sandbox in {ep.sandbox for ep in snap.endpoints.values() if ep.sandbox}:
            snap.sandbox_paths[sandbox] = d.local_sandbox(sandbox)
            snap.alive[sandbox] = netns.is_alive(snap.sandbox_paths[sandbox])

    await asyncio.to_thread(read_settings)
    if full:
        await asyncio.to_thread(read_sandboxes)
    return snap


Fix = Optional[Callable[[], Awaitable[object]]]


class BridgeReconciliation:
    """The bridge mode as reconcile.Reconciler asks for it (ReconciledMode)."""

    def __init__(self, d: "BridgeMode") -> None:
        self.d = d

    def counts(self) -> tuple[int, int]:
        return len(self.d.networks), len(self.d.endpoints)

    def known_networks(self) -> set[str]:
        return {*self.d.networks, *self.d.in_flight}

    async def observe(self, full: bool) -> Snapshot:
        return await observe(self.d, full)

    def decide(self, snapshot: Snapshot, full: bool, min_age: float, spare_leftovers: bool) -> list[Decision]:
        return decide(snapshot, self.d, full, min_age, spare_leftovers)

    def expected_rules(self) -> list[Expected]:
        d = self.d
        out = [Expected(Finding("firewall rules restored", f"network {naming.short(net.network_id)}",
                                "IPv{family} firewall rules are missing",
                                "its isolation, forwarding or NAT is not what it should be",
                                "put the network's rules back, in order"), d.network_rules(net))
               for net in d.networks.values()]
        out += [Expected(Finding("firewall rules restored", f"endpoint {naming.short(ep.endpoint_id)}",
                                 "IPv{family} rules of published ports are missing",
                                 f"its published ports ({', '.join(map(str, ep.bindings))}) do not answer",
                                 "put the port rules back"), d.binding_rules(ep))
                for ep in d.endpoints.values() if ep.bindings]
        return out

    def held_subnets(self) -> list[tuple[str, IPNetwork, set[IPAddress]]]:
        holders = self.d.holders()
        out = []
        for net in list(self.d.networks.values()):
            held = {addr for addr, (nid, _) in holders.items() if nid == net.network_id}
            out += [(net.network_id, s.pool, held) for s in net.subnets]
        return out


def decide(snap: Snapshot, d: "BridgeMode", full: bool, min_age: float, spare_leftovers: bool) -> list[Decision]:
    """What is out of line, in the order to put it right; `d` only names the fixes."""
    decisions = _networks(snap, d)
    if full:
        decisions += _endpoints(snap, d, min_age)
        decisions += _orphan_links(snap, d, spare_leftovers)
    return decisions


def _networks(snap: Snapshot, d: "BridgeMode") -> list[Decision]:
    out = []
    for net in snap.networks.values():
        subject = f"network {naming.short(net.network_id)}"
        fix: Fix = partial(repair_network, d, net)
        bridge = snap.links.get(net.bridge)
        if bridge is None:
            out.append(Decision(Finding("bridges recreated", subject, f"bridge {net.bridge} is missing",
                                        "its containers have no network at all",
                                        "recreate the bridge, its gateway addresses and settings"), fix))
            continue
        have = snap.addresses.get(bridge.index, set())
        lost = [str(g) for g in net.bridge_gateways if str(g) not in have]
        if lost or not bridge.up:
            problem = (f"bridge {net.bridge} is down" if not bridge.up else
                       f"bridge {net.bridge} lost its gateway address {', '.join(lost)}")
            out.append(Decision(Finding("bridges repaired", subject, problem,
                                        "its containers cannot reach their gateway or leave the network",
                                        "bring the bridge up and put the gateway addresses back"), fix))
            continue
        wrong = snap.wrong_sysctls.get(net.network_id)
        if not wrong:
            continue
        names = ", ".join(sysctl_name(k) for k in wrong)
        cannot = snap.sysctls_read_only
        out.append(Decision(Finding(
            "settings restored", subject, f"{names} not 1",
            "its containers cannot reach outside, or ports published on 127.0.0.1 do not answer",
            f"pynet cannot set them ({cannot}): on the host, run "
            + " ".join(f"`sysctl -w {sysctl_name(k)}=1`" for k in wrong)
            + ", or give pynet a writable mount of /proc/sys/net (PYNET_SYSCTL_ROOT; the"
            " managed plugin has one)" if cannot else "set them to 1"), None if cannot else fix))
    return out


def _endpoints(snap: Snapshot, d: "BridgeMode", min_age: float) -> list[Decision]:
    out: list[Decision] = []
    visible = _sandboxes_visible(snap, out)
    for ep in snap.endpoints.values():
        net = snap.networks.get(ep.network_id)
        subject = f"endpoint {naming.short(ep.endpoint_id)} (network {naming.short(ep.network_id)})"
        link = snap.links.get(ep.host_if)
        joined = snap.joined_at.get(ep.endpoint_id, snap.loaded_at)
        if link is not None and ep.peer_if in snap.links and snap.alive.get(ep.sandbox) is False and visible \
                and snap.now - joined >= max(min_age, JOIN_GRACE):
            # Docker destroyed the sandbox (libnetwork moves interfaces back to the host
            # then) but its Leave and DeleteEndpoint never reached pynet. A container
            # starting looks the same until Docker moves its end in: moments after Join.
            out.append(Decision(Finding(
                "stale endpoints reclaimed", subject,
                f"its container's namespace is gone and both ends of veth {ep.host_if} are back on the host",
                "its container stopped while pynet could not hear it (pynet down, or the plugin"
                " disabled): an address and a veth held for nothing",
                "forget the endpoint and free its addresses and ports"),
                partial(d.reclaim_endpoint, ep, "its container stopped while pynet was away")))
            continue
        if link is not None:
            bridge = snap.links.get(net.bridge) if net else None
            if net is not None and bridge is not None and (link.master != bridge.index or not link.up):
                out.append(Decision(Finding("endpoints repaired", subject,
                                            f"veth {ep.host_if} is not up on bridge {net.bridge}",
                                            "its container is cut off from the network",
                                            "attach the veth to the bridge and bring it up"),
                                    partial(repair_endpoint, d, ep)))
            continue
        if ep.sandbox and snap.alive.get(ep.sandbox):
            out.append(Decision(Finding("endpoints rebuilt", subject,
                                        f"veth {ep.host_if} is gone but the container still runs ({ep.sandbox})",
                                        "the container lost this network's interface",
                                        "create a new veth pair and move it into the container, with its"
                                        " MAC, addresses and routes"),
                                partial(rebuild_endpoint, d, ep)))
            continue
        if not ep.sandbox and snap.now - ep.created < min_age:
            continue  # being created right now
        if ep.sandbox and not visible:
            continue  # pynet cannot tell a stopped container from a running one: reported above
        why = "its container's network namespace is gone" if ep.sandbox else "its veth is gone"
        out.append(Decision(Finding("stale endpoints reclaimed", subject, why,
                                    "Docker tore it down while pynet could not hear it",
                                    "forget the endpoint and free its addresses and ports"),
                            partial(d.reclaim_endpoint, ep, why, only_if_veth_gone=True)))
    return out


def _sandboxes_visible(snap: Snapshot, out: list[Decision]) -> bool:
    """Whether pynet sees containers' namespaces where it looks.

    An endpoint whose host veth is here but whose container end is not has had
    that end moved into its container: the container runs, so its namespace
    must be visible. If none is, pynet looks in the wrong place (a plugin
    without the exec-root mount, or one that misses new mounts)."""
    running = [e.sandbox for e in snap.endpoints.values()
               if e.sandbox in snap.alive and e.host_if in snap.links and e.peer_if not in snap.links]
    if running and not any(snap.alive[s] for s in running):
        where = snap.sandbox_paths.get(running[0], running[0])
        warn = (f"reconcile: no namespace of {len(running)} running container(s) is visible (looked for"
                f" {where}): endpoints whose veth is gone are kept until it is")
        out.append(Decision(Finding(
            "host problems", "host", f"no namespace of the {len(running)} running container(s) is visible"
            f" (looked for {where})",
            "pynet cannot tell a stopped container from a running one: it neither rebuilds a lost veth nor"
            " reclaims a stopped container's endpoint",
            "mount Docker's netns directory where pynet looks (PYNET_NETNS_DIRS, PYNET_NETNS_MOUNT), with"
            " mounts propagating to it (rslave)"), None, warn))
        return False
    return True


def _orphan_links(snap: Snapshot, d: "BridgeMode", spare_leftovers: bool) -> list[Decision]:
    known_bridges = {n.bridge for n in snap.networks.values()}
    known_veths = {name for e in snap.endpoints.values() for name in (e.host_if, e.peer_if)}
    in_flight = {naming.short(i) for i in snap.in_flight}
    out = []
    for name, info in snap.links.items():
        alias = info.alias or ""
        if alias.startswith(naming.ALIAS_PREFIX + "network:"):
            owner = alias.split(":", 2)[2]
            orphan = owner not in snap.networks and owner not in snap.in_flight and owner not in snap.known_after
        elif alias.startswith(naming.ALIAS_PREFIX + "endpoint:"):
            owner = alias.split(":", 2)[2]
            orphan = owner not in snap.endpoints and owner not in snap.in_flight and owner not in snap.known_after
        elif not alias and naming.is_derived_name(name) and info.kind in ("bridge", "veth"):
            # Without a mark: a leftover of a crash between creating it and marking it.
            orphan = name not in known_bridges and name not in known_veths and name[3:] not in in_flight \
                and not any(k.startswith(name[3:]) for k in snap.known_after)
        else:
            continue
        if not orphan:
            continue
        kind = info.kind or "link"
        if spare_leftovers:
            out.append(Decision(unexplained(f"{kind} {name}"), None))
            continue
        out.append(Decision(Finding(f"orphan {kind}s deleted", f"{kind} {name}",
                                    "pynet made it, but no saved network or endpoint explains it",
                                    "a leftover of an interrupted call", "delete it"),
                            partial(delete_orphan_link, d, name, info.alias)))
    return out


# --- the fixes (each under the network's lock; False: the object went meanwhile) ---


async def delete_orphan_link(d: "BridgeMode", name: str, alias: Optional[str]) -> bool:
    """Delete a link judged an orphan, unless its owner became known since (a network
    or endpoint created while the kernel was being read)."""
    owner = (alias or "").split(":", 2)[2] if (alias or "").count(":") >= 2 else ""
    known = {*d.networks, *d.endpoints, *d.in_flight}
    if (owner and owner in known) or any(k.startswith(name[3:]) for k in known):
        return False
    return await links.delete_owned_link(d.ipr, name, alias)


async def repair_network(d: "BridgeMode", net: store.Network) -> bool:
    return await d.set_up_saved(net)


async def repair_endpoint(d: "BridgeMode", ep: store.Endpoint) -> bool:
    """Put a saved endpoint's host veth back on its bridge, up."""
    async with d.lock(ep.network_id):
        net = d.networks.get(ep.network_id)
        if net is None or d.endpoints.get(ep.endpoint_id) is not ep:
            return False
        await d.ensure_endpoint_kernel(net, ep)
        return True


async def rebuild_endpoint(d: "BridgeMode", ep: store.Endpoint) -> bool:
    """Give a running container back the interface it lost when its veth
    was deleted: a new pair, moved into its namespace, with the endpoint's
    MAC, addresses and (where it has none) default routes."""
    async with d.lock(ep.network_id):
        net = d.networks.get(ep.network_id)
        if net is None or d.endpoints.get(ep.endpoint_id) is not ep or not ep.sandbox:
            return False
        if await links.get_link(d.ipr, ep.host_if) is not None:
            return False  # it is there after all (the caller looked a while ago)
        await d.ensure_endpoint_kernel(net, ep)
        gateways = [] if net.options.internal else [
            g.ip for g, a in ((net.gateway4, ep.address), (net.gateway6, ep.address6)) if g and a]
        async with Rollback(f"endpoint {naming.short(ep.endpoint_id)}") as undo:
            # Undone, so the next pass sees the veth missing and tries again.
            undo.push(lambda: links.delete_link(d.ipr, ep.host_if), f"veth {ep.host_if}")
            sandbox = d.local_sandbox(ep.sandbox)
            await links.move_to_netns(d.ipr, ep.peer_if, sandbox)
            async with netns.route_handle(sandbox) as inner:
                name = await links.configure_container_interface(
                    inner, ep.peer_if, "eth", ep.mac, [a for a in (ep.address, ep.address6) if a], gateways)
    log.warning("endpoint %s: rebuilt its veth into the container as %s",
                naming.short(ep.endpoint_id), name)
    return True
