"""Where the IPAM keeps its decisions, in its own words.

IpamService asks an IpamStore for these verbs and nothing else, so any store
that keeps them durable before it returns can hold the IPAM's state: today
SQLite on this host (sqlite.py); the cluster IPAM of multi-host networks
needs a store the hosts share (etcd), with the same verbs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol


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
