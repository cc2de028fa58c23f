"""Holding host ports for published container ports.

A bound (never listening) socket per published port keeps any other program
from taking the port, and makes the kernel pick a free one for `-P`. The
traffic itself never reaches these sockets: DNAT sends it to the container.
"""

from __future__ import annotations

import errno
import socket

from ipam.addr import IPAddress

from ..errors import Conflict, InvalidRequest

_TYPES = {"tcp": (socket.SOCK_STREAM, socket.IPPROTO_TCP),
          "udp": (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
          "sctp": (socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132))}


def reserve(proto: str, host_ip: IPAddress, port: int) -> socket.socket:
    """Bind `host_ip:port` (port 0: any free port) and return the socket."""
    kind, number = _TYPES[proto]
    family = socket.AF_INET if host_ip.version == 4 else socket.AF_INET6
    try:
        sock = socket.socket(family, kind, number)
    except OSError as exc:
        raise InvalidRequest(f"cannot publish {proto} ports on this host: {exc.strerror}") from None
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((str(host_ip), port))
    except OSError as exc:
        sock.close()
        where = f"[{host_ip}]:{port}" if host_ip.version == 6 else f"{host_ip}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise Conflict(f"host port {where}/{proto} is already in use on the host") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InvalidRequest(f"cannot publish on {host_ip}: not an address of this host") from None
        raise Conflict(f"cannot hold host port {where}/{proto}: {exc.strerror}") from None
    return sock


def port_of(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def held(sock: socket.socket) -> tuple[str, str, int] | None:
    """(proto, address, port) a reserving socket holds; None once it is closed."""
    if sock.fileno() == -1:
        return None
    proto = next((name for name, (_, number) in _TYPES.items() if number == sock.proto), str(sock.proto))
    host, port = sock.getsockname()[:2]
    return proto, host, port
