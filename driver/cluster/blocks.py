"""Pure arithmetic of cluster pools: the blocks a host claims, and the gateway."""

from __future__ import annotations

import ipaddress
from typing import Iterator, Optional

from ipam.addr import IPAddress, IPNetwork

BLOCK_PREFIX = {4: 26, 6: 122}  # 64 addresses: a host claims more when its blocks fill up


def block_prefix(subnet: IPNetwork) -> int:
    """Blocks of 64 addresses, or the whole subnet when it is smaller."""
    return max(BLOCK_PREFIX[subnet.version], subnet.prefixlen)


def blocks(subnet: IPNetwork) -> Iterator[IPNetwork]:
    return subnet.subnets(new_prefix=block_prefix(subnet))


def block_of(subnet: IPNetwork, ip: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(f"{ip}/{block_prefix(subnet)}", strict=False)


def first_host(subnet: IPNetwork) -> Optional[IPAddress]:
    """The gateway Docker's IPAM would pick: the first usable address."""
    for first in subnet.hosts():
        return ipaddress.ip_address(str(first))
    return None
