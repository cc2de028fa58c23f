"""What publishing ports needs to know of an endpoint and its network, in
any mode: the container's addresses, its bindings, and the network's default
host address."""

from __future__ import annotations

from typing import Optional, Protocol

from ipam.addr import IPInterface

from .portmap import Binding


class NetworkOptions(Protocol):
    @property
    def host_binding_ipv4(self) -> Optional[str]: ...


class Network(Protocol):
    @property
    def options(self) -> NetworkOptions: ...


class Endpoint(Protocol):
    @property
    def endpoint_id(self) -> str: ...

    @property
    def network_id(self) -> str: ...

    @property
    def address(self) -> Optional[IPInterface]: ...

    @property
    def address6(self) -> Optional[IPInterface]: ...

    @property
    def bindings(self) -> list[Binding]: ...
