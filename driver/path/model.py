"""A container's packet path, as `pynet path` shows it: pure data, no I/O.

A path is a chain of hops (the container's interface, its veth, the bridge,
the firewall, ...), each read from the live kernel beside what pynet's
state says it should be. Each running mode adds the hops it owns
(registry.Running.path): the bridge mode those of every endpoint, a mode
built on bridge networks those it adds (a VXLAN device, routes). The kinds
of hop a mode's networks have are declared in its ModeSpec (`path_hops`):
the pictures in docs/ are drawn from those declarations (picture.py), so
they name what `pynet path` names.

With a destination (`--to ADDRESS[:PORT]`), the modes also say where a
packet from the container to it goes next, hop by hop, and which rule
passes, drops or rewrites it: from the rules and routes, never by sending.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Optional

from ipam.addr import IPAddress


@dataclass(frozen=True)
class HopKind:
    """One kind of hop, as a mode declares it (and the pictures draw it)."""
    kind: str  # the key `pynet path` prints: "container", "veth", ...
    title: str  # e.g. "container interface"
    where: str  # "container" or "host": the namespace it lives in
    holds: str  # what `pynet path` shows of it
    # Where it stands: before this kind of the mode it builds on ("" = at the end).
    before: str = ""


@dataclass
class Problem:
    """Where the hop disagrees with pynet's state, and what puts it right."""
    what: str
    repair: str  # the `pynet doctor --repair` action that fixes it, or what to do by hand


@dataclass
class Hop:
    kind: str  # a HopKind.kind
    name: str  # the kernel object: eth0, pnh3f2a9c1b7e4d, pnb..., a rule set
    holds: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)  # rules with counters, ports, peers
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "ok": self.ok, "holds": self.holds,
                "items": self.items, "problems": [asdict(p) for p in self.problems]}


@dataclass(frozen=True)
class Destination:
    """`--to ADDRESS[:PORT]`: where a packet from the container is bound."""
    address: IPAddress
    port: Optional[int] = None
    proto: str = "tcp"

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 and self.port else str(self.address)
        return f"{host}:{self.port}/{self.proto}" if self.port else host


def parse_destination(text: str, proto: str = "tcp") -> Destination:
    """ADDRESS, ADDRESS:PORT, [IPv6]:PORT or a bare IPv6 address; ValueError says what is wrong."""
    text = text.strip()
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"protocol {proto!r}: tcp, udp or sctp")
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"destination {text!r}: expected [IPv6]:PORT")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"destination {text!r}: {host!r} is not an IP address (a name is not resolved here)")\
            from None
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"destination {text!r}: port {port!r} is not a number from 1 to 65535")
        return Destination(address, int(port), proto)
    return Destination(address, None, proto)


@dataclass
class Step:
    """One step of a packet's way to a destination."""
    at: str  # the hop (kind) it is decided at
    what: str  # what happens there, in words
    rule: str = ""  # the rule or route that decides it, as the kernel prints it
    packets: Optional[int] = None  # that rule's counter, when it is a rule
    verdict: str = "pass"  # pass, drop, rewrite, deliver, leave, unknown

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Path:
    """One endpoint's path, filled by the modes in their start order."""
    endpoint_id: str
    to: Optional[Destination] = None
    network_id: str = ""
    mode: str = ""  # the mode that holds the network (the last one to claim it)
    hops: list[Hop] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    # Addresses of this network served on other hosts: ip -> (host, how it is reached),
    # from the modes that know them, for the destination's steps.
    remote: dict[str, tuple[str, str]] = field(default_factory=dict)
    _later: list[Callable[["Path"], Awaitable[None]]] = field(default_factory=list)

    def claim(self, mode: str, network_id: str) -> None:
        self.mode, self.network_id = mode, network_id

    def insert(self, hops: list[Hop], before: str = "") -> None:
        """Add hops before the first hop of kind `before` (at the end if none)."""
        at = next((i for i, h in enumerate(self.hops) if h.kind == before), len(self.hops)) if before \
            else len(self.hops)
        self.hops[at:at] = hops

    def later(self, work: Callable[["Path"], Awaitable[None]]) -> None:
        """Run `work` once every mode has added its hops (the destination's steps need them all)."""
        self._later.append(work)

    async def finish(self) -> None:
        for work in self._later:
            await work(self)
        self._later.clear()

    @property
    def problems(self) -> int:
        return sum(len(h.problems) for h in self.hops)

    def to_json(self) -> dict:
        body: dict[str, Any] = {"endpoint": self.endpoint_id, "network": self.network_id, "mode": self.mode,
                                "ok": self.problems == 0, "hops": [h.to_json() for h in self.hops]}
        if self.to is not None:
            body["to"] = {"destination": str(self.to), "steps": [s.to_json() for s in self.steps]}
        return body


AddHops = Callable[[Path], Awaitable[None]]


def doctor(action: str, what: str) -> str:
    """A repair `pynet doctor --repair` makes (its action, as it counts it)."""
    return f"`pynet doctor --repair` {what} ({action})"
