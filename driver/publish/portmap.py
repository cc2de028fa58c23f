"""Published ports: Docker's portmap entries, checked and turned into bindings.

Pure: parsing and validation only. Which host port is free is asked of the
kernel (kernel/ports.py); which rule a binding needs is publish/dnat_rules.py's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional

from ipam.addr import IPAddress

from ..errors import InvalidRequest

PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}
PORTMAP = "com.docker.network.portmap"
EXPOSED = "com.docker.network.endpoint.exposedports"


@dataclass(frozen=True)
class PortRequest:
    """One entry of Docker's portmap: what the operator asked for."""

    proto: str
    port: int  # in the container
    host_ip: Optional[IPAddress]  # None: every address of the host (0.0.0.0 and ::)
    host_port: int  # 0: any free port
    host_port_end: int  # the last acceptable host port (a range), == host_port otherwise


@dataclass(frozen=True)
class Binding:
    """A published port as programmed: host side and container side."""

    proto: str
    host_ip: IPAddress  # 0.0.0.0 or :: for every address
    host_port: int
    container_ip: IPAddress
    port: int

    @property
    def family(self) -> int:
        return self.host_ip.version

    @property
    def any_address(self) -> bool:
        return self.host_ip.is_unspecified

    def to_json(self) -> dict:
        return {"proto": self.proto, "host_ip": str(self.host_ip), "host_port": self.host_port,
                "container_ip": str(self.container_ip), "port": self.port}

    @classmethod
    def from_json(cls, data: dict) -> "Binding":
        return cls(data["proto"], ipaddress.ip_address(data["host_ip"]), int(data["host_port"]),
                   ipaddress.ip_address(data["container_ip"]), int(data["port"]))

    def __str__(self) -> str:
        host = f"[{self.host_ip}]" if self.host_ip.version == 6 else str(self.host_ip)
        return f"{host}:{self.host_port}->{self.port}/{self.proto}"


def _port(value: Any, what: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"portmap: {what} {value!r} is not a number")
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise InvalidRequest(f"portmap: {what} {value} is out of range")
    return value


def parse_portmap(options: Optional[dict]) -> list[PortRequest]:
    """Docker's `com.docker.network.portmap` list, checked field by field."""
    entries = (options or {}).get(PORTMAP) or []
    if not isinstance(entries, list):
        raise InvalidRequest(f"{PORTMAP}: expected a list, got {type(entries).__name__}")
    requests = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidRequest(f"{PORTMAP}: entry {entry!r} is not an object")
        raw_proto = entry.get("Proto")
        proto = PROTOCOLS.get(raw_proto) if type(raw_proto) is int else None
        if proto is None:
            raise InvalidRequest(f"portmap: protocol {entry.get('Proto')!r} is not supported"
                                 " (6 tcp, 17 udp, 132 sctp)")
        port = _port(entry.get("Port"), "container port")
        host_port = _port(entry.get("HostPort", 0), "host port", allow_zero=True)
        host_port_end = _port(entry.get("HostPortEnd", 0) or host_port, "host port range end",
                              allow_zero=True)
        if host_port_end < host_port:
            raise InvalidRequest(f"portmap: host port range {host_port}-{host_port_end} is empty")
        host_ip_text = entry.get("HostIP") or ""
        if not isinstance(host_ip_text, str):
            raise InvalidRequest(f"portmap: HostIP {host_ip_text!r} is not a string")
        try:
            host_ip = ipaddress.ip_address(host_ip_text) if host_ip_text else None
        except ValueError:
            raise InvalidRequest(f"portmap: HostIP {host_ip_text!r} is not an IP address") from None
        requests.append(PortRequest(proto, port, host_ip, host_port, host_port_end))
    return requests
