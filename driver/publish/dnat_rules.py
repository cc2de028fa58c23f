"""The firewall rule of a published port: pure, no I/O."""

from __future__ import annotations

from ..chains import DNAT, Rule, comment
from .portmap import Binding


def binding_rules(b: Binding, tag: str) -> list[Rule]:
    """The DNAT rule of one published port."""
    host_len = 32 if b.family == 4 else 128
    dest = () if b.any_address else ("-d", f"{b.host_ip}/{host_len}")
    target = f"{b.container_ip}:{b.port}" if b.family == 4 else f"[{b.container_ip}]:{b.port}"
    return [Rule(b.family, "nat", DNAT, (*dest, "-p", b.proto, "-m", b.proto, "--dport", str(b.host_port),
                                         *comment(tag), "-j", "DNAT", "--to-destination", target))]
