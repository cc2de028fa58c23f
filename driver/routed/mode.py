"""The routed mode: one network across hosts without encapsulation.

`docker network create -d pynet --ipam-driver pynet -o pynet.mode=routed
-o pynet.cluster=NAME --ipam-opt pynet.cluster=NAME --subnet ... NAME` on
each host. The network's definition is agreed in etcd as the overlay's is
(driver/cluster/definitions.py), with its mode: a name is routed or overlay
across the cluster, never both.

On each host the network is a bridge network of the bridge mode (its
endpoints, NAT, published ports, rules and repairs), with the gateway
address the same on every host, and two additions (rules.py): proxy ARP on
the bridge, so a container's ARP for a remote address is answered by its
host, and firewall rules for the subnet's traffic between the bridge and
the underlay. Each host hands out addresses from blocks of the subnet the
cluster IPAM gives it; each endpoint is published in etcd, and every other
host routes its address through this host's underlay address (routes.py).
The packets travel as they are: the MTU is the underlay's. The hosts must
share one L2 segment; one that does not is reported, never blackholed.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ipam.service import CLUSTER_OPTION


from .. import naming
from ..bridge.api import MTU_OPTION as MTU, BridgeNetworks, Build, OnBridgeNetworks, Step
from ..cluster.definitions import agree, definition_of, requested, requested_mtu
from ..cluster.endpoints import Endpoints, PublishedEndpoints
from ..cluster.etcd import Etcd
from ..cluster.keys import Keys
from ..db import Database
from ..errors import InvalidRequest, KernelError
from ..rollback import Rollback
from ..wire import (GENERIC, CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse,
                    CreateNetworkRequest, Empty, EndpointInterface, EndpointRequest, NetworkRequest)
from . import store
from .routes import Routes
from .rules import cross_host_rules, routed_sysctls

log = logging.getLogger("pynet.routed")


@dataclass(frozen=True)
class RoutedNetwork:
    network_id: str
    name: str


class RoutedMode(OnBridgeNetworks, PublishedEndpoints):
    def __init__(self, bridge: BridgeNetworks, db: Database, etcd: Etcd, keys: Keys, endpoints: Endpoints,
                 routes: Routes, underlay: str, mtu: int, pools: Callable[[str, str], bool],
                 underlay_version: int = 4) -> None:
        self.bridge, self.db, self.pools = bridge, db, pools  # pools(name, subnet): from the cluster's?
        self.etcd, self.keys, self.endpoints, self.routes = etcd, keys, endpoints, routes
        self.underlay, self.mtu = underlay, mtu  # the underlay's interface and MTU
        self.underlay_version = underlay_version
        self.networks: dict[str, RoutedNetwork] = {}
        self._creating: set[str] = set()
        bridge.on_reclaimed(self.endpoint_reclaimed)

    async def load(self) -> None:
        for network_id, name in await self.db.read(store.load_networks):
            self.networks[network_id] = RoutedNetwork(network_id, name)
            self._extend(network_id)
            self.routes.held.add(name)  # routes follow once the cluster's records are read

    def _extend(self, network_id: str) -> None:
        self.bridge.extend(network_id, Step("proxy ARP", lambda b: True, _proxy_arp),
                           cross_host_rules(self.underlay))

    def holds(self, network_id: str) -> bool:
        return network_id in self.networks or network_id in self._creating

    async def capabilities(self) -> CapabilitiesResponse:
        # As the overlay's: each host creates the network itself; connectivity spans hosts.
        return CapabilitiesResponse(Scope="local", ConnectivityScope="global")

    # --- networks ------------------------------------------------------------------

    async def create_network(self, req: CreateNetworkRequest) -> Empty:
        nid = naming.short(req.NetworkID)
        name, options, generic = requested(req, "routed")
        if self.underlay_version != 4:
            raise InvalidRequest(f"network {nid}: the routed mode routes over an IPv4 underlay, and this host's"
                                 f" underlay address is IPv{self.underlay_version} (--vtep); use"
                                 " -o pynet.mode=overlay")
        if req.IPv6Data:
            raise InvalidRequest(f"network {nid}: the routed mode carries IPv4 only (IPv6 would need a proxy"
                                 " neighbour entry per remote address); use -o pynet.mode=overlay for IPv6")
        for data in req.IPv4Data or []:
            if not self.pools(name, str(ipaddress.ip_network(data.Pool, strict=False))):
                raise InvalidRequest(f"network {nid}: subnet {data.Pool} of routed cluster network {name} is not"
                                     f" from the cluster's pools (another host could hand out the same addresses):"
                                     f" create it with --ipam-driver pynet --ipam-opt {CLUSTER_OPTION}={name}")
        mtu = requested_mtu(generic, MTU, self.mtu, f"network {nid}",
                            "the underlay's: packets travel unencapsulated")
        bridge_req = req.model_copy(update={"Options": {**options, GENERIC: {**generic, MTU: str(mtu)}}})
        if req.NetworkID in self.networks:  # a repeat: the bridge mode checks it is the same
            return await self.bridge.create_network(bridge_req)
        self._creating.add(req.NetworkID)
        try:
            await agree(self.etcd, self.keys, name, "routed", definition_of(req, mtu), f"network {nid}")
            async with Rollback(f"network {nid}") as undo:
                self._extend(req.NetworkID)
                undo.push(lambda: self.bridge.withdraw(req.NetworkID), "its proxy ARP step and rules")
                await self.bridge.create_network(bridge_req)
                undo.push(lambda: self.bridge.delete_network(NetworkRequest(NetworkID=req.NetworkID)),
                          "its bridge network")
                await self.db.write(lambda c: store.insert_network(c, req.NetworkID, name))
            self.networks[req.NetworkID] = RoutedNetwork(req.NetworkID, name)
        finally:
            self._creating.discard(req.NetworkID)
        await self.routes.add_network(name)
        log.info("network %s: routed cluster network %s on this host (MTU %d, peers through %s)", nid, name,
                 mtu, self.underlay)
        return Empty()

    async def delete_network(self, req: NetworkRequest) -> Empty:
        net = self.networks.get(req.NetworkID)
        try:
            await self.bridge.delete_network(req)
        finally:
            # Even when the bridge's clean-up failed (its record is gone all the same),
            # this network is no longer here: its routes, rules and record go.
            if net is not None:
                self.bridge.withdraw(req.NetworkID)
                self.networks.pop(req.NetworkID, None)
                if not any(n.name == net.name for n in self.networks.values()):
                    await self.routes.remove_network(net.name)
                    await self.endpoints.unpublish_network(net.name)
                await self.db.write(lambda c: store.delete_network(c, req.NetworkID))
        return Empty()

    # --- endpoints ------------------------------------------------------------------

    async def create_endpoint(self, req: CreateEndpointRequest) -> CreateEndpointResponse:
        net = self.networks.get(req.NetworkID)
        if net is None:
            return await self.bridge.create_endpoint(req)
        iface = req.Interface or EndpointInterface()
        if not iface.Address:
            raise InvalidRequest(f"endpoint {naming.short(req.EndpointID)}: routed network {net.name} needs an"
                                 " IPv4 address from pynet's IPAM")
        async with Rollback(f"endpoint {naming.short(req.EndpointID)}") as undo:
            reply = await self.bridge.create_endpoint(req)
            undo.push(lambda: self.bridge.delete_endpoint(EndpointRequest(NetworkID=req.NetworkID,
                                                                          EndpointID=req.EndpointID)),
                      "its bridge endpoint")
            await self.endpoints.publish(net.name, req.EndpointID, [iface.Address.split("/")[0]])
        return reply

    # --- views and verification ---------------------------------------------------------

    async def local_view(self, name: str) -> Optional[dict[str, Any]]:
        """Its part of `pynet cluster` for cluster network `name`, if it holds it here."""
        if name not in self.routes.held:
            return None
        return {"device": self.underlay, "peers": await self.routes.view(name),
                "problems": self.routes.problems(name)}

    async def verify(self) -> None:
        """Every routed network's bridge set up (proxy ARP included), and its routes as the cluster says."""
        for net in list(self.networks.values()):
            try:
                await self.bridge.set_up_again(net.network_id)
            except Exception as exc:  # noqa: BLE001 - the routes are checked all the same
                log.error("network %s: setting it up again failed: %s", naming.short(net.network_id), exc)
        await self.routes.verify()


async def _proxy_arp(b: Build) -> None:
    """The bridge answers ARP for the addresses the host routes elsewhere (rules.py)."""
    for key, value in routed_sysctls(b.net.bridge):
        problem = await b.sysctl.ensure(key, value)
        if problem:
            raise KernelError(f"network {naming.short(b.net.network_id)}: {problem}: a routed network needs it"
                              " (containers could not reach those on other hosts)")
