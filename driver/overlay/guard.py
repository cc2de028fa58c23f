"""Only cluster members can send into an overlay network.

VXLAN carries no authentication, and a VNI is no secret: anyone on the
underlay could send frames with a network's VNI to a member's VTEP, and
they would reach its containers with a source address they trust. Each
member accepts VXLAN (UDP 4789 to its VTEP) only from the underlay
addresses of the cluster's members (driver/cluster/members.py) and drops
the rest in INPUT, before the VXLAN socket decapsulates anything: one rule
per member, then a drop that also notes the sender (xt_recent), so pynet can
name it in its log. The rules are a group of the firewall's, restored like
the others when flushed and checked by `pynet doctor`.

Not protected: traffic between members is not encrypted, and whoever can
send from a member's underlay address is let in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from pathlib import Path
from typing import Optional

from ..chains import INPUT, Rule, comment
from ..cluster.members import Members
from ..firewall import Firewall
from ..kernel.vxlan import VXLAN_PORT

log = logging.getLogger("pynet.overlay")

TAG = "pynet:vxlan-members"
RECENT = "pynet-vxlan"  # /proc/net/xt_recent/<this>: who was dropped lately
SAY_AGAIN_AFTER = 600.0  # seconds before the same sender is named again


def guard_rules(vtep: str, members: set[str]) -> list[Rule]:
    """The group: each member's VXLAN let through, then everyone else's dropped."""
    ip = ipaddress.ip_address(vtep)
    family, full = ip.version, ("32" if ip.version == 4 else "128")
    mask = "255.255.255.255" if family == 4 else "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    to_me = ("-d", f"{vtep}/{full}", "-p", "udp", "-m", "udp", "--dport", str(VXLAN_PORT))
    mine = sorted((a for a in map(ipaddress.ip_address, members) if a.version == family))
    rules = [Rule(family, "filter", INPUT, ("-s", f"{m}/{full}", *to_me, *comment(TAG), "-j", "RETURN"))
             for m in mine]
    rules.append(Rule(family, "filter", INPUT, (*to_me, "-m", "recent", "--set", "--name", RECENT, "--mask", mask,
                                               "--rsource", *comment(TAG), "-j", "DROP")))
    return rules


class VxlanGuard:
    def __init__(self, firewall: Firewall, members: Members, vtep: str, recent_dir: str = "/proc/net/xt_recent") -> None:
        self.firewall, self.members, self.vtep = firewall, members, vtep
        self.rules: Optional[list[Rule]] = None  # None until the members are known
        self.recent = Path(recent_dir) / RECENT
        self.said: dict[str, float] = {}  # sender -> when it was last named
        self.dropped = 0  # packets dropped, as the kernel counted them at the last look
        self._lock = asyncio.Lock()  # the hosts' and the endpoints' watches both call update()
        firewall.add_source(self.wanted)
        members.listeners.append(self.update)

    def wanted(self) -> list[list[Rule]]:
        return [self.rules] if self.rules is not None else []

    async def update(self) -> None:
        """The group brought to the members now: a new one let in, a gone one cut off.
        Before the members are known, what the kernel has stands (a restart with etcd
        away keeps the last known set)."""
        async with self._lock:
            members = self.members.addresses()
            if members is None:
                return
            rules = guard_rules(self.vtep, members | {self.vtep})
            if rules == self.rules:
                return
            stale = await self._installed()
            self.rules = rules
            gone = [r for r in stale if r not in rules]
            if gone:
                await self.firewall.remove(gone)
            await self.firewall.ensure([rules])
            log.info("overlay: VXLAN accepted from %d member addresses", len(rules) - 1)

    async def _installed(self) -> list[Rule]:
        """The guard's rules in the kernel, whoever's last set they are (a restart's too)."""
        family = ipaddress.ip_address(self.vtep).version
        snap = await self.firewall.iptables.snapshot(family, ("filter",))
        return [Rule(family, "filter", INPUT, tuple(spec.split(" ")))
                for spec in snap.chain_rules("filter", INPUT) if f'"{TAG}"' in spec]

    async def look(self) -> None:
        """The drop's counter, and the senders it noted, named once in a while each."""
        if self.rules is None:
            return
        senders = await asyncio.to_thread(_senders, self.recent)
        if not senders and not self.dropped:
            return  # nothing was ever dropped: spare the idle host an iptables-save
        drop = self.rules[-1]
        self.dropped = await self.firewall.iptables.packets(drop.family, "filter", INPUT, drop.text)
        now = time.time()
        for sender in senders:
            if now - self.said.get(sender, 0.0) >= SAY_AGAIN_AFTER:
                self.said[sender] = now
                log.warning("overlay: VXLAN from %s dropped: not the underlay address of a cluster member"
                            " (%d such packets so far)", sender, self.dropped)


def _senders(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError:
        return []
    return [word[4:] for line in text.splitlines() for word in line.split() if word.startswith("src=")]
