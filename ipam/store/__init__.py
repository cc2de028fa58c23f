"""Where the IPAM keeps its decisions, in its own words.

IpamService asks an IpamStore for these verbs and nothing else, so any store
that keeps them durable before it returns can hold the IPAM's state: today
SQLite on this host (sqlite.py). The pools of cluster networks are in a
store the hosts share (SharedIpamStore, etcd), which decides who holds what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

from ..addr import IPAddress, IPNetwork


@dataclass
class PoolRow:
    pool_id: str
    address_space: str
    pool: str
    sub_pool: str
    options: dict
    cursor: str
    addresses: list[tuple[str, str]]  # (address, kind)


class IpamStore(Protocol):
    async def load_pools(self) -> list[PoolRow]:
        """Every pool, oldest first, with the addresses it holds."""
        ...

    async def insert_pool(self, pool_id: str, address_space: str, pool: str, sub_pool: str,
                          options: dict) -> None: ...

    async def delete_pool(self, pool_id: str) -> None:
        """The pool and every address it holds."""
        ...

    async def claim_address(self, pool_id: str, address: str, kind: str, cursor: Optional[int]) -> None:
        """Hold `address` (kind: dynamic, static or gateway); `cursor`: where the next dynamic search starts."""
        ...

    async def release_address(self, pool_id: str, address: str) -> None: ...

    async def addresses_older_than(self, pool_id: str, seconds: float) -> list[tuple[str, str]]:
        """(address, kind) of the pool's addresses held for longer than `seconds`."""
        ...

    async def all_addresses(self) -> list[tuple[str, str, str]]:
        """(pool ID, address, kind) of every address held."""
        ...


class SharedIpamStore(Protocol):
    """A store several hosts share (the cluster's, in etcd), for the pools that
    name a cluster network (--ipam-opt pynet.cluster=NAME). Unlike a store of
    this host's own, it decides: an address is this host's only once the
    shared store says so, and it refuses what another host holds, naming it.
    IpamService reads and checks Docker's requests for both kinds of pool and
    asks it the rest; each verb is durable before it returns."""

    def holds_pool(self, pool_id: str) -> bool:
        """Whether the pool is one of the shared store's (by its ID)."""
        ...

    async def define_pool(self, name: str, subnet: IPNetwork, sub_pool: Optional[IPNetwork]) -> str:
        """Join the cluster network's pool, defining it if this host is first; its pool ID."""
        ...

    async def release_pool(self, pool_id: str) -> None:
        """This host's hold on the pool (the cluster network lives on while others use it)."""
        ...

    async def gateway(self, pool_id: str, asked: Optional[IPAddress]) -> IPAddress:
        """The subnet's one gateway, the same on every host."""
        ...

    async def claim(self, pool_id: str, addr: IPAddress) -> None:
        """Hold `addr` for this host (AddressInUse names who has it)."""
        ...

    async def claim_next(self, pool_id: str) -> IPAddress:
        """Hold a free address for this host (PoolExhausted when none is left to it)."""
        ...

    async def release(self, pool_id: str, addr: IPAddress) -> bool:
        """Give `addr` back; False if this host did not hold it."""
        ...

    def subnet(self, pool_id: str) -> Optional[IPNetwork]:
        """The subnet of a pool this host holds; None when it holds no such pool."""
        ...
