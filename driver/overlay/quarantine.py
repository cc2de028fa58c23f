"""Containers a reclaim left behind, kept off the overlay.

A host away past the grace period is reclaimed by its peers: its endpoint
records are deleted and its addresses, after a cool-down, go to other
hosts' containers. If it comes back with its containers still running, each
of them still answers an address that may now be another container's. Its
endpoints are stale (published under an earlier epoch: Endpoints.stale()),
and stay quarantined until Docker removes them: their bridge port is cut
off (links.QUARANTINE: isolated, as every VXLAN port is, so no frame passes
between them and the overlay; nothing flooded to them, their MAC learned
nowhere, so no container of their own host finds them either, though the
remote owner of their address has the same MAC); their records are never
written again, so no peer holds an entry for them; and their addresses are
not handed out on this host until they go. The cut comes before this host
is announced again (Membership.before_announce). pynet says so in its log, /healthz, `pynet cluster`,
`pynet doctor` and `pynet path`, with the fix: restart those containers
(a new endpoint, a new address, the overlay again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from .. import naming
from ..errors import KernelError
from ..kernel import links

if TYPE_CHECKING:
    from ..cluster.endpoints import Endpoints

log = logging.getLogger("pynet.overlay")

FIX = "restart the container (`docker restart NAME`): its new endpoint gets an address of this host's and joins" \
      " the overlay again"


@dataclass(frozen=True)
class Stale:
    endpoint_id: str
    network: str  # the cluster network's name
    epoch: int  # the one it was published under
    ips: tuple[str, ...]

    @property
    def veth(self) -> str:
        return naming.veth_names(self.endpoint_id)[0]

    def why(self, epoch: int | None) -> str:
        return (f"endpoint {naming.short(self.endpoint_id)} ({', '.join(self.ips)}) on cluster network"
                f" {self.network}: quarantined: this host was reclaimed while away (epoch {self.epoch} ->"
                f" {epoch}); its address may now be another host's container's")


class Quarantine:
    def __init__(self, endpoints: "Endpoints", ipr) -> None:
        self.endpoints, self.ipr = endpoints, ipr
        self.told: set[str] = set()  # endpoints whose quarantine was logged

    def stale(self, names: Iterable[str]) -> list[Stale]:
        """This host's stale endpoints on the overlay networks `names` that are still here
        (their veth is: a record that outlived its endpoint quarantines nothing)."""
        held = set(names)
        found = [Stale(eid, name, epoch, tuple(ips)) for eid, (name, epoch, ips)
                 in sorted(self.endpoints.stale().items()) if name in held]
        return [s for s in found if self.ipr is None or links.link_index(self.ipr, s.veth) is not None]

    async def apply(self, names: Iterable[str]) -> int:
        """Isolate every stale endpoint's bridge port (again: a rebuilt veth is a new port);
        returns how many are quarantined."""
        found = self.stale(names)
        epoch = self.endpoints.membership.epoch
        for s in found:
            try:
                await links.quarantine_port(self.ipr, s.veth)
            except KernelError as exc:  # e.g. its veth is off the bridge: the bridge mode's repair comes first
                log.warning("endpoint %s: cannot cut its bridge port off yet: %s", naming.short(s.endpoint_id), exc)
            if s.endpoint_id not in self.told:
                self.told.add(s.endpoint_id)
                log.error("%s; %s", s.why(epoch), FIX)
        self.told &= {s.endpoint_id for s in found}
        return len(found)

    def problems(self, names: Iterable[str]) -> list[str]:
        epoch = self.endpoints.membership.epoch
        return [f"{s.why(epoch)}: {FIX}" for s in self.stale(names)]
