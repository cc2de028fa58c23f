"""Address bookkeeping for one pool, in pure Python (no kernel, no I/O).

Used addresses are kept as merged half-open integer intervals in a sorted
map, so a /8 or a /64 costs memory in proportion to the number of *runs* of
used addresses, never to the size of the pool. Every operation is O(log n)
in the number of runs.
"""

from __future__ import annotations

from typing import Optional

from sortedcontainers import SortedDict

from .addr import IPAddress, IPNetwork, make_address
from .errors import AddressInUse, AddressOutOfPool, PoolExhausted



class IntervalSet:
    """A set of integers stored as merged half-open intervals [start, end)."""

    def __init__(self) -> None:
        self._runs: SortedDict = SortedDict()  # start -> end

    def __len__(self) -> int:
        return len(self._runs)

    def _run_at(self, x: int) -> Optional[tuple[int, int]]:
        i = self._runs.bisect_right(x) - 1
        if i < 0:
            return None
        start = self._runs.keys()[i]
        end = self._runs[start]
        return (start, end) if x < end else None

    def __contains__(self, x: int) -> bool:
        return self._run_at(x) is not None

    def add(self, x: int) -> bool:
        """Add x; False if it was already there."""
        if x in self:
            return False
        start, end = x, x + 1
        i = self._runs.bisect_right(x) - 1
        if i >= 0:
            left = self._runs.keys()[i]
            if self._runs[left] == x:
                start = left
        if end in self._runs:
            end = self._runs.pop(end)
        self._runs[start] = end
        return True

    def discard(self, x: int) -> bool:
        """Remove x; False if it was not there."""
        run = self._run_at(x)
        if run is None:
            return False
        start, end = run
        del self._runs[start]
        if start < x:
            self._runs[start] = x
        if x + 1 < end:
            self._runs[x + 1] = end
        return True

    def load_sorted(self, values: list[int]) -> None:
        """Fill an empty set with sorted, distinct integers in one pass (a restart's
        saved addresses: 100,000 one by one took seconds)."""
        if self._runs:
            raise ValueError("load_sorted fills an empty set only")
        runs: list[tuple[int, int]] = []
        for x in values:
            if runs and runs[-1][1] == x:
                runs[-1] = (runs[-1][0], x + 1)
            else:
                runs.append((x, x + 1))
        self._runs = SortedDict(runs)

    def first_free(self, lo: int, hi: int) -> Optional[int]:
        """The smallest integer in [lo, hi) that is not in the set."""
        run = self._run_at(lo)
        candidate = run[1] if run else lo
        return candidate if candidate < hi else None

    def count_in(self, lo: int, hi: int) -> int:
        """How many members lie in [lo, hi) (O(runs in range))."""
        total = 0
        i = max(self._runs.bisect_right(lo) - 1, 0)
        keys = self._runs.keys()
        while i < len(keys) and keys[i] < hi:
            start = keys[i]
            total += max(0, min(self._runs[start], hi) - max(start, lo))
            i += 1
        return total

    def runs(self) -> list[tuple[int, int]]:
        return list(self._runs.items())


def _usable_bounds(net: IPNetwork) -> tuple[int, int]:
    """[first, last + 1) of the addresses of `net` that hosts may use."""
    lo = int(net.network_address)
    hi = int(net.broadcast_address) + 1
    if net.version == 4 and net.prefixlen <= 30:
        return lo + 1, hi - 1  # network and broadcast addresses
    if net.version == 6 and net.prefixlen <= 126:
        return lo + 1, hi  # the subnet-router anycast address
    return lo, hi


class PoolAllocator:
    """Which addresses of one pool are held, and which to hand out next.

    `pool` is the whole subnet; `sub_pool` (Docker's --ip-range) limits the
    addresses picked automatically. Explicit requests (gateway, --aux-address,
    --ip) may be anywhere in the pool. Automatic picks go round-robin from the
    last address handed out, so a just-released address is not reused at once.
    """

    def __init__(self, pool: IPNetwork, sub_pool: Optional[IPNetwork] = None,
                 cursor: Optional[int] = None) -> None:
        if sub_pool is not None and not sub_pool.subnet_of(pool):  # type: ignore[arg-type]
            raise AddressOutOfPool(f"ip-range {sub_pool} is not inside subnet {pool}")
        self.pool = pool
        self.sub_pool = sub_pool or pool
        self._used = IntervalSet()
        self._pool_lo, self._pool_hi = _usable_bounds(pool)
        # The range may use its own first and last address unless they are
        # the pool's network or broadcast address (as Docker's IPAM does).
        self._lo = max(int(self.sub_pool.network_address), self._pool_lo)
        self._hi = min(int(self.sub_pool.broadcast_address) + 1, self._pool_hi)
        # The last address handed out automatically; the next pick starts after it.
        self.cursor = cursor if cursor is not None else self._lo - 1

    def _check_in_pool(self, addr: IPAddress) -> int:
        value = int(addr)
        if addr.version != self.pool.version or addr not in self.pool:
            raise AddressOutOfPool(f"address {addr} is not inside pool {self.pool}")
        if not self._pool_lo <= value < self._pool_hi:
            kind = "network" if value == int(self.pool.network_address) else "broadcast"
            raise AddressOutOfPool(f"address {addr} is the {kind} address of pool {self.pool}")
        return value

    # --- queries -----------------------------------------------------------

    def is_used(self, addr: IPAddress) -> bool:
        return addr.version == self.pool.version and int(addr) in self._used

    @property
    def size(self) -> int:
        """Addresses the automatic allocation may hand out (the ip-range)."""
        return max(0, self._hi - self._lo)

    @property
    def used_in_range(self) -> int:
        return self._used.count_in(self._lo, self._hi)

    @property
    def used_total(self) -> int:
        return self._used.count_in(self._pool_lo, self._pool_hi)

    @property
    def free(self) -> int:
        return self.size - self.used_in_range

    @property
    def runs(self) -> int:
        return len(self._used)

    # --- changes -----------------------------------------------------------

    def reserve(self, addr: IPAddress) -> IPAddress:
        """Hold one explicit address; AddressInUse if it is held already."""
        value = self._check_in_pool(addr)
        if not self._used.add(value):
            raise AddressInUse(f"address {addr} is already allocated in pool {self.pool}")
        return addr

    def hold_saved(self, values: list[int]) -> list[int]:
        """Hold the addresses saved before a restart, at once; returns those that
        cannot be held (not a usable address of the pool, or given twice). Only
        into an empty allocator: otherwise one by one, as reserve() does."""
        ordered = sorted(values)
        rejected = [v for v in ordered if not self._pool_lo <= v < self._pool_hi]
        usable = [v for v in ordered if self._pool_lo <= v < self._pool_hi]
        distinct = [v for i, v in enumerate(usable) if i == 0 or usable[i - 1] != v]
        rejected += [v for i, v in enumerate(usable) if i > 0 and usable[i - 1] == v]
        if len(self._used) == 0:
            self._used.load_sorted(distinct)
        else:
            rejected += [v for v in distinct if not self._used.add(v)]
        return rejected

    def allocate(self) -> IPAddress:
        """Hold the next free address of the range after the cursor (wrapping)."""
        start = self.cursor + 1 if self._lo <= self.cursor + 1 < self._hi else self._lo
        value = self._used.first_free(start, self._hi)
        if value is None and start > self._lo:
            value = self._used.first_free(self._lo, start)
        if value is None:
            raise PoolExhausted(f"no free address left in {self.sub_pool}"
                                f" ({self.size} addresses, all allocated)")
        self._used.add(value)
        self.cursor = value
        return make_address(value, self.pool.version)

    def release(self, addr: IPAddress) -> bool:
        """Give back an address; False (and no error) if it was not held."""
        if addr.version != self.pool.version:
            return False
        return self._used.discard(int(addr))
