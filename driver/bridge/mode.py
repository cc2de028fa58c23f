"""The bridge mode: Docker's NetworkDriver calls turned into kernel work.

Each handler is idempotent (a repeated call finds its work done and answers
the same), rolls back what it built when it fails halfway, and records its
result in the state database before it answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from typing import Awaitable, Callable, Optional, Sequence

from pyroute2 import AsyncIPRoute

from ipam.addr import IPAddress, IPNetwork

from .. import naming
from ..db import Database
from ..errors import Conflict, DriverError, InvalidRequest, KernelError, NotFound
from ..firewall import Firewall
from ..kernel import links
from ..kernel.netns import DEFAULT_NETNS_DIRS
from ..kernel.sysctl import Sysctl
from ..publish.portmap import parse_portmap
from ..publish.publisher import Publisher
from ..publish.dnat_rules import binding_rules
from ..rollback import Rollback
from ..chains import DOCKER_BRIDGE, Rule, docker_bridge_rules
from . import store
from .options import parse_network_options
from .requests import checked_sandbox, endpoint_from_request, endpoint_reply, network_from_request
from .network_rules import AddedRules, rules_of
from .setup import NETWORK_STEPS, Build, Step, run_steps
from ..wire import (CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse,
                   CreateNetworkRequest, DiscoveryRequest, Empty, EndpointRequest, InterfaceName,
                   JoinRequest, JoinResponse, NetworkRequest, OperInfoResponse,
                   ProgramExternalConnectivityRequest)

log = logging.getLogger("pynet.driver")


class BridgeMode:
    def __init__(self, db: Database, ipr: AsyncIPRoute, firewall: Firewall,
                 netns_dirs: Sequence[str] = DEFAULT_NETNS_DIRS, sysctl: Sysctl | None = None,
                 netns_mount: str = "") -> None:
        self.db = db
        self.ipr = ipr
        self.sysctl = sysctl or Sysctl()
        self.firewall = firewall
        firewall.add_source(self.wanted_rules, refresh=self.refresh_docker_bridges)
        self.docker_bridges: list[str] = []  # Docker's own bridges, to isolate pynet's from
        self.netns_dirs = tuple(os.path.normpath(d) for d in netns_dirs)
        self.netns_mount = netns_mount  # where pynet sees them, if not at Docker's path (a plugin)
        self.networks: dict[str, store.Network] = {}
        self.endpoints: dict[str, store.Endpoint] = {}
        self.publisher = Publisher()
        # IDs whose kernel objects exist before their record does: reconciliation
        # must not take them for leftovers.
        self.in_flight: set[str] = set()
        # When each endpoint last joined (in memory; since load for the saved ones):
        # Docker moves the container end in moments after Join, never a minute later.
        self.joined_at: dict[str, float] = {}
        self.loaded_at = time.time()
        self._creating: dict[str, store.Network] = {}  # networks in flight, for bridge-name clashes
        self._added_steps: dict[str, list[Step]] = {}  # network ID -> steps a mode built on it adds (api.py)
        self._added_rules: dict[str, list[AddedRules]] = {}  # network ID -> rules it adds
        self._reclaimed: list[Callable[[str, str], Awaitable[None]]] = []  # told (network, endpoint) reclaimed
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def load(self) -> None:
        networks, endpoints = await self.db.read(store.load)
        self.networks = {n.network_id: n for n in networks}
        self.endpoints = {e.endpoint_id: e for e in endpoints}
        self.loaded_at = time.time()
        for ep in self.endpoints.values():
            for problem in self.publisher.hold(ep):
                log.warning("published port not held again: %s", problem)
        log.info("driver: loaded %d networks, %d endpoints", len(self.networks), len(self.endpoints))

    def network_rules(self, net: store.Network) -> list[Rule]:
        return rules_of(net, self._added_rules.get(net.network_id, ()))

    async def refresh_docker_bridges(self) -> None:
        found = await links.dump_links(self.ipr)
        self.docker_bridges = sorted(name for name, info in found.items()
                                     if DOCKER_BRIDGE.match(name) and info.kind == "bridge")

    def wanted_rules(self) -> list[list[Rule]]:
        """Every group of firewall rules the saved state calls for."""
        groups = [self.network_rules(net) for net in self.networks.values()]
        groups.append(docker_bridge_rules(self.docker_bridges))
        groups += [self.binding_rules(ep) for ep in self.endpoints.values() if ep.bindings]
        return groups

    def _network(self, network_id: str) -> store.Network:
        net = self.networks.get(network_id)
        if net is None:
            raise NotFound(f"network {naming.short(network_id)} not found: pynet has no record of it")
        return net

    # --- capabilities ------------------------------------------------------

    def holds(self, network_id: str) -> bool:
        return network_id in self.networks or network_id in self._creating

    async def capabilities(self) -> CapabilitiesResponse:
        return CapabilitiesResponse(Scope="local", ConnectivityScope="local")

    async def discover_new(self, req: DiscoveryRequest) -> Empty:
        return Empty()  # node and plugin discovery: nothing a local network needs

    async def discover_delete(self, req: DiscoveryRequest) -> Empty:
        return Empty()

    # --- networks ----------------------------------------------------------

    async def create_network(self, req: CreateNetworkRequest) -> Empty:
        net = network_from_request(req, ipv6_works=6 in self.firewall.families)
        nid = naming.short(net.network_id)
        async with self._locks[net.network_id]:
            existing = self.networks.get(net.network_id)
            if existing is not None:
                if not existing.same_definition(net):
                    raise Conflict(f"network {nid} already exists with another definition")
                await self.ensure_network_kernel(existing)  # a repeat: make sure it is all there
                return Empty()
            for other in [*self.networks.values(), *self._creating.values()]:
                if other.bridge == net.bridge:
                    raise Conflict(f"network {nid}: bridge name {net.bridge} is already used by"
                                   f" network {naming.short(other.network_id)}")
            self.in_flight.add(net.network_id)
            self._creating[net.network_id] = net
            try:
                async with Rollback(f"network {nid}") as undo:
                    created = await self.ensure_network_kernel(net)
                    undo.push(lambda: self._remove_network_kernel(net, created), f"bridge {net.bridge} and its rules")
                    await self.db.write(lambda c: store.insert_network(c, net))
                self.networks[net.network_id] = net
            finally:
                self.in_flight.discard(net.network_id)
                self._creating.pop(net.network_id, None)
        log.info("network %s: created on bridge %s (%s)", nid, net.bridge,
                 ", ".join(str(s.pool) for s in net.subnets) or "no subnet")
        return Empty()

    def lock(self, network_id: str) -> asyncio.Lock:
        """One network's changes take turns (handlers and repairs alike)."""
        return self._locks[network_id]

    def local_sandbox(self, key: str) -> str:
        """Where pynet itself finds a saved SandboxKey's namespace: inside a
        managed plugin Docker's netns directory is mounted elsewhere, and the
        name (unique, checked at Join) is what identifies it."""
        return os.path.join(self.netns_mount, os.path.basename(key)) if self.netns_mount else key

    async def ensure_network_kernel(self, net: store.Network, with_rules: bool = True) -> bool:
        """The network's set-up steps (setup.py), then those another mode added;
        whether the bridge was created. On failure removes what it created, and raises.

        A new network is all or nothing. A saved one (a repeat, a repair) keeps
        its bridge whatever the added steps do: they undo only their own work,
        so a VXLAN device that cannot be made never takes the bridge away from
        the containers of this host."""
        saved = self.networks.get(net.network_id) is net
        added = self._added_steps.get(net.network_id, [])
        what = f"network {naming.short(net.network_id)}"
        async with Rollback(what) as undo:
            build = Build(net, self.ipr, self.firewall, self.sysctl, undo, saved=saved, with_rules=with_rules,
                          added_rules=self._added_rules.get(net.network_id, ()))
            await run_steps([*NETWORK_STEPS, *([] if saved else added)], build)
        if saved and added:
            async with Rollback(what) as build.undo:
                await run_steps(added, build)
        return build.created

    # --- what a mode built on bridge networks uses (api.py) ------------------

    def extend(self, network_id: str, step: Optional[Step] = None, rules: Optional[AddedRules] = None) -> None:
        if step is not None:
            self._added_steps.setdefault(network_id, []).append(step)
        if rules is not None:
            self._added_rules.setdefault(network_id, []).append(rules)

    def on_reclaimed(self, told: Callable[[str, str], Awaitable[None]]) -> None:
        self._reclaimed.append(told)

    def withdraw(self, network_id: str) -> None:
        self._added_steps.pop(network_id, None)
        self._added_rules.pop(network_id, None)

    async def set_up_again(self, network_id: str) -> bool:
        net = self.networks.get(network_id)
        return await self.set_up_saved(net) if net is not None else False

    async def set_up_saved(self, net: store.Network) -> bool:
        """Put back a saved network's bridge, addresses, settings and the steps other
        modes added (not its rules: the firewall check does those for all networks at
        once); False if `net` is no longer the saved record."""
        async with self._locks[net.network_id]:
            if self.networks.get(net.network_id) is not net:
                return False
            await self.ensure_network_kernel(net, with_rules=False)
            return True

    async def _remove_network_kernel(self, net: store.Network, bridge_too: bool = True) -> None:
        await self.firewall.remove(self.network_rules(net))
        if bridge_too:
            await links.delete_owned_link(self.ipr, net.bridge, naming.network_alias(net.network_id))

    async def delete_network(self, req: NetworkRequest) -> Empty:
        nid = naming.short(req.NetworkID)
        async with self._locks[req.NetworkID]:
            net = self.networks.get(req.NetworkID)
            if net is None:
                # Unknown: clear what a failed create (or a delete whose write failed) left.
                await self._remove_network_kernel(store.Network(
                    req.NetworkID, naming.bridge_name(req.NetworkID), parse_network_options({}), [], []))
                await self.db.write(lambda c: store.delete_network(c, req.NetworkID))
                return Empty()
            # Docker has forgotten the network whatever happens: so does pynet, in
            # memory first, so that no firewall check wants its rules back meanwhile.
            self.networks.pop(req.NetworkID, None)
            leftovers = [e for e in self.endpoints.values() if e.network_id == req.NetworkID]
            errors = []
            for ep in leftovers:
                errors += await _collect(self._delete_endpoint_kernel(ep, self._forget_endpoint(ep)))
            errors += await _collect(self._remove_network_kernel(net))
            await self.db.write(lambda c: store.delete_network(c, req.NetworkID))
        # The lock stays: a call queued on it must find the network gone, not a new lock.
        if errors:
            raise KernelError(f"network {nid}: deleted, but cleaning up failed: {'; '.join(errors)}")
        log.info("network %s: deleted (bridge %s)", nid, net.bridge)
        return Empty()

    # --- endpoints ---------------------------------------------------------

    async def create_endpoint(self, req: CreateEndpointRequest) -> CreateEndpointResponse:
        net = self._network(req.NetworkID)
        ep = endpoint_from_request(net, req)
        async with self._locks[req.NetworkID]:
            net = self._network(req.NetworkID)  # again: it may have been deleted while we waited
            existing = self.endpoints.get(ep.endpoint_id)
            if existing is not None:
                if not existing.same_definition(ep):
                    raise Conflict(f"endpoint {naming.short(ep.endpoint_id)} already exists"
                                   " with another definition")
                await self.ensure_endpoint_kernel(net, existing)
                return endpoint_reply(existing)
            self.in_flight.add(ep.endpoint_id)
            try:
                async with Rollback(f"endpoint {naming.short(ep.endpoint_id)}") as undo:
                    if await self.ensure_endpoint_kernel(net, ep):
                        undo.push(lambda: links.delete_link(self.ipr, ep.host_if), f"veth {ep.host_if}")
                    await self.db.write(lambda c: store.insert_endpoint(c, ep))
                self.endpoints[ep.endpoint_id] = ep
            finally:
                self.in_flight.discard(ep.endpoint_id)
        return endpoint_reply(ep)

    async def ensure_endpoint_kernel(self, net: store.Network, ep: store.Endpoint) -> bool:
        bridge = links.link_index(self.ipr, net.bridge)
        if bridge is None:  # gone behind pynet's back (a reboot, an operator): rebuild it
            log.warning("network %s: bridge %s was missing, recreating it",
                        naming.short(net.network_id), net.bridge)
            await self.ensure_network_kernel(net)
            bridge = links.link_index(self.ipr, net.bridge)
            if bridge is None:
                raise KernelError(f"network {naming.short(net.network_id)}: bridge {net.bridge}"
                                  " vanished right after it was rebuilt")
        return await links.ensure_veth(self.ipr, ep.host_if, ep.peer_if, bridge,
                                       naming.endpoint_alias(ep.endpoint_id), ep.mac,
                                       mtu=net.options.mtu)

    def _forget_endpoint(self, ep: store.Endpoint) -> list[Rule]:
        """Drop an endpoint from memory before its kernel objects (so no firewall
        check puts its rules back); returns the rules left to remove."""
        rules = self.binding_rules(ep)
        self.endpoints.pop(ep.endpoint_id, None)
        self.joined_at.pop(ep.endpoint_id, None)
        return rules

    async def _delete_endpoint_kernel(self, ep: store.Endpoint, rules: list[Rule]) -> None:
        if rules:
            await self.firewall.remove(rules)
        self.publisher.release(ep.endpoint_id)
        await links.delete_owned_link(self.ipr, ep.host_if, naming.endpoint_alias(ep.endpoint_id))

    async def delete_endpoint(self, req: EndpointRequest) -> Empty:
        async with self._locks[req.NetworkID]:
            ep = self.endpoints.get(req.EndpointID)
            if ep is None:
                host, peer = naming.veth_names(req.EndpointID)
                await links.delete_owned_link(self.ipr, host, naming.endpoint_alias(req.EndpointID))
                return Empty()
            errors = await _collect(self._delete_endpoint_kernel(ep, self._forget_endpoint(ep)))
            await self.db.write(lambda c: store.delete_endpoint(c, req.EndpointID))
        if errors:
            raise KernelError(f"endpoint {naming.short(req.EndpointID)}: deleted, but"
                              f" cleaning up failed: {'; '.join(errors)}")
        return Empty()

    async def oper_info(self, req: EndpointRequest) -> OperInfoResponse:
        ep = self.endpoints.get(req.EndpointID)
        if ep is None:
            return OperInfoResponse(Value={})
        return OperInfoResponse(Value={"HostInterface": ep.host_if, "MacAddress": ep.mac,
                                       "Sandbox": ep.sandbox,
                                       "PublishedPorts": [str(b) for b in ep.bindings]})

    # --- join and leave ----------------------------------------------------

    async def join(self, req: JoinRequest) -> JoinResponse:
        eid = naming.short(req.EndpointID)
        net = self._network(req.NetworkID)
        ep = self.endpoints.get(req.EndpointID)
        if ep is None or ep.network_id != req.NetworkID:
            raise NotFound(f"endpoint {eid} not found on network {naming.short(req.NetworkID)}")
        sandbox = checked_sandbox(eid, req.SandboxKey, self.netns_dirs)
        if links.link_index(self.ipr, ep.peer_if) is None:
            # Docker has not moved it yet, so it must be here: rebuild a pair that went away.
            async with self._locks[req.NetworkID]:
                net = self._network(req.NetworkID)
                if self.endpoints.get(req.EndpointID) is not ep:
                    raise NotFound(f"endpoint {eid} was deleted while joining")
                await links.delete_link(self.ipr, ep.host_if)
                await self.ensure_endpoint_kernel(net, ep)
        if ep.sandbox != sandbox:
            await self.db.write(lambda c: store.set_sandbox(c, ep.endpoint_id, sandbox))
            ep.sandbox = sandbox
        self.joined_at[ep.endpoint_id] = time.time()
        name = InterfaceName(SrcName=ep.peer_if, DstPrefix="eth")
        if net.options.internal:
            # No way out, and Docker must not add one (docker_gwbridge) either.
            return JoinResponse(InterfaceName=name, DisableGatewayService=True)
        gw4, gw6 = net.gateway4, net.gateway6
        return JoinResponse(InterfaceName=name,
                            Gateway=str(gw4.ip) if gw4 and ep.address else "",
                            GatewayIPv6=str(gw6.ip) if gw6 and ep.address6 else "")

    async def leave(self, req: EndpointRequest) -> Empty:
        ep = self.endpoints.get(req.EndpointID)
        if ep is not None and ep.sandbox:
            await self.db.write(lambda c: store.set_sandbox(c, ep.endpoint_id, ""))
            ep.sandbox = ""
        return Empty()

    # --- published ports ---------------------------------------------------

    def binding_rules(self, ep: store.Endpoint) -> list[Rule]:
        tag = naming.firewall_tag(ep.network_id)
        return [rule for b in ep.bindings for rule in binding_rules(b, tag)]

    async def program_external_connectivity(self, req: ProgramExternalConnectivityRequest) -> Empty:
        eid = naming.short(req.EndpointID)
        requests = parse_portmap(req.Options)
        async with self._locks[req.NetworkID]:
            net = self._network(req.NetworkID)
            ep = self.endpoints.get(req.EndpointID)
            if ep is None or ep.network_id != req.NetworkID:
                raise NotFound(f"endpoint {eid} not found on network {naming.short(req.NetworkID)}")
            if net.options.internal:
                if requests:
                    raise InvalidRequest(f"endpoint {eid}: network {naming.short(net.network_id)} is"
                                         " internal: ports cannot be published from it")
                return Empty()
            if ep.bindings:  # a repeat: the ports are held; make sure the rules are there
                await self.firewall.ensure([self.binding_rules(ep)])
                return Empty()
            if not requests:
                return Empty()
            others = [(e, b) for e in self.endpoints.values() if e is not ep for b in e.bindings]
            bindings = self.publisher.bind(net, ep, requests, others)  # all held, or none
            ep.bindings = bindings
            rules = self.binding_rules(ep)

            def forget() -> None:
                ep.bindings = []

            async with Rollback(f"endpoint {eid}") as undo:  # undone last-pushed first:
                undo.push(lambda: self.firewall.remove(rules), "its port rules")
                undo.push(lambda: self.publisher.release(ep.endpoint_id), "its host ports")
                undo.push(forget, "its bindings")  # first, so no firewall check puts the rules back
                await self.firewall.ensure([rules])
                await self.db.write(lambda c: store.set_bindings(c, ep.endpoint_id, bindings))
        log.info("endpoint %s: published %s", eid, ", ".join(str(b) for b in bindings))
        return Empty()

    async def revoke_external_connectivity(self, req: EndpointRequest) -> Empty:
        async with self._locks[req.NetworkID]:
            ep = self.endpoints.get(req.EndpointID)
            if ep is None or not ep.bindings:
                return Empty()
            rules = self.binding_rules(ep)
            ep.bindings = []  # first: no firewall check may put them back meanwhile
            await self.firewall.remove(rules)
            self.publisher.release(ep.endpoint_id)
            await self.db.write(lambda c: store.set_bindings(c, ep.endpoint_id, []))
        log.info("endpoint %s: ports unpublished", naming.short(req.EndpointID))
        return Empty()

    # --- endpoints Docker forgot -------------------------------------------

    async def reclaim_endpoint(self, ep: store.Endpoint, reason: str, only_if_veth_gone: bool = False) -> bool:
        """Drop an endpoint Docker no longer has: its veth, ports, rules and record.

        `only_if_veth_gone`: the caller judged by a veth it saw missing a while
        ago; if the veth is there now, the endpoint is live and stays.
        """
        async with self._locks[ep.network_id]:
            if self.endpoints.get(ep.endpoint_id) is not ep:
                return False
            if only_if_veth_gone and await links.get_link(self.ipr, ep.host_if) is not None:
                return False
            errors = await _collect(self._delete_endpoint_kernel(ep, self._forget_endpoint(ep)))
            await self.db.write(lambda c: store.delete_endpoint(c, ep.endpoint_id))
        log.warning("endpoint %s on network %s reclaimed: %s%s", naming.short(ep.endpoint_id),
                    naming.short(ep.network_id), reason, f" ({'; '.join(errors)})" if errors else "")
        for told in self._reclaimed:
            try:
                await told(ep.network_id, ep.endpoint_id)
            except Exception as exc:  # noqa: BLE001 - the endpoint is gone here all the same
                log.error("endpoint %s: telling a mode built on its network failed: %s",
                          naming.short(ep.endpoint_id), exc)
        return True

    async def address_released(self, pool: IPNetwork, addr: IPAddress) -> None:
        """Docker released an address an endpoint still holds: Docker tore that
        endpoint down while pynet could not hear it (after a daemon restart it
        sends only ReleaseAddress), so pynet drops it too."""
        for ep in list(self.endpoints.values()):
            net = self.networks.get(ep.network_id)
            held = {a.ip for a in (ep.address, ep.address6) if a is not None}
            if net and addr in held and any(s.pool == pool for s in net.subnets):
                await self.reclaim_endpoint(ep, f"Docker released its address {addr}")

    # --- lookups for the IPAM's error messages -----------------------------

    def holders(self) -> dict[IPAddress, tuple[str, str]]:
        """Every address pynet's networks and endpoints hold: address -> (network ID, who)."""
        return store.holders(self.networks.values(), self.endpoints.values())

    async def holder_of(self, pool: IPNetwork, addr: IPAddress) -> Optional[str]:
        found = self.holders().get(addr)
        return found[1] if found else None

    def network_using(self, pool: IPNetwork) -> Optional[str]:
        for net in self.networks.values():
            if any(s.pool == pool for s in net.subnets):
                return net.network_id
        return None


async def _collect(coro) -> list[str]:
    """Run a clean-up step; return its error text instead of raising (DriverError only)."""
    try:
        await coro
    except DriverError as exc:
        return [str(exc)]
    return []
