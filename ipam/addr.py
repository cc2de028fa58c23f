"""Parsing of the address strings Docker sends, shared by both wire modules.

Strict on purpose: a non-canonical subnet such as 10.1.0.5/24 is refused
with the canonical form in the message, never silently rewritten.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Optional, Union

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]


def _no_zone(text: str, what: str) -> None:
    # Python accepts IPv6 zone IDs (fe80::1%eth0); Docker never sends them, and
    # a zone may carry any character into a firewall rule.
    if "%" in text:
        raise ValueError(f"{what} {text!r} has a zone ID (%): not allowed")


def parse_network(text: str, what: str = "subnet") -> IPNetwork:
    if isinstance(text, str):
        _no_zone(text, what)
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"{what} {text!r} is not a CIDR (expected e.g. 10.1.0.0/24)")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a valid CIDR") from None
    if str(net) != text:
        raise ValueError(f"{what} {text!r} is not canonical: did you mean {net}?")
    return net


def address_value(text: str, version: int) -> Optional[int]:
    """The integer of a plain address of this IP version, as pynet saves them
    (`str(ip)`); None for anything else. inet_pton, not ipaddress: a restart
    reads every saved address, and this is a tenth of the cost."""
    try:
        packed = socket.inet_pton(socket.AF_INET if version == 4 else socket.AF_INET6, text)
    except (OSError, TypeError, ValueError):
        return None
    return int.from_bytes(packed, "big")


def parse_address(text: str, what: str = "address") -> IPAddress:
    """A plain IP; tolerates a /len suffix (Docker's aux and gateway values carry one)."""
    if not isinstance(text, str):
        raise ValueError(f"{what} {text!r} is not a string")
    _no_zone(text, what)
    try:
        return ipaddress.ip_interface(text).ip if "/" in text else ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a valid IP address") from None


def parse_interface(text: str, what: str = "address") -> IPInterface:
    """An address with its prefix length, e.g. 10.1.0.2/24."""
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"{what} {text!r} must be an address with a prefix length, e.g. 10.1.0.2/24")
    _no_zone(text, what)
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a valid address/prefix") from None


def make_network(value: int, prefixlen: int, version: int) -> IPNetwork:
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return cls((value, prefixlen))


def make_address(value: int, version: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
