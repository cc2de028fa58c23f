"""Every remote container of this host's routed networks, in the kernel: a
/32 route through the underlay address of the host that runs it, as the
cluster's endpoint records say (driver/cluster/endpoints.py learns them).

Routes only go to hosts on this host's segment, reached straight out of the
underlay interface: a route through an address a router stands before
would blackhole (the router has no route to the container), and one out of
another interface would leave unmatched by the network's rules. Each host
is checked when it first appears and again at each verification; while it
is off the segment its containers get no route here (ARP for them goes
unanswered: "host unreachable"), and pynet says so in its log, /healthz,
`pynet doctor` and `pynet cluster`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Iterable

from ..cluster.endpoints import Endpoints
from ..errors import KernelError
from ..kernel import routes as kroutes

log = logging.getLogger("pynet.routed")


@dataclass
class Unreachable:
    """A host whose underlay address is not on this host's segment."""
    why: str
    hosts: set[str] = field(default_factory=set)


class Routes:
    """The routed mode's follower of the endpoint records."""

    def __init__(self, endpoints: Endpoints, ipr, underlay: str) -> None:
        self.endpoints, self.ipr, self.underlay = endpoints, ipr, underlay
        self.held: set[str] = set()  # cluster network names with a routed network here
        self.programmed: dict[str, dict[str, str]] = {}  # name -> ip -> via
        self._checked: dict[str, tuple[bool, str]] = {}  # underlay address -> on this segment, why not
        self._said: set[tuple[str, str]] = set()  # (address, host) logged as off the segment
        self._lock = asyncio.Lock()

    @property
    def synced(self) -> asyncio.Event:
        return self.endpoints.synced

    def networks(self) -> Iterable[str]:
        return self.held

    def remote(self, name: str) -> dict[str, tuple[str, str]]:
        """Every remote IPv4 container of network `name`: ip -> (host, its underlay address)."""
        out = {}
        for ip, record in self.endpoints.remote(name).items():
            via = record.get("vtep")
            if isinstance(via, str) and _is_ipv4(ip):
                out[ip] = (record.get("host", "?"), via)
        return out

    def wanted(self, name: str) -> dict[str, str]:
        """ip -> via for those of network `name` whose host was found on this segment."""
        return {ip: via for ip, (_, via) in self.remote(name).items() if self._checked.get(via, (False, ""))[0]}

    def unreachable(self) -> dict[str, Unreachable]:
        """Underlay address -> why it is off the segment and which hosts with containers here have it."""
        out: dict[str, Unreachable] = {}
        for name in self.held:
            for host, via in self.remote(name).values():
                on_segment, why = self._checked.get(via, (True, ""))
                if not on_segment:
                    out.setdefault(via, Unreachable(why)).hosts.add(host)
        return out

    async def _segment(self, via: str) -> tuple[bool, str]:
        if not _is_ipv4(via):
            return False, "its underlay address is not IPv4 (routed networks route over IPv4 underlays)"
        return await kroutes.next_hop(self.ipr, via, self.underlay)

    async def _check(self, name: str, checked: dict[str, tuple[bool, str]]) -> None:
        """Check the hosts of `name` not in `checked` yet: on this segment or not."""
        for host, via in sorted(set(self.remote(name).values())):
            if via not in checked:
                checked[via] = await self._segment(via)
            on_segment, why = checked[via]
            if not on_segment and (via, host) not in self._said:
                self._said.add((via, host))
                log.error("routed: host %s (%s): %s: its containers on routed networks get no route here and are"
                          " unreachable from this host; put the hosts on one segment, or use -o pynet.mode=overlay",
                          host, via, why)

    async def sync(self, name: str) -> None:
        """Bring one network's routes to what the records want; a route the kernel refuses
        is logged and left to the next verification."""
        if name not in self.held:
            return
        async with self._lock:
            await self._check(name, self._checked)
            want = self.wanted(name)
            have = self.programmed.setdefault(name, {})
            failed = []
            for ip, via in want.items():
                if have.get(ip) != via:
                    try:
                        await kroutes.set_host_route(self.ipr, ip, via)
                        have[ip] = via
                    except KernelError as exc:
                        failed.append(str(exc))
            for ip in [ip for ip in have if ip not in want]:
                try:
                    await kroutes.drop_host_route(self.ipr, ip)
                    have.pop(ip)
                except KernelError as exc:
                    failed.append(str(exc))
            if failed:
                log.error("routed: network %s: %d routes could not be written (%s); the next verification"
                          " retries", name, len(failed), "; ".join(failed[:3]))

    async def add_network(self, name: str) -> None:
        self.held.add(name)
        await self.sync(name)

    async def remove_network(self, name: str) -> None:
        """No routed network of that name here any more: its routes go."""
        self.held.discard(name)
        async with self._lock:
            for ip in self.programmed.pop(name, {}):
                await kroutes.drop_host_route(self.ipr, ip)

    async def view(self, name: str) -> list[dict]:
        """Each remote container of one network, and whether the kernel routes it."""
        kernel = await kroutes.host_routes(self.ipr)
        wanted = self.wanted(name)
        off = self.unreachable()
        return [{"ip": ip, "host": host, "via": via, "in_kernel": kernel.get(ip) == via,
                 **({} if ip in wanted else {"off_segment": off[via].why if via in off else "not checked yet"})}
                for ip, (host, via) in sorted(self.remote(name).items())]

    def problems(self, name: str) -> list[str]:
        vias = {via for _, via in self.remote(name).values()}
        return [f"host {', '.join(sorted(u.hosts))} ({via}): {u.why}: its containers are unreachable from here"
                for via, u in sorted(self.unreachable().items()) if via in vias]

    # --- drift --------------------------------------------------------------------

    async def verify(self) -> int:
        """Check the hosts' segments again, read the routes back and put right what
        differs (pynet's routes nobody wants go too); returns routes fixed."""
        if not self.synced.is_set():
            return 0  # without a snapshot of etcd nothing says what is wanted: keep what is there
        async with self._lock:
            checked: dict[str, tuple[bool, str]] = {}
            for name in list(self.held):
                await self._check(name, checked)
            self._checked = checked  # swapped whole: readers never see it half made
            # What is no longer so may be said again, should it come back.
            self._said &= {(via, host) for via, u in self.unreachable().items() for host in u.hosts}
            kernel = await kroutes.host_routes(self.ipr)
            fixed = 0
            wanted: dict[str, str] = {}
            for name in list(self.held):
                want = self.wanted(name)
                wanted.update(want)
                have = self.programmed.setdefault(name, {})
                for ip, via in want.items():
                    if kernel.get(ip) != via:
                        have.pop(ip, None)  # sync writes it again
                        fixed += 1
            for ip in [ip for ip in kernel if ip not in wanted]:
                await kroutes.drop_host_route(self.ipr, ip)
                for have in self.programmed.values():
                    have.pop(ip, None)
                fixed += 1
        for name in list(self.held):
            await self.sync(name)
        if fixed:
            log.warning("routed: %d routes were out of line with the cluster; repaired", fixed)
        return fixed


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
