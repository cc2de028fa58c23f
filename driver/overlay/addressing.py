"""Pure arithmetic of the overlay: container MACs and the MTU."""

from __future__ import annotations

import hashlib

from ipam.addr import IPAddress

# VXLAN over UDP over IP: 50 bytes of headers on an IPv4 underlay, 70 on IPv6.
VXLAN_OVERHEAD = {4: 50, 6: 70}


def endpoint_mac(vni: int, ip: IPAddress) -> str:
    """A container's MAC from its network's VNI and its first address.

    The same address on the same network always has the same MAC, so a
    reused address never leaves a stale ARP or neighbour entry anywhere
    (Docker's overlay has had that bug for years: moby#34853). Locally
    administered, unicast: 0x02, then for IPv4 the VNI's low byte and the
    four address bytes (unique within a network); for an IPv6-only endpoint
    five bytes of a hash of (VNI, address)."""
    if ip.version == 4:
        tail = bytes([vni & 0xFF]) + ip.packed
    else:
        tail = hashlib.sha256(vni.to_bytes(4, "big") + ip.packed).digest()[:5]
    return ":".join(f"{b:02x}" for b in (0x02, *tail))


def overlay_mtu(underlay_mtu: int, underlay_version: int) -> int:
    return underlay_mtu - VXLAN_OVERHEAD[underlay_version]
