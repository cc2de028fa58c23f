"""The overlay mode: one network across hosts, a bridge on each joined by VXLAN.

`docker network create -d pynet --ipam-driver pynet -o pynet.mode=overlay
-o pynet.cluster=NAME --ipam-opt pynet.cluster=NAME --subnet ... NAME` on
each host. The first host writes the network's definition (subnets,
gateways, MTU, and a VNI it claims) to etcd; a host that asks for another
definition is refused with the difference (driver/cluster/definitions.py).

On each host the network is a bridge network of the bridge mode (its
endpoints, NAT, published ports, rules and repairs), with the gateway
address the same on every host, plus a VXLAN device on the bridge. Each
endpoint is published in etcd (driver/cluster/endpoints.py) with a MAC
derived from (VNI, address); peers program it as neighbour and forwarding
entries (peers.py).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from ipam.addr import parse_address

from .. import naming
from ..bridge.api import MTU_OPTION as MTU, BridgeNetworks, Build, OnBridgeNetworks, Step
from ..db import Database
from ..errors import Conflict, InvalidRequest
from ..rollback import Rollback
from ..kernel import links, vxlan
from ..wire import (GENERIC, CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse,
                    CreateNetworkRequest, Empty, EndpointInterface, EndpointRequest, NetworkRequest)
from ..cluster.definitions import agree, definition_of, requested, requested_mtu
from ..cluster.endpoints import Endpoints, PublishedEndpoints
from ..cluster.etcd import Etcd
from ..cluster.keys import Keys
from . import store
from .addressing import endpoint_mac
from .peers import Peers
from .quarantine import Quarantine

log = logging.getLogger("pynet.overlay")

VNI_RANGE = (4096, 1 << 24)  # below 4096: left to VLAN-minded tools


@dataclass(frozen=True)
class OverlayNetwork:
    network_id: str
    name: str
    vni: int
    device: str


def device_name(vni: int) -> str:
    return f"pnvx{vni:06x}"


def _alias(net: OverlayNetwork) -> str:
    return f"{naming.ALIAS_PREFIX}overlay:{net.network_id}"


class OverlayMode(OnBridgeNetworks, PublishedEndpoints):
    def __init__(self, bridge: BridgeNetworks, db: Database, ipr: Any, etcd: Etcd, keys: Keys,
                 endpoints: Endpoints, peers: Peers, vtep: str, mtu: int) -> None:
        self.bridge, self.db, self.ipr = bridge, db, ipr
        self.etcd, self.keys, self.endpoints, self.peers = etcd, keys, endpoints, peers
        self.vtep, self.mtu = vtep, mtu
        self.networks: dict[str, OverlayNetwork] = {}
        self._creating: set[str] = set()
        self.quarantine = Quarantine(endpoints, ipr)
        bridge.on_reclaimed(self.endpoint_reclaimed)

    async def load(self) -> None:
        rows = await self.db.read(store.load_networks)
        self.networks = {r[0]: OverlayNetwork(*r) for r in rows}
        for net in self.networks.values():
            self.peers.devices[net.name] = net.device
            self.bridge.extend(net.network_id, self._device_step(net))

    def holds(self, network_id: str) -> bool:
        return network_id in self.networks or network_id in self._creating

    async def capabilities(self) -> CapabilitiesResponse:
        # Local, not global: Docker 20.10 has no cluster store, and a Swarm manager refuses
        # legacy plugins. Each host creates the network itself; connectivity spans hosts.
        return CapabilitiesResponse(Scope="local", ConnectivityScope="global")

    # --- networks ------------------------------------------------------------------

    async def create_network(self, req: CreateNetworkRequest) -> Empty:
        nid = naming.short(req.NetworkID)
        name, options, generic = requested(req, "overlay")
        mtu = requested_mtu(generic, MTU, self.mtu, f"network {nid}", "the underlay's minus the VXLAN headers")
        if req.NetworkID in self.networks:  # a repeat: the bridge mode checks it is the same, MTU included
            return await self.bridge.create_network(self._bridge_request(req, options, generic, mtu))
        self._creating.add(req.NetworkID)
        try:
            definition = await agree(self.etcd, self.keys, name, "overlay", definition_of(req, mtu),
                                     f"network {nid}", claim=partial(self._claim_vni, name), claimed=("vni",))
            vni = definition["vni"]
            net = OverlayNetwork(req.NetworkID, name, vni, device_name(vni))
            async with Rollback(f"network {nid}") as undo:
                # The VXLAN device is one more of the bridge network's set-up steps.
                self.bridge.extend(req.NetworkID, self._device_step(net))
                undo.push(lambda: self.bridge.withdraw(req.NetworkID), "its VXLAN step")
                await self.bridge.create_network(self._bridge_request(req, options, generic, definition["mtu"]))
                undo.push(lambda: self.bridge.delete_network(NetworkRequest(NetworkID=req.NetworkID)),
                          "its bridge network")
                undo.push(lambda: self._remove_device(net), f"VXLAN device {net.device}")
                await self.db.write(lambda c: store.insert_network(c, net.network_id, name, vni, net.device))
            self.networks[req.NetworkID] = net
        finally:
            self._creating.discard(req.NetworkID)
        await self.peers.add_network(name, net.device)
        log.info("network %s: cluster network %s (VNI %d) on this host", nid, name, vni)
        return Empty()

    def _bridge_request(self, req: CreateNetworkRequest, options: dict, generic: dict,
                        mtu: int) -> CreateNetworkRequest:
        return req.model_copy(update={"Options": {**options, GENERIC: {**generic, MTU: str(mtu)}}})

    def _device_step(self, net: OverlayNetwork) -> Step:
        """The network's VXLAN device, on its bridge, at the bridge network's MTU."""
        async def device(b: Build) -> None:
            created = await vxlan.ensure_vxlan(b.ipr, net.device, net.vni, self.vtep, b.index, _alias(net),
                                               mtu=b.net.options.mtu or self.mtu)
            if created:
                b.undo.push(lambda: links.delete_link(b.ipr, net.device), f"VXLAN device {net.device}")
        return Step("VXLAN device", lambda b: True, device)

    async def _remove_device(self, net: OverlayNetwork) -> None:
        await links.delete_owned_link(self.ipr, net.device, _alias(net))

    async def ensure_device(self, net: OverlayNetwork) -> None:
        """The device there, on its bridge, up: the network's set-up steps again."""
        await self.bridge.set_up_again(net.network_id)

    async def _claim_vni(self, name: str) -> dict:
        """The first host's claim for the whole cluster: a VNI no other network holds."""
        lo, hi = VNI_RANGE
        start = lo + zlib.crc32(name.encode()) % (hi - lo)
        tx = self.etcd.tx
        for step in range(1000):
            vni = lo + (start - lo + step) % (hi - lo)
            key = self.keys.vni(vni)
            ok, answer = await self.etcd.transaction([tx.create(key) == 0], [tx.put(key, name.encode())], [tx.get(key)])
            if ok or answer[0][0][0] == name.encode():
                return {"vni": vni}
        raise Conflict(f"cluster network {name}: no free VNI found")

    async def delete_network(self, req: NetworkRequest) -> Empty:
        net = self.networks.get(req.NetworkID)
        await self.bridge.delete_network(req)
        if net is not None:
            self.bridge.withdraw(req.NetworkID)
            await self.peers.remove_network(net.name)
            await self.endpoints.unpublish_network(net.name)
            await self._remove_device(net)
            await self.db.write(lambda c: store.delete_network(c, req.NetworkID))
            self.networks.pop(req.NetworkID, None)
        return Empty()

    # --- endpoints ------------------------------------------------------------------

    async def create_endpoint(self, req: CreateEndpointRequest) -> CreateEndpointResponse:
        net = self.networks.get(req.NetworkID)
        if net is None:
            return await self.bridge.create_endpoint(req)
        eid = naming.short(req.EndpointID)
        iface = req.Interface or EndpointInterface()
        if iface.MacAddress:
            raise InvalidRequest(f"endpoint {eid}: --mac-address is not supported on cluster network {net.name}"
                                 " (its MACs follow from the addresses, the same on every host)")
        first = iface.Address or iface.AddressIPv6
        if not first:
            raise InvalidRequest(f"endpoint {eid}: cluster network {net.name} needs an address from pynet's IPAM")
        mac = endpoint_mac(net.vni, parse_address(first))
        async with Rollback(f"endpoint {eid}") as undo:
            reply = await self.bridge.create_endpoint(req.model_copy(update={
                "Interface": iface.model_copy(update={"MacAddress": mac})}))
            undo.push(lambda: self.bridge.delete_endpoint(EndpointRequest(NetworkID=req.NetworkID,
                                                                          EndpointID=req.EndpointID)),
                      "its bridge endpoint")
            await self.endpoints.publish(net.name, req.EndpointID,
                                         [a.split("/")[0] for a in (iface.Address, iface.AddressIPv6) if a], mac=mac)
        return reply

    async def local_view(self, name: str) -> Optional[dict]:
        """Its part of `pynet cluster` for cluster network `name`, if it holds it here."""
        net = next((n for n in self.networks.values() if n.name == name), None)
        if net is None:
            return None
        return {"device": net.device, "peers": await self.peers.view(name),
                "problems": self.quarantine.problems([name])}

    def names(self) -> list[str]:
        return [n.name for n in self.networks.values()]

    async def quarantine_stale(self) -> int:
        """Keep the endpoints a reclaim of this host left behind off the overlay (quarantine.py)."""
        return await self.quarantine.apply(self.names())

    async def verify(self) -> None:
        """Every overlay network's VXLAN device present, its peers as the cluster says, and
        its stale endpoints quarantined (a repaired veth is a new, open port)."""
        await self.quarantine_stale()  # first: a failure below must not leave a stale port open
        for net in list(self.networks.values()):
            await self.ensure_device(net)  # there, on its bridge, up
        await self.peers.verify()
