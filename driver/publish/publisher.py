"""Published ports: which host ports an endpoint gets, and holding them.

Decides the host side of each of Docker's portmap entries (the address,
the port for `-P` or a range), refuses conflicts with a message naming the
endpoint that holds the port, and keeps the reserving sockets open for as
long as the mapping exists.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from typing import Iterable, Sequence

from ipam.addr import IPAddress

from .. import naming
from ..errors import Conflict, InvalidRequest
from ..kernel import ports
from .portmap import Binding, PortRequest
from .target import Endpoint, Network

log = logging.getLogger("pynet.publish")

ANY4 = ipaddress.IPv4Address("0.0.0.0")
ANY6 = ipaddress.IPv6Address("::")


def host_addresses(req: PortRequest, net: Network, ep: Endpoint) -> list[tuple[IPAddress, IPAddress]]:
    """(host address, container address) pairs one request publishes on."""
    eid = naming.short(ep.endpoint_id)
    if req.host_ip is not None:
        inner = ep.address if req.host_ip.version == 4 else ep.address6
        if inner is None:
            raise InvalidRequest(f"endpoint {eid}: cannot publish on {req.host_ip}: the container has"
                                 f" no IPv{req.host_ip.version} address on this network")
        return [(req.host_ip, inner.ip)]
    pairs: list[tuple[IPAddress, IPAddress]] = []
    if ep.address is not None:
        default = net.options.host_binding_ipv4
        pairs.append((ipaddress.IPv4Address(default) if default else ANY4, ep.address.ip))
    if ep.address6 is not None and net.options.host_binding_ipv4 in (None, "0.0.0.0"):
        # A specific default IPv4 binding (e.g. 127.0.0.1) means "not on every
        # address": no IPv6 wildcard then, as with Docker.
        pairs.append((ANY6, ep.address6.ip))
    return pairs


def _overlaps(a: Binding, proto: str, host_ip: IPAddress, port: int) -> bool:
    return (a.proto == proto and a.host_port == port and a.family == host_ip.version
            and (a.any_address or host_ip.is_unspecified or a.host_ip == host_ip))


class Publisher:
    def __init__(self) -> None:
        self._held: dict[str, list[socket.socket]] = {}

    def bind(self, net: Network, ep: Endpoint, requests: Iterable[PortRequest],
             others: Sequence[tuple[Endpoint, Binding]]) -> list[Binding]:
        """Choose and hold host ports for every request: all of them or none."""
        bindings: list[Binding] = []
        sockets: list[socket.socket] = []
        with contextlib.ExitStack() as undo:  # a failure closes what was bound so far
            for req in requests:
                got = self._bind_one(req, host_addresses(req, net, ep), others)
                bindings += [b for b, _ in got]
                sockets += [s for _, s in got]
                for _, sock in got:
                    undo.callback(sock.close)
            undo.pop_all()  # all bound: keep them
        self._held.setdefault(ep.endpoint_id, []).extend(sockets)
        return bindings

    def _bind_one(self, req: PortRequest, pairs, others) -> list[tuple[Binding, socket.socket]]:
        candidates = range(req.host_port, req.host_port_end + 1) if req.host_port else [0]
        last: Exception | None = None
        for candidate in candidates:
            got: list[tuple[Binding, socket.socket]] = []
            port = candidate
            try:
                for host_ip, inner in pairs:
                    if port:
                        self._check_free(req.proto, host_ip, port, others)
                    sock = ports.reserve(req.proto, host_ip, port)
                    port = ports.port_of(sock)  # -P: the same port on every address
                    got.append((Binding(req.proto, host_ip, port, inner, req.port), sock))
                return got
            except Conflict as exc:
                for _, sock in got:
                    sock.close()
                last = exc
        assert last is not None
        if len(candidates) > 1:
            raise Conflict(f"no free host port in {req.host_port}-{req.host_port_end}/{req.proto}"
                           f" ({last})")
        raise last

    @staticmethod
    def _check_free(proto: str, host_ip: IPAddress, port: int,
                    others: Sequence[tuple[Endpoint, Binding]]) -> None:
        for ep, b in others:
            if _overlaps(b, proto, host_ip, port):
                raise Conflict(f"host port {port}/{proto} is already published by endpoint"
                               f" {naming.short(ep.endpoint_id)} on network"
                               f" {naming.short(ep.network_id)} ({b})")

    def hold(self, ep: Endpoint) -> list[str]:
        """Hold again the ports of a saved endpoint (after a restart); the problems."""
        problems = []
        for b in ep.bindings:
            try:
                self._held.setdefault(ep.endpoint_id, []).append(ports.reserve(b.proto, b.host_ip, b.host_port))
            except (Conflict, InvalidRequest) as exc:
                problems.append(f"endpoint {naming.short(ep.endpoint_id)}: {b}: {exc}")
        return problems

    def held(self, endpoint_id: str) -> set[tuple[str, str, int]]:
        """(proto, host address, port) of each socket held open for the endpoint now."""
        return {h for h in map(ports.held, self._held.get(endpoint_id, [])) if h is not None}

    def release(self, endpoint_id: str) -> None:
        for sock in self._held.pop(endpoint_id, []):
            sock.close()
