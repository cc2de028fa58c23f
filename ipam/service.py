"""IPAM decisions and their persistence: pynet's one IPAM.

The host's own pools: each decision is made in memory with no await in
between (so concurrent calls see each other's results), then written in one
transaction before the reply; if the write fails the decision is undone.

The pools of cluster networks (RequestPool with --ipam-opt pynet.cluster=NAME,
when pynet has its cluster settings): their addresses are unique across
hosts, so a store the hosts share decides (store.SharedIpamStore); this
service reads and checks Docker's requests for them as for the others, and
every later call follows the pool ID.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

from .addr import IPAddress, IPNetwork, address_value, make_address, parse_address, parse_network
from .allocator import PoolAllocator
from .errors import (AddressInUse, InvalidRequest, IpamError, PoolExhausted, PoolNotFound,
                     PoolOverlap)
from .pools import DefaultPool, choose_pool
from .store import IpamStore, SharedIpamStore
from .wire import (AddressSpacesResponse, CapabilitiesResponse, Empty, ReleaseAddressRequest,
                   ReleasePoolRequest, RequestAddressRequest, RequestAddressResponse,
                   RequestPoolRequest, RequestPoolResponse)

log = logging.getLogger("pynet.ipam")

LOCAL_SPACE = "PynetLocal"
GLOBAL_SPACE = "PynetGlobal"
GATEWAY_TYPE = "com.docker.network.gateway"
CLUSTER_OPTION = "pynet.cluster"  # --ipam-opt: the pool is a cluster network's, of that name
# --ipam-opt keys pynet understands. Keys under com.docker. are Docker's own
# and are accepted and ignored.
IPAM_OPTIONS: dict[str, str] = {}


# Who holds an address or a pool, for error messages: answered by the driver,
# which knows endpoints and networks. None when nobody is known to.
HolderLookup = Callable[[IPNetwork, IPAddress], Awaitable[Optional[str]]]
PoolUserLookup = Callable[[IPNetwork], Optional[str]]
RouteSource = Callable[[], Awaitable[list[IPNetwork]]]
# Told of every address Docker releases, so the driver can drop an endpoint
# Docker has forgotten without telling it (see driver/modes.py, address_released).
ReleaseHook = Callable[[IPNetwork, IPAddress], Awaitable[None]]


@dataclass
class Pool:
    pool_id: str
    address_space: str
    allocator: PoolAllocator
    options: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)  # address -> kind, for gateway/static only

    @property
    def network(self) -> IPNetwork:
        return self.allocator.pool


def pool_id_for(address_space: str, pool: IPNetwork, sub_pool: Optional[IPNetwork]) -> str:
    """Deterministic: Docker stores it for ever, and a replay must get the same one."""
    return f"{address_space}/{pool}" + (f"/{sub_pool}" if sub_pool else "")


class IpamService:
    def __init__(self, store: IpamStore, defaults: list[DefaultPool],
                 host_routes: Optional[RouteSource] = None,
                 holder_of: Optional[HolderLookup] = None,
                 network_using: Optional[PoolUserLookup] = None,
                 on_release: Optional[ReleaseHook] = None, shared: Optional[SharedIpamStore] = None,
                 shared_needs: str = "pynet's cluster settings") -> None:
        self.store = store
        self.shared = shared  # the cluster networks' pools
        self._shared_needs = shared_needs  # what turns cluster pools on, for the refusal without them
        self._shared_locks: dict[str, asyncio.Lock] = {}  # a shared pool's claims take turns here
        self.defaults = defaults
        self._host_routes = host_routes
        self._holder_of = holder_of
        self._network_using = network_using or (lambda net: None)
        self._on_release = on_release
        self.pools: dict[str, Pool] = {}

    async def load(self) -> None:
        rows = await self.store.load_pools()
        for row in rows:
            sub = parse_network(row.sub_pool) if row.sub_pool else None
            cursor = int(row.cursor) if row.cursor else None
            alloc = PoolAllocator(parse_network(row.pool), sub, cursor)
            pool = Pool(row.pool_id, row.address_space, alloc, row.options)
            values: dict[int, str] = {}
            others = []  # not as pynet writes addresses: held one by one, with a reason if refused
            for address, kind in row.addresses:
                value = address_value(address, alloc.pool.version)
                if value is None:
                    others.append((address, kind))
                else:
                    values[value] = kind  # one row per address (the table's key)
            for value in alloc.hold_saved(list(values)):
                log.warning("pool %s: saved address %s skipped: not a usable address of %s",
                            row.pool_id, make_address(value, alloc.pool.version), alloc.pool)
                values.pop(value, None)
            for address, kind in others:
                try:
                    addr = alloc.reserve(parse_address(address))
                except (IpamError, ValueError) as exc:  # a row that can no longer be held: say so
                    log.warning("pool %s: saved address %s skipped: %s", row.pool_id, address, exc)
                    continue
                values[int(addr)] = kind
            for value, kind in values.items():
                if kind != "dynamic":
                    pool.kinds[make_address(value, alloc.pool.version)] = kind
            self.pools[row.pool_id] = pool
        log.info("ipam: loaded %d pools, %d addresses", len(self.pools),
                 sum(p.allocator.used_total for p in self.pools.values()))

    # --- capabilities ------------------------------------------------------

    async def capabilities(self) -> CapabilitiesResponse:
        # pynet persists its own state, so Docker need not replay its requests.
        return CapabilitiesResponse(RequiresMACAddress=False, RequiresRequestReplay=False)

    async def address_spaces(self) -> AddressSpacesResponse:
        return AddressSpacesResponse(LocalDefaultAddressSpace=LOCAL_SPACE,
                                     GlobalDefaultAddressSpace=GLOBAL_SPACE)

    # --- pools -------------------------------------------------------------

    async def request_pool(self, req: RequestPoolRequest) -> RequestPoolResponse:
        space = req.AddressSpace or LOCAL_SPACE
        if space not in (LOCAL_SPACE, GLOBAL_SPACE):
            raise InvalidRequest(f"address space {space!r} is unknown to pynet"
                                 f" (known: {LOCAL_SPACE}, {GLOBAL_SPACE})")
        if CLUSTER_OPTION in (req.Options or {}):
            return await self._request_shared_pool(req)
        options = check_pool_options(req.Options or {})
        version = 6 if req.V6 else 4
        try:
            subnet = parse_network(req.Pool) if req.Pool else None
            sub_pool = parse_network(req.SubPool, "ip-range") if req.SubPool else None
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if sub_pool is not None and subnet is None:
            raise InvalidRequest(f"ip-range {sub_pool} needs a --subnet")
        if subnet is not None and subnet.version != version:
            raise InvalidRequest(f"subnet {subnet} is not an IPv{version} network")
        # subnet_of() of different versions is checked first: the stubs cannot see it.
        if subnet is not None and sub_pool is not None and (
                sub_pool.version != subnet.version
                or not sub_pool.subnet_of(subnet)):  # type: ignore[arg-type]
            raise InvalidRequest(f"ip-range {sub_pool} is not inside subnet {subnet}")

        if subnet is None:
            routes = await self._routes()  # before deciding: no await between choice and hold
            taken = [p.network for p in self.pools.values()] + routes
            subnet = choose_pool(self.defaults, version, taken)
        else:
            # A held pool is never given twice: two networks sharing one would lose
            # it together. (Docker retries a call it got no answer to with an
            # empty body, which is refused before this.)
            self._check_overlap(subnet)

        pool_id = pool_id_for(space, subnet, sub_pool)
        pool = Pool(pool_id, space, PoolAllocator(subnet, sub_pool), options)
        self.pools[pool_id] = pool
        try:
            await self.store.insert_pool(pool_id, space, str(subnet), str(sub_pool or ""), options)
        except BaseException:
            self.pools.pop(pool_id, None)
            raise
        log.info("pool %s: requested (%s)", pool_id, "auto" if not req.Pool else "explicit")
        return RequestPoolResponse(PoolID=pool_id, Pool=str(subnet))

    def _check_overlap(self, subnet: IPNetwork) -> None:
        for other in self.pools.values():
            net = other.network
            if net.version == subnet.version and net.overlaps(subnet):
                user = self._network_using(net)
                holder = f"network {user[:12]}" if user else f"pool {other.pool_id}"
                raise PoolOverlap(f"subnet {subnet} overlaps {holder} ({net})")

    async def _routes(self) -> list[IPNetwork]:
        if self._host_routes is None:
            return []
        return await self._host_routes()

    async def _request_shared_pool(self, req: RequestPoolRequest) -> RequestPoolResponse:
        if self.shared is None:
            raise InvalidRequest(f"--ipam-opt {CLUSTER_OPTION}: cluster networks need {self._shared_needs}")
        name = cluster_name(req.Options or {}, "pool")
        if name is None:
            raise InvalidRequest(f"--ipam-opt {CLUSTER_OPTION}: the cluster network's name is missing")
        what = f"cluster network {name}"
        if not req.Pool:
            raise InvalidRequest(f"{what}: --subnet is needed (every host names the same subnet)")
        try:
            subnet = parse_network(req.Pool)
            sub_pool = parse_network(req.SubPool, "ip-range") if req.SubPool else None
        except ValueError as exc:
            raise InvalidRequest(f"{what}: {exc}") from None
        if subnet.version != (6 if req.V6 else 4):
            raise InvalidRequest(f"{what}: subnet {subnet} is not an IPv{6 if req.V6 else 4} network")
        pool_id = await self.shared.define_pool(name, subnet, sub_pool)
        log.info("pool %s: requested", pool_id)
        return RequestPoolResponse(PoolID=pool_id, Pool=str(subnet))

    def _shared_pool(self, pool_id: str) -> Optional[IPNetwork]:
        """The subnet of a pool of the shared store's; None for the host's own pools.
        A shared pool this host no longer holds is not found."""
        if self.shared is None or not self.shared.holds_pool(pool_id):
            return None
        subnet = self.shared.subnet(pool_id)
        if subnet is None:
            raise PoolNotFound(f"pool {pool_id!r} not found (was it released?)")
        return subnet

    async def release_pool(self, req: ReleasePoolRequest) -> Empty:
        if self.shared is not None and self.shared.holds_pool(req.PoolID):
            async with self._shared_locks.setdefault(req.PoolID, asyncio.Lock()):
                await self.shared.release_pool(req.PoolID)
            self._shared_locks.pop(req.PoolID, None)
            return Empty()
        pool = self.pools.pop(req.PoolID, None)
        if pool is None:
            return Empty()  # releases are idempotent
        try:
            await self.store.delete_pool(req.PoolID)
        except BaseException:
            self.pools[req.PoolID] = pool
            raise
        log.info("pool %s: released", req.PoolID)
        return Empty()

    # --- addresses ---------------------------------------------------------

    def _pool(self, pool_id: str) -> Pool:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise PoolNotFound(f"pool {pool_id!r} not found (was it released?)")
        return pool

    async def request_address(self, req: RequestAddressRequest) -> RequestAddressResponse:
        subnet = self._shared_pool(req.PoolID)
        if subnet is not None:
            return await self._request_shared_address(req, subnet)
        pool = self._pool(req.PoolID)
        gateway, asked = _what_is_asked(req)
        alloc = pool.allocator
        if asked is not None:
            addr = asked
            try:
                alloc.reserve(addr)
            except AddressInUse:
                holder = await self._describe_holder(pool, addr)
                raise AddressInUse(f"address {addr} is already in use by {holder}"
                                   f" (pool {pool.network})") from None
            except IpamError as exc:
                raise type(exc)(f"pool {pool.pool_id}: {exc}") from None
            kind, cursor = ("gateway" if gateway else "static"), None
        else:
            try:
                addr = alloc.allocate()
            except PoolExhausted as exc:
                raise PoolExhausted(f"pool {pool.pool_id}: {exc}") from None
            kind, cursor = ("gateway" if gateway else "dynamic"), alloc.cursor
        if kind != "dynamic":
            pool.kinds[addr] = kind
        try:
            await self.store.claim_address(pool.pool_id, str(addr), kind, cursor)
        except BaseException:
            alloc.release(addr)
            pool.kinds.pop(addr, None)
            raise
        return RequestAddressResponse(Address=f"{addr}/{pool.network.prefixlen}")

    async def _describe_holder(self, pool: Pool, addr: IPAddress) -> str:
        if self._holder_of is not None:
            holder = await self._holder_of(pool.network, addr)
            if holder:
                return holder
        kind = pool.kinds.get(addr)
        if kind == "gateway":
            return "the gateway"
        if kind == "static":
            return "an explicitly requested address (--ip or --aux-address)"
        return "an automatically allocated address"

    async def _request_shared_address(self, req: RequestAddressRequest, subnet: IPNetwork) -> RequestAddressResponse:
        assert self.shared is not None
        pool_id = req.PoolID
        gateway, asked = _what_is_asked(req)
        if asked is not None and asked not in subnet:
            raise InvalidRequest(f"pool {pool_id}: address {asked} is outside {subnet}")
        async with self._shared_locks.setdefault(pool_id, asyncio.Lock()):
            if gateway:
                addr = await self.shared.gateway(pool_id, asked)
            elif asked is not None:
                await self.shared.claim(pool_id, asked)
                addr = asked
            else:
                addr = await self.shared.claim_next(pool_id)
        return RequestAddressResponse(Address=f"{addr}/{subnet.prefixlen}")

    async def release_address(self, req: ReleaseAddressRequest) -> Empty:
        if self.shared is not None and self.shared.holds_pool(req.PoolID):
            # No on_release here: an endpoint of a cluster network is also a record in
            # etcd, which only its mode removes; the modes' reconciliation covers those.
            async with self._shared_locks.setdefault(req.PoolID, asyncio.Lock()):
                await self.shared.release(req.PoolID, _released_address(req))
            return Empty()
        pool = self.pools.get(req.PoolID)
        if pool is None:
            return Empty()
        addr = _released_address(req)
        if not pool.allocator.release(addr):
            return Empty()
        kind = pool.kinds.pop(addr, None)
        try:
            await self.store.release_address(pool.pool_id, str(addr))
        except BaseException:
            pool.allocator.reserve(addr)
            if kind:
                pool.kinds[addr] = kind
            raise
        if self._on_release is not None:
            await self._on_release(pool.network, addr)
        return Empty()


    # --- reclaiming what Docker forgot ----------------------------------------

    def _pool_of(self, subnet: IPNetwork) -> Optional[Pool]:
        return next((p for p in self.pools.values() if p.network == subnet), None)

    async def unheld(self, subnet: IPNetwork, held: set[IPAddress], min_age: float) -> list[IPAddress]:
        """Addresses of `subnet`'s pool that are not in `held`.

        Only addresses handed to containers (not gateways) older than
        `min_age` seconds: a younger one may belong to a container Docker is
        starting right now.
        """
        pool = self._pool_of(subnet)
        if pool is None:
            return []
        rows = await self.store.addresses_older_than(pool.pool_id, min_age)
        return [addr for addr, kind in ((parse_address(t), k) for t, k in rows)
                if kind != "gateway" and addr not in held]

    async def allocated(self) -> list[tuple[str, str, str]]:
        """(pool ID, address, kind) of every address held, from the saved state."""
        return await self.store.all_addresses()

    async def release_in(self, subnet: IPNetwork, addr: IPAddress) -> None:
        """Release an address of `subnet`'s pool, as if Docker had."""
        pool = self._pool_of(subnet)
        if pool is not None:
            await self.release_address(ReleaseAddressRequest(PoolID=pool.pool_id, Address=str(addr)))
            log.warning("pool %s: address %s released: no endpoint holds it", pool.pool_id, addr)


def _what_is_asked(req: RequestAddressRequest) -> tuple[bool, Optional[IPAddress]]:
    """(whether it is the gateway, the address asked for if any)."""
    gateway = (req.Options or {}).get("RequestAddressType") == GATEWAY_TYPE
    if not req.Address:
        return gateway, None
    try:
        return gateway, parse_address(req.Address)
    except ValueError as exc:
        raise InvalidRequest(f"pool {req.PoolID}: {exc}") from None


def _released_address(req: ReleaseAddressRequest) -> IPAddress:
    try:
        return parse_address(req.Address)
    except ValueError as exc:
        raise InvalidRequest(f"pool {req.PoolID}: {exc}") from None


NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def cluster_name(options: dict, what: str) -> Optional[str]:
    """The cluster network's name in these options (--ipam-opt and -o pynet.cluster), checked;
    None if there is none."""
    name = (options or {}).get(CLUSTER_OPTION)
    if name is None:
        return None
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidRequest(f"{what}: {CLUSTER_OPTION}={name!r} is not a cluster network name"
                             " (lower-case letters, digits, '.', '_', '-'; at most 63)")
    return name


def check_pool_options(options: dict[str, str]) -> dict[str, str]:
    """Refuse unknown --ipam-opt keys; keep Docker's own (com.docker.*) aside."""
    kept = {}
    for key, value in options.items():
        if key.startswith("com.docker."):
            continue
        if key not in IPAM_OPTIONS:
            known = ", ".join(sorted(IPAM_OPTIONS)) or "none"
            raise InvalidRequest(f"unknown --ipam-opt {key!r} (pynet's IPAM options: {known})")
        kept[key] = value
    return kept
