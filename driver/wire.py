"""NetworkDriver wire models: what Docker sends and what pynet answers.

Field names are Docker's. Requests are strict about types and tolerate extra
fields (newer engines add some); validation errors name the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Docker's IDs are 64 hex digits; they end up in interface names, so nothing else passes.
DockerID = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{12,64}$")]


GENERIC = "com.docker.network.generic"  # the CreateNetwork option holding `-o KEY=VALUE`


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActivateResponse(Response):
    Implements: list[str]


class CapabilitiesResponse(Response):
    Scope: str = "local"
    ConnectivityScope: str = "local"


class IPAMData(Request):
    AddressSpace: str = ""
    Pool: str
    Gateway: str = ""
    AuxAddresses: Optional[dict[str, str]] = None


class CreateNetworkRequest(Request):
    NetworkID: DockerID
    Options: Optional[dict[str, Any]] = None
    IPv4Data: Optional[list[IPAMData]] = None
    IPv6Data: Optional[list[IPAMData]] = None


class NetworkRequest(Request):
    NetworkID: DockerID


class EndpointInterface(Request):
    Address: str = ""
    AddressIPv6: str = ""
    MacAddress: str = ""


class CreateEndpointRequest(Request):
    NetworkID: DockerID
    EndpointID: DockerID
    Interface: Optional[EndpointInterface] = None
    Options: Optional[dict[str, Any]] = None


class InterfaceReply(Response):
    Address: Optional[str] = None
    AddressIPv6: Optional[str] = None
    MacAddress: Optional[str] = None


class CreateEndpointResponse(Response):
    Interface: Optional[InterfaceReply] = None


class EndpointRequest(Request):
    """DeleteEndpoint, EndpointOperInfo, Leave, RevokeExternalConnectivity."""
    NetworkID: DockerID
    EndpointID: DockerID


class OperInfoResponse(Response):
    Value: dict[str, Any] = Field(default_factory=dict)


class JoinRequest(Request):
    NetworkID: DockerID
    EndpointID: DockerID
    SandboxKey: str
    Options: Optional[dict[str, Any]] = None


class InterfaceName(Response):
    SrcName: str
    DstPrefix: str


class StaticRoute(Response):
    Destination: str
    RouteType: int
    NextHop: str = ""


class JoinResponse(Response):
    InterfaceName: InterfaceName
    Gateway: str = ""
    GatewayIPv6: str = ""
    StaticRoutes: list[StaticRoute] = Field(default_factory=list)
    DisableGatewayService: bool = False


class ProgramExternalConnectivityRequest(Request):
    NetworkID: DockerID
    EndpointID: DockerID
    Options: Optional[dict[str, Any]] = None


class DiscoveryRequest(Request):
    DiscoveryType: int = 0
    DiscoveryData: Any = None


class Empty(Response):
    pass
