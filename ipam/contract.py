"""What the plugin server needs of an IPAM: Docker's IpamDriver API, one
async method per call. IpamService implements it; the tests' fakes and the
server are typed against this Protocol."""

from __future__ import annotations

from typing import Protocol

from .wire import (AddressSpacesResponse, CapabilitiesResponse, Empty, ReleaseAddressRequest,
                   ReleasePoolRequest, RequestAddressRequest, RequestAddressResponse, RequestPoolRequest,
                   RequestPoolResponse)


class IpamApi(Protocol):
    async def capabilities(self) -> CapabilitiesResponse: ...

    async def address_spaces(self) -> AddressSpacesResponse: ...

    async def request_pool(self, req: RequestPoolRequest) -> RequestPoolResponse: ...

    async def release_pool(self, req: ReleasePoolRequest) -> Empty: ...

    async def request_address(self, req: RequestAddressRequest) -> RequestAddressResponse: ...

    async def release_address(self, req: ReleaseAddressRequest) -> Empty: ...
