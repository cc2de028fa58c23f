"""What the plugin server needs of a network driver: Docker's NetworkDriver
API, one async method per call (../shared/reference/docker-plugin-api.md).

The server is typed against this Protocol, not against a concrete driver,
and so are the tests' fakes: a network mode (the bridge today) implements
it, and so does anything that stands in front of modes.
"""

from __future__ import annotations

from typing import Protocol

from .wire import (CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest,
                   DiscoveryRequest, Empty, EndpointRequest, JoinRequest, JoinResponse, NetworkRequest,
                   OperInfoResponse, ProgramExternalConnectivityRequest)


class NetworkApi(Protocol):
    async def capabilities(self) -> CapabilitiesResponse: ...

    async def create_network(self, req: CreateNetworkRequest) -> Empty: ...

    async def delete_network(self, req: NetworkRequest) -> Empty: ...

    async def create_endpoint(self, req: CreateEndpointRequest) -> CreateEndpointResponse: ...

    async def delete_endpoint(self, req: EndpointRequest) -> Empty: ...

    async def oper_info(self, req: EndpointRequest) -> OperInfoResponse: ...

    async def join(self, req: JoinRequest) -> JoinResponse: ...

    async def leave(self, req: EndpointRequest) -> Empty: ...

    async def program_external_connectivity(self, req: ProgramExternalConnectivityRequest) -> Empty: ...

    async def revoke_external_connectivity(self, req: EndpointRequest) -> Empty: ...

    async def discover_new(self, req: DiscoveryRequest) -> Empty: ...

    async def discover_delete(self, req: DiscoveryRequest) -> Empty: ...
