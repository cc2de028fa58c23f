"""What the bridge mode offers a mode that builds on its networks.

A mode that builds on bridge networks (the overlay: a bridge network on
each host, joined by VXLAN) passes Docker's calls on to the bridge mode and
adds set-up steps of its own to a network: they run after the bridge's
steps, under the same Rollback, whenever the network is set up (its
creation, a repeat, a repair after a reboot). It may add firewall rules
too, made from the network's policy: they stand before the network's own in
its group, installed, checked and removed with them. It reads nothing else
of the bridge mode: no records, no handles.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Optional, Protocol

from ipam.addr import IPAddress, IPNetwork

from ..chains import Rule
from ..contract import NetworkApi
from ..wire import (DiscoveryRequest, Empty, EndpointRequest, JoinRequest, JoinResponse, OperInfoResponse,
                    ProgramExternalConnectivityRequest)
from .network_rules import AddedRules, NetworkPolicy
from .options import MTU as MTU_OPTION
from .setup import Build, Step

__all__ = ["AddedRules", "BridgeNetworks", "Build", "MTU_OPTION", "NetworkPolicy", "OnBridgeNetworks", "Rule", "Step"]


class BridgeNetworks(NetworkApi, Protocol):
    def extend(self, network_id: str, step: Optional[Step] = None, rules: Optional[AddedRules] = None) -> None:
        """Run `step` too whenever the network is set up, and put `rules(policy)` before
        the network's own rules, from now on (in memory: the mode that adds them adds
        them again when it loads, before the firewall's first check)."""
        ...

    def withdraw(self, network_id: str) -> None:
        """Forget the steps and rules added to the network (after its deletion)."""
        ...

    def on_reclaimed(self, told: Callable[[str, str], Awaitable[None]]) -> None:
        """`told(network ID, endpoint ID)` after the bridge mode drops an endpoint Docker no
        longer has (its container gone while pynet could not hear it): what a mode keeps of
        it elsewhere (a cluster's record) goes too. No DeleteEndpoint comes for it."""
        ...

    async def set_up_again(self, network_id: str) -> bool:
        """Run a saved network's set-up steps, its own and those added, without its
        firewall rules (the firewall check keeps those); False if there is no such network."""
        ...


class OnBridgeNetworks:
    """What a mode built on bridge networks passes on unchanged: the calls on an
    endpoint that its bridge network answers whole, and the IPAM's questions,
    which the bridge mode answers for every network (its own and those built on it)."""

    bridge: BridgeNetworks

    async def discover_new(self, req: DiscoveryRequest) -> Empty:
        return Empty()

    async def discover_delete(self, req: DiscoveryRequest) -> Empty:
        return Empty()

    async def oper_info(self, req: EndpointRequest) -> OperInfoResponse:
        return await self.bridge.oper_info(req)

    async def join(self, req: JoinRequest) -> JoinResponse:
        return await self.bridge.join(req)

    async def leave(self, req: EndpointRequest) -> Empty:
        return await self.bridge.leave(req)

    async def program_external_connectivity(self, req: ProgramExternalConnectivityRequest) -> Empty:
        return await self.bridge.program_external_connectivity(req)

    async def revoke_external_connectivity(self, req: EndpointRequest) -> Empty:
        return await self.bridge.revoke_external_connectivity(req)

    async def holder_of(self, pool: IPNetwork, addr: IPAddress) -> Optional[str]:
        return None

    def network_using(self, pool: IPNetwork) -> Optional[str]:
        return None

    async def address_released(self, pool: IPNetwork, addr: IPAddress) -> None:
        return None

    def holders(self) -> dict[IPAddress, tuple[str, str]]:
        return {}
