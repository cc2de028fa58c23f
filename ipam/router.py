"""pynet's one IPAM in front of two: the host's own pools, and (with pynet's
cluster settings) the cluster networks' pools, whose addresses are unique
across hosts. A pool is the cluster's when RequestPool names a cluster
network (--ipam-opt pynet.cluster=NAME); every later call follows its pool ID."""

from __future__ import annotations

from typing import Callable, Optional

from .contract import IpamApi
from .errors import InvalidRequest
from .wire import (AddressSpacesResponse, CapabilitiesResponse, Empty, ReleaseAddressRequest, ReleasePoolRequest,
                   RequestAddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse)

CLUSTER_OPTION = "pynet.cluster"


class IpamRouter:
    def __init__(self, local: IpamApi, cluster: Optional[IpamApi], is_cluster_pool: Callable[[str], bool]) -> None:
        self.local, self.cluster, self.is_cluster_pool = local, cluster, is_cluster_pool

    def _for(self, pool_id: str) -> IpamApi:
        if self.cluster is not None and self.is_cluster_pool(pool_id):
            return self.cluster
        return self.local

    async def capabilities(self) -> CapabilitiesResponse:
        return await self.local.capabilities()

    async def address_spaces(self) -> AddressSpacesResponse:
        return await self.local.address_spaces()

    async def request_pool(self, req: RequestPoolRequest) -> RequestPoolResponse:
        if CLUSTER_OPTION not in (req.Options or {}):
            return await self.local.request_pool(req)
        if self.cluster is None:
            raise InvalidRequest(f"--ipam-opt {CLUSTER_OPTION}: cluster networks need pynet's cluster settings"
                                 " (--etcd-endpoints and --vtep, or PYNET_ETCD_ENDPOINTS and PYNET_VTEP)")
        return await self.cluster.request_pool(req)

    async def release_pool(self, req: ReleasePoolRequest) -> Empty:
        return await self._for(req.PoolID).release_pool(req)

    async def request_address(self, req: RequestAddressRequest) -> RequestAddressResponse:
        return await self._for(req.PoolID).request_address(req)

    async def release_address(self, req: ReleaseAddressRequest) -> Empty:
        return await self._for(req.PoolID).release_address(req)
