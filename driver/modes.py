"""The one `pynet` driver in front of its network modes.

A managed plugin has one socket, so one driver name: a network's mode is
the network option `pynet.mode` (`docker network create -d pynet -o
pynet.mode=bridge ...`; bridge when not given). CreateNetwork goes to the
mode it names, without that option; every later call about a network goes
to the mode that holds it, and a call about a network no mode holds goes to
the default mode (unknown IDs in deletes succeed there).

A new mode is a package beside driver/bridge/ that implements NetworkMode
and registers itself (driver/registry.py).
"""

from __future__ import annotations

from typing import Optional, Protocol

from ipam.addr import IPAddress, IPNetwork

from . import naming
from .contract import NetworkApi
from .errors import InvalidRequest
from .wire import (GENERIC, CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest,
                   DiscoveryRequest, Empty, EndpointRequest, JoinRequest, JoinResponse, NetworkRequest,
                   OperInfoResponse, ProgramExternalConnectivityRequest)

MODE = "pynet.mode"
DEFAULT_MODE = "bridge"


class NetworkMode(NetworkApi, Protocol):
    def holds(self, network_id: str) -> bool:
        """Whether this mode has (or is creating) the network."""
        ...

    # What the IPAM asks the network side, for its messages and reclaims.
    async def holder_of(self, pool: IPNetwork, addr: IPAddress) -> Optional[str]: ...

    def network_using(self, pool: IPNetwork) -> Optional[str]: ...

    async def address_released(self, pool: IPNetwork, addr: IPAddress) -> None: ...

    def holders(self) -> dict[IPAddress, tuple[str, str]]:
        """Every address its networks and endpoints hold: address -> (network ID, who)."""
        ...


class Modes:
    def __init__(self, modes: dict[str, NetworkMode], default: str = DEFAULT_MODE,
                 off: Optional[dict[str, str]] = None) -> None:
        """`modes` in the order they started: a mode that builds on another starts after it,
        and holds networks the one under it holds too, so it is asked first. `off`: the
        modes registered but not running here, each with what turns it on."""
        if default not in modes:
            raise ValueError(f"default mode {default!r} is not among {sorted(modes)}")
        self.modes = modes
        self.default = default
        self.off = off or {}
        self._asked = list(reversed(modes.values()))

    def mode_of(self, network_id: str) -> NetworkMode:
        for mode in self._asked:
            if mode.holds(network_id):
                return mode
        return self.modes[self.default]

    def _chosen(self, req: CreateNetworkRequest) -> tuple[NetworkMode, CreateNetworkRequest]:
        options = req.Options or {}
        generic = options.get(GENERIC)
        if not isinstance(generic, dict) or MODE not in generic:
            return self.modes[self.default], req  # the mode checks the options, malformed ones too
        name = generic[MODE]
        if isinstance(name, str) and name in self.off:
            raise InvalidRequest(f"network {naming.short(req.NetworkID)}: -o {MODE}={name} needs {self.off[name]};"
                                 " this pynet runs without them")
        if not isinstance(name, str) or name not in self.modes:
            raise InvalidRequest(f"network {naming.short(req.NetworkID)}: unknown -o {MODE}={name!r}"
                                 f" (pynet's modes: {', '.join(sorted(self.modes))})")
        rest = {key: value for key, value in generic.items() if key != MODE}
        return self.modes[name], req.model_copy(update={"Options": {**options, GENERIC: rest}})

    # --- Docker's calls ------------------------------------------------------

    async def capabilities(self) -> CapabilitiesResponse:
        """The default mode's, with global connectivity if any mode spans hosts."""
        answer = await self.modes[self.default].capabilities()
        for mode in self.modes.values():
            if (await mode.capabilities()).ConnectivityScope == "global":
                return answer.model_copy(update={"ConnectivityScope": "global"})
        return answer

    async def create_network(self, req: CreateNetworkRequest) -> Empty:
        mode, req = self._chosen(req)
        return await mode.create_network(req)

    async def delete_network(self, req: NetworkRequest) -> Empty:
        return await self.mode_of(req.NetworkID).delete_network(req)

    async def create_endpoint(self, req: CreateEndpointRequest) -> CreateEndpointResponse:
        return await self.mode_of(req.NetworkID).create_endpoint(req)

    async def delete_endpoint(self, req: EndpointRequest) -> Empty:
        return await self.mode_of(req.NetworkID).delete_endpoint(req)

    async def oper_info(self, req: EndpointRequest) -> OperInfoResponse:
        return await self.mode_of(req.NetworkID).oper_info(req)

    async def join(self, req: JoinRequest) -> JoinResponse:
        return await self.mode_of(req.NetworkID).join(req)

    async def leave(self, req: EndpointRequest) -> Empty:
        return await self.mode_of(req.NetworkID).leave(req)

    async def program_external_connectivity(self, req: ProgramExternalConnectivityRequest) -> Empty:
        return await self.mode_of(req.NetworkID).program_external_connectivity(req)

    async def revoke_external_connectivity(self, req: EndpointRequest) -> Empty:
        return await self.mode_of(req.NetworkID).revoke_external_connectivity(req)

    async def discover_new(self, req: DiscoveryRequest) -> Empty:
        for mode in self.modes.values():
            await mode.discover_new(req)
        return Empty()

    async def discover_delete(self, req: DiscoveryRequest) -> Empty:
        for mode in self.modes.values():
            await mode.discover_delete(req)
        return Empty()

    # --- what the IPAM asks --------------------------------------------------

    async def holder_of(self, pool: IPNetwork, addr: IPAddress) -> Optional[str]:
        for mode in self.modes.values():
            holder = await mode.holder_of(pool, addr)
            if holder:
                return holder
        return None

    def network_using(self, pool: IPNetwork) -> Optional[str]:
        return next((nid for mode in self.modes.values() if (nid := mode.network_using(pool))), None)

    def holders(self) -> dict[IPAddress, tuple[str, str]]:
        return {addr: who for mode in self.modes.values() for addr, who in mode.holders().items()}

    async def address_released(self, pool: IPNetwork, addr: IPAddress) -> None:
        for mode in self.modes.values():
            await mode.address_released(pool, addr)
