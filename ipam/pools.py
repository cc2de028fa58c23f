"""Choosing a pool when Docker asks for one without --subnet. Pure Python."""

from __future__ import annotations

import bisect
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Optional

from .addr import IPNetwork, make_network
from .errors import InvalidRequest, PoolExhausted

# Docker's own defaults are 172.17.0.0/16-172.31.0.0/16 and 192.168.0.0/16;
# pynet carves its automatic pools from ranges Docker does not use.
DEFAULT_POOLS_TEXT = "10.200.0.0/13/24,fd70:796e:6574::/48/64"


@dataclass(frozen=True)
class DefaultPool:
    """A range (`base`) carved into pools of prefix length `size`."""

    base: IPNetwork
    size: int

    @classmethod
    def parse(cls, text: str) -> "DefaultPool":
        """Parse `BASE/SIZE`, e.g. `10.200.0.0/13/24` or `fd00:1::/48/64`."""
        cidr, sep, size_text = text.strip().rpartition("/")
        try:
            if not sep:
                raise ValueError("expected BASE_CIDR/SIZE")
            base = ipaddress.ip_network(cidr, strict=True)
            size = int(size_text)
        except ValueError as exc:
            raise InvalidRequest(f"default pool {text!r}: {exc} (expected e.g. 10.200.0.0/13/24)") from None
        if not base.prefixlen <= size <= base.max_prefixlen:
            raise InvalidRequest(f"default pool {text!r}: size /{size} must be between"
                                 f" /{base.prefixlen} and /{base.max_prefixlen}")
        return cls(base, size)

    def __str__(self) -> str:
        return f"{self.base}/{self.size}"


def parse_default_pools(text: str) -> list[DefaultPool]:
    return [DefaultPool.parse(part) for part in text.split(",") if part.strip()]


class _Taken:
    """Merged, sorted integer intervals of networks a new pool must not overlap."""

    def __init__(self, nets: Iterable[IPNetwork]) -> None:
        spans = sorted((int(n.network_address), int(n.broadcast_address) + 1) for n in nets)
        merged: list[list[int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._starts = [lo for lo, _ in merged]
        self._spans = merged

    def overlap_end(self, lo: int, hi: int) -> Optional[int]:
        """End of a taken interval overlapping [lo, hi), or None."""
        i = bisect.bisect_right(self._starts, hi - 1) - 1
        if i >= 0 and self._spans[i][1] > lo:
            return self._spans[i][1]
        return None


def choose_pool(defaults: list[DefaultPool], version: int,
                taken: Iterable[IPNetwork]) -> IPNetwork:
    """The first pool of the defaults (in order) that overlaps nothing taken.

    `taken` holds pools pynet already holds and the host's routes; callers pass
    each network of one version. Skips over a taken range in one step, so the
    cost grows with the number of taken ranges, not with the candidates.
    """
    blocked = _Taken(n for n in taken if n.version == version)
    ranges = [d for d in defaults if d.base.version == version]
    for d in ranges:
        step = 1 << (d.base.max_prefixlen - d.size)
        base = int(d.base.network_address)
        end = int(d.base.broadcast_address) + 1
        lo = base
        while lo < end:
            over = blocked.overlap_end(lo, lo + step)
            if over is None:
                return make_network(lo, d.size, version)
            lo = base + -(-(over - base) // step) * step  # next candidate after the overlap
    if not ranges:
        raise PoolExhausted(f"no default IPv{version} pool is configured: pass --subnet"
                            f" or set PYNET_DEFAULT_POOLS")
    names = ", ".join(str(d) for d in ranges)
    raise PoolExhausted(f"every IPv{version} default pool is in use or overlaps a host route"
                        f" ({names}): pass --subnet or add to PYNET_DEFAULT_POOLS")
