"""The network driver: Docker's NetworkDriver calls turned into kernel work.

Each handler is idempotent (a repeated call finds its work done and answers
the same), rolls back what it built when it fails halfway, and records its
result in the state database before it answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import defaultdict
from typing import Optional, Sequence

from pyroute2 import AsyncIPRoute

from ipam.addr import IPAddress, IPNetwork, parse_address, parse_interface, parse_network

from . import naming, store
from .db import Database
from .errors import Conflict, DriverError, InvalidRequest, KernelError, NotFound
from .kernel import links
from .kernel.firewall import Iptables, network_rules
from .options import parse_network_options
from .wire import (CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse,
                   CreateNetworkRequest, Empty, EndpointRequest, IPAMData, InterfaceName,
                   InterfaceReply, JoinRequest, JoinResponse, NetworkRequest, OperInfoResponse,
                   ProgramExternalConnectivityRequest)

log = logging.getLogger("pynet.driver")

DEFAULT_NETNS_DIRS = ("/var/run/docker/netns", "/run/docker/netns")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
PORTMAP = "com.docker.network.portmap"


class NetworkDriver:
    def __init__(self, db: Database, ipr: AsyncIPRoute, firewall: Iptables,
                 netns_dirs: Sequence[str] = DEFAULT_NETNS_DIRS) -> None:
        self.db = db
        self.ipr = ipr
        self.firewall = firewall
        self.netns_dirs = tuple(os.path.normpath(d) for d in netns_dirs)
        self.networks: dict[str, store.Network] = {}
        self.endpoints: dict[str, store.Endpoint] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def load(self) -> None:
        networks, endpoints = await self.db.read(store.load)
        self.networks = {n.network_id: n for n in networks}
        self.endpoints = {e.endpoint_id: e for e in endpoints}
        log.info("driver: loaded %d networks, %d endpoints", len(self.networks), len(self.endpoints))

    def _network(self, network_id: str) -> store.Network:
        net = self.networks.get(network_id)
        if net is None:
            raise NotFound(f"network {naming.short(network_id)} not found: pynet has no record of it")
        return net

    # --- capabilities ------------------------------------------------------

    def capabilities(self) -> CapabilitiesResponse:
        return CapabilitiesResponse(Scope="local", ConnectivityScope="local")

    # --- networks ----------------------------------------------------------

    def _network_from_request(self, req: CreateNetworkRequest) -> store.Network:
        nid = naming.short(req.NetworkID)
        opts = parse_network_options(req.Options or {})
        ipv4 = [_subnet(nid, d, 4) for d in req.IPv4Data or []]
        ipv6 = [_subnet(nid, d, 6) for d in req.IPv6Data or []] if opts.ipv6 else []
        if opts.ipv6 and not ipv6:
            raise InvalidRequest(f"network {nid}: --ipv6 was asked for but Docker sent no IPv6 pool")
        bridge = opts.bridge_name or naming.bridge_name(req.NetworkID)
        return store.Network(req.NetworkID, bridge, opts, ipv4, ipv6)

    async def create_network(self, req: CreateNetworkRequest) -> Empty:
        net = self._network_from_request(req)
        nid = naming.short(net.network_id)
        async with self._locks[net.network_id]:
            existing = self.networks.get(net.network_id)
            if existing is not None:
                if not existing.same_definition(net):
                    raise Conflict(f"network {nid} already exists with another definition")
                await self._ensure_network_kernel(existing)  # a repeat: make sure it is all there
                return Empty()
            for other in self.networks.values():
                if other.bridge == net.bridge:
                    raise Conflict(f"network {nid}: bridge name {net.bridge} is already used by"
                                   f" network {naming.short(other.network_id)}")
            created = await self._ensure_network_kernel(net)
            try:
                await self.db.write(lambda c: store.insert_network(c, net))
            except BaseException:
                await self._remove_network_kernel(net, created)
                raise
            self.networks[net.network_id] = net
        log.info("network %s: created on bridge %s (%s)", nid, net.bridge,
                 ", ".join(str(s.pool) for s in net.subnets) or "no subnet")
        return Empty()

    async def _ensure_network_kernel(self, net: store.Network) -> bool:
        """Bridge, gateway addresses, firewall rules. Returns whether the bridge was created.

        On failure removes what it created, and raises.
        """
        adopt = net.bridge == naming.bridge_name(net.network_id)
        index, created = await links.ensure_bridge(
            self.ipr, net.bridge, naming.network_alias(net.network_id), adopt_unmarked=adopt)
        try:
            gateways = [s.gateway for s in net.subnets if s.gateway]
            await links.ensure_addresses(self.ipr, index, net.bridge, gateways)
            await self.firewall.ensure(self._rules(net))  # adds all or none
        except BaseException:
            if created:
                await links.delete_link(self.ipr, net.bridge)
            raise
        return created

    def _rules(self, net: store.Network):
        return network_rules(net.bridge, naming.firewall_tag(net.network_id))

    async def _remove_network_kernel(self, net: store.Network, bridge_too: bool = True) -> None:
        await self.firewall.delete(self._rules(net))
        if bridge_too:
            await links.delete_owned_link(self.ipr, net.bridge, naming.network_alias(net.network_id))

    async def delete_network(self, req: NetworkRequest) -> Empty:
        nid = naming.short(req.NetworkID)
        async with self._locks[req.NetworkID]:
            net = self.networks.get(req.NetworkID)
            if net is None:
                # Unknown: nothing to forget, but clear what a failed create may have left.
                await self._remove_network_kernel(store.Network(
                    req.NetworkID, naming.bridge_name(req.NetworkID), parse_network_options({}), [], []))
                return Empty()
            leftovers = [e for e in self.endpoints.values() if e.network_id == req.NetworkID]
            errors = []
            for ep in leftovers:
                errors += await _collect(self._delete_endpoint_kernel(ep))
            errors += await _collect(self._remove_network_kernel(net))
            # Docker has forgotten the network whatever happens: so does pynet.
            await self.db.write(lambda c: store.delete_network(c, req.NetworkID))
            self.networks.pop(req.NetworkID, None)
            for ep in leftovers:
                self.endpoints.pop(ep.endpoint_id, None)
        # The lock stays: a call queued on it must find the network gone, not a new lock.
        if errors:
            raise KernelError(f"network {nid}: deleted, but cleaning up failed: {'; '.join(errors)}")
        log.info("network %s: deleted (bridge %s)", nid, net.bridge)
        return Empty()

    # --- endpoints ---------------------------------------------------------

    def _endpoint_from_request(self, net: store.Network, req: CreateEndpointRequest) -> store.Endpoint:
        eid = naming.short(req.EndpointID)
        iface = req.Interface
        address = address6 = None
        try:
            if iface and iface.Address:
                address = parse_interface(iface.Address, "Interface.Address")
            if iface and iface.AddressIPv6:
                address6 = parse_interface(iface.AddressIPv6, "Interface.AddressIPv6")
        except ValueError as exc:
            raise InvalidRequest(f"endpoint {eid}: {exc}") from None
        for addr, subnets in ((address, net.ipv4), (address6, net.ipv6)):
            if addr is not None and not any(addr.ip in s.pool for s in subnets):
                pools = ", ".join(str(s.pool) for s in subnets) or "none"
                raise InvalidRequest(f"endpoint {eid}: address {addr} is outside the subnets of"
                                     f" network {naming.short(net.network_id)} ({pools})")
        mac = iface.MacAddress if iface else ""
        if mac and not _MAC.fullmatch(mac):
            raise InvalidRequest(f"endpoint {eid}: MacAddress {mac!r} is not a MAC address")
        host, peer = naming.veth_names(req.EndpointID)
        return store.Endpoint(req.EndpointID, req.NetworkID, host, peer,
                              mac.lower() or naming.endpoint_mac(req.EndpointID), not mac,
                              address, address6)

    async def create_endpoint(self, req: CreateEndpointRequest) -> CreateEndpointResponse:
        net = self._network(req.NetworkID)
        ep = self._endpoint_from_request(net, req)
        async with self._locks[req.NetworkID]:
            net = self._network(req.NetworkID)  # again: it may have been deleted while we waited
            existing = self.endpoints.get(ep.endpoint_id)
            if existing is not None:
                if not existing.same_definition(ep):
                    raise Conflict(f"endpoint {naming.short(ep.endpoint_id)} already exists"
                                   " with another definition")
                await self._ensure_endpoint_kernel(net, existing)
                return _endpoint_reply(existing)
            created = await self._ensure_endpoint_kernel(net, ep)
            try:
                await self.db.write(lambda c: store.insert_endpoint(c, ep))
            except BaseException:
                if created:
                    await links.delete_link(self.ipr, ep.host_if)
                raise
            self.endpoints[ep.endpoint_id] = ep
        return _endpoint_reply(ep)

    async def _ensure_endpoint_kernel(self, net: store.Network, ep: store.Endpoint) -> bool:
        bridge = await links.get_link(self.ipr, net.bridge)
        if bridge is None:  # gone behind pynet's back (a reboot, an operator): rebuild it
            log.warning("network %s: bridge %s was missing, recreating it",
                        naming.short(net.network_id), net.bridge)
            await self._ensure_network_kernel(net)
            bridge = await links.get_link(self.ipr, net.bridge)
        return await links.ensure_veth(self.ipr, ep.host_if, ep.peer_if, bridge["index"],
                                       naming.endpoint_alias(ep.endpoint_id), ep.mac)

    async def _delete_endpoint_kernel(self, ep: store.Endpoint) -> None:
        await links.delete_owned_link(self.ipr, ep.host_if, naming.endpoint_alias(ep.endpoint_id))

    async def delete_endpoint(self, req: EndpointRequest) -> Empty:
        async with self._locks[req.NetworkID]:
            ep = self.endpoints.get(req.EndpointID)
            if ep is None:
                host, peer = naming.veth_names(req.EndpointID)
                await links.delete_owned_link(self.ipr, host, naming.endpoint_alias(req.EndpointID))
                return Empty()
            errors = await _collect(self._delete_endpoint_kernel(ep))
            await self.db.write(lambda c: store.delete_endpoint(c, req.EndpointID))
            self.endpoints.pop(req.EndpointID, None)
        if errors:
            raise KernelError(f"endpoint {naming.short(req.EndpointID)}: deleted, but"
                              f" cleaning up failed: {'; '.join(errors)}")
        return Empty()

    def oper_info(self, req: EndpointRequest) -> OperInfoResponse:
        ep = self.endpoints.get(req.EndpointID)
        if ep is None:
            return OperInfoResponse(Value={})
        return OperInfoResponse(Value={"HostInterface": ep.host_if, "MacAddress": ep.mac,
                                       "Sandbox": ep.sandbox})

    # --- join and leave ----------------------------------------------------

    def _check_sandbox(self, eid: str, key: str) -> str:
        path = os.path.normpath(key)
        if not key.startswith("/") or path != key.rstrip("/") or \
                os.path.dirname(path) not in self.netns_dirs:
            raise InvalidRequest(f"endpoint {eid}: SandboxKey {key!r} is not inside Docker's netns"
                                 f" directory ({', '.join(self.netns_dirs)}; set PYNET_NETNS_DIRS"
                                 " for a daemon with another --exec-root)")
        return path

    async def join(self, req: JoinRequest) -> JoinResponse:
        eid = naming.short(req.EndpointID)
        net = self._network(req.NetworkID)
        ep = self.endpoints.get(req.EndpointID)
        if ep is None or ep.network_id != req.NetworkID:
            raise NotFound(f"endpoint {eid} not found on network {naming.short(req.NetworkID)}")
        sandbox = self._check_sandbox(eid, req.SandboxKey)
        if await links.get_link(self.ipr, ep.peer_if) is None:
            # Docker has not moved it yet, so it must be here: rebuild a pair that went away.
            async with self._locks[req.NetworkID]:
                net = self._network(req.NetworkID)
                if self.endpoints.get(req.EndpointID) is not ep:
                    raise NotFound(f"endpoint {eid} was deleted while joining")
                await links.delete_link(self.ipr, ep.host_if)
                await self._ensure_endpoint_kernel(net, ep)
        if ep.sandbox != sandbox:
            await self.db.write(lambda c: store.set_sandbox(c, ep.endpoint_id, sandbox))
            ep.sandbox = sandbox
        gw4, gw6 = net.gateway4, net.gateway6
        return JoinResponse(
            InterfaceName=InterfaceName(SrcName=ep.peer_if, DstPrefix="eth"),
            Gateway=str(gw4.ip) if gw4 and ep.address else "",
            GatewayIPv6=str(gw6.ip) if gw6 and ep.address6 else "")

    async def leave(self, req: EndpointRequest) -> Empty:
        ep = self.endpoints.get(req.EndpointID)
        if ep is not None and ep.sandbox:
            await self.db.write(lambda c: store.set_sandbox(c, ep.endpoint_id, ""))
            ep.sandbox = ""
        return Empty()

    async def program_external_connectivity(self, req: ProgramExternalConnectivityRequest) -> Empty:
        if (req.Options or {}).get(PORTMAP):
            raise InvalidRequest(f"endpoint {naming.short(req.EndpointID)}: publishing ports (-p) is"
                                 " not supported by this version of pynet")
        return Empty()

    async def revoke_external_connectivity(self, req: EndpointRequest) -> Empty:
        return Empty()

    # --- lookups for the IPAM's error messages -----------------------------

    async def holder_of(self, pool: IPNetwork, addr: IPAddress) -> Optional[str]:
        for ep in self.endpoints.values():
            if addr in (ep.address.ip if ep.address else None, ep.address6.ip if ep.address6 else None):
                return (f"endpoint {naming.short(ep.endpoint_id)} on network"
                        f" {naming.short(ep.network_id)}")
        for net in self.networks.values():
            for s in net.subnets:
                if s.gateway and s.gateway.ip == addr:
                    return f"the gateway of network {naming.short(net.network_id)}"
                for name, aux in s.aux.items():
                    if aux == addr:
                        return f"aux address {name!r} of network {naming.short(net.network_id)}"
        return None

    def network_using(self, pool: IPNetwork) -> Optional[str]:
        for net in self.networks.values():
            if any(s.pool == pool for s in net.subnets):
                return net.network_id
        return None


def _subnet(nid: str, data: IPAMData, version: int) -> store.Subnet:
    try:
        pool = parse_network(data.Pool, f"IPv{version}Data.Pool")
        gateway = parse_interface(data.Gateway, f"IPv{version}Data.Gateway") if data.Gateway else None
        aux = {name: parse_address(value, f"aux address {name!r}")
               for name, value in (data.AuxAddresses or {}).items()}
    except ValueError as exc:
        raise InvalidRequest(f"network {nid}: {exc}") from None
    if pool.version != version:
        raise InvalidRequest(f"network {nid}: IPv{version}Data.Pool {pool} is not IPv{version}")
    if gateway is not None and gateway.ip not in pool:
        raise InvalidRequest(f"network {nid}: gateway {gateway.ip} is outside subnet {pool}")
    for name, addr in aux.items():
        if addr not in pool:
            raise InvalidRequest(f"network {nid}: aux address {name}={addr} is outside subnet {pool}")
    return store.Subnet(pool, gateway, aux)


def _endpoint_reply(ep: store.Endpoint) -> CreateEndpointResponse:
    # Docker refuses a reply that sets a field it had set itself: only report
    # the MAC when pynet chose it.
    return CreateEndpointResponse(Interface=InterfaceReply(MacAddress=ep.mac) if ep.mac_reported else None)


async def _collect(coro) -> list[str]:
    """Run a clean-up step; return its error text instead of raising (DriverError only)."""
    try:
        await coro
    except DriverError as exc:
        return [str(exc)]
    return []
