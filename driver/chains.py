"""pynet's firewall chains, and how a set of wanted rules becomes an
iptables-restore batch: pure functions, no I/O. Each network mode says which
rules it wants (bridge/network_rules.py, publish/dnat_rules.py).

Rules are written in the exact form `iptables -S` prints them (e.g. with the
implicit `-m tcp`), so what is installed can be compared with what is wanted
by text. Chains:

    filter FORWARD            -> PYNET-FORWARD (after DOCKER-USER, before Docker's accepts)
    filter PYNET-FORWARD      -> PYNET-ISOLATION first, then each network's verdicts
    filter PYNET-ISOLATION    traffic leaving a pynet bridge for another bridge
    filter PYNET-ISOLATION-2  ... is dropped here (pynet's bridges and Docker's, by name)
    filter INPUT              -> PYNET-INPUT (containers may not reach the host's 127.0.0.1)
    nat PREROUTING, OUTPUT    -> PYNET-DNAT (published ports, for local destinations)
    nat POSTROUTING           -> PYNET-POSTROUTING (masquerade, hairpin)

Cross-network traffic is settled in the isolation chains before any
network's own rules, so the order of networks in PYNET-FORWARD never matters;
within one network it does, and a network's rules are always (re)installed
as a whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from .kernel.iptables import Snapshot

FORWARD = "PYNET-FORWARD"
ISOLATION = "PYNET-ISOLATION"
ISOLATION_2 = "PYNET-ISOLATION-2"
INPUT = "PYNET-INPUT"
DNAT = "PYNET-DNAT"
POSTROUTING = "PYNET-POSTROUTING"

CHAINS = {"filter": (FORWARD, ISOLATION, ISOLATION_2, INPUT), "nat": (DNAT, POSTROUTING)}
FAMILIES = (4, 6)

# Docker's own bridges: docker0, and br-<12 hex> for its user networks. Named
# one by one (never a br-+ wildcard, which would also catch a host's uplink
# bridge such as br-ex or br-lan).
DOCKER_BRIDGE = re.compile(r"^(docker0|br-[0-9a-f]{12})$")
# Jumps Docker keeps at the top of FORWARD that only drop or return: pynet's
# jump may come after them (operators' DOCKER-USER rules still apply first).
ALLOWED_BEFORE_JUMP = ("-j DOCKER-USER", "-j DOCKER-ISOLATION-STAGE-1")


@dataclass(frozen=True)
class Rule:
    family: int  # 4 or 6
    table: str
    chain: str
    spec: tuple[str, ...]

    @property
    def text(self) -> str:
        """As `iptables -S` prints it (without `-A CHAIN`)."""
        return " ".join(self.spec)


def comment(tag: str) -> tuple[str, ...]:
    # iptables-save quotes comments; iptables-restore reads the quotes back.
    return ("-m", "comment", "--comment", f'"{tag}"')


def base_jumps() -> list[Rule]:
    """Jumps from the built-in chains into pynet's, for both families."""
    rules = []
    for f in FAMILIES:
        rules += [
            Rule(f, "filter", "FORWARD", ("-j", FORWARD)),
            Rule(f, "filter", "INPUT", ("-j", INPUT)),
            Rule(f, "nat", "PREROUTING", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT)),
            Rule(f, "nat", "OUTPUT", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT)),
            Rule(f, "nat", "POSTROUTING", ("-j", POSTROUTING)),
        ]
    return rules


def base_chain_rules() -> list[Rule]:
    """Fixed rules inside pynet's chains, for both families (order matters)."""
    return [Rule(f, "filter", FORWARD, ("-j", ISOLATION)) for f in FAMILIES]


def docker_bridge_rules(bridges: Iterable[str]) -> list[Rule]:
    """Drops for traffic from pynet's bridges into Docker's (entering pynet's is
    covered by each network's own final drop)."""
    return [Rule(f, "filter", ISOLATION_2, ("-o", b, "-j", "DROP"))
            for b in sorted(bridges) for f in FAMILIES]


def jump_position(forward_rules: Sequence[str]) -> Optional[int]:
    """Where pynet's FORWARD jump should be inserted (1-based), or None if it is well placed.

    `forward_rules` are FORWARD's rules as iptables-save prints them, without
    the `-A FORWARD ` prefix. The jump must come before any rule that is not
    one of Docker's drop-only jumps, and exactly once.
    """
    jump = f"-j {FORWARD}"
    allowed = 0
    while allowed < len(forward_rules) and forward_rules[allowed] in ALLOWED_BEFORE_JUMP:
        allowed += 1
    if allowed < len(forward_rules) and forward_rules[allowed] == jump and list(forward_rules).count(jump) == 1:
        return None
    return allowed + 1


def _delete_all(snap: Snapshot, rule: Rule) -> list[str]:
    return [f"-D {rule.chain} {rule.text}"] * snap.count(rule.table, rule.chain, rule.text)


def plan_sync(snap: Snapshot, groups: Iterable[Sequence[Rule]]) -> dict[str, list[str]]:
    """Lines that make the firewall hold pynet's chains, jumps and every group.

    A group is a list of rules whose order matters: if any of its rules is
    missing, every copy of each is deleted and the group is appended whole.
    Only `snap.family`'s rules are considered.
    """
    f = snap.family
    batch: dict[str, list[str]] = {"filter": [], "nat": []}
    for table, chains in CHAINS.items():
        batch[table] += [f"-N {c}" for c in chains if (table, c) not in snap.chains]

    for jump in (r for r in base_jumps() if r.family == f):
        if jump.chain == "FORWARD":
            position = jump_position(snap.chain_rules("filter", "FORWARD"))
            if position is not None:
                batch["filter"] += _delete_all(snap, jump)
                batch["filter"].append(f"-I FORWARD {position} {jump.text}")
        elif snap.count(jump.table, jump.chain, jump.text) != 1:
            batch[jump.table] += _delete_all(snap, jump)
            batch[jump.table].append(f"-I {jump.chain} 1 {jump.text}")

    # The isolation jump must be the first rule of PYNET-FORWARD.
    first, *fixed = [r for r in base_chain_rules() if r.family == f]
    if snap.chain_rules("filter", FORWARD)[:1] != [first.text] or snap.count("filter", FORWARD, first.text) != 1:
        batch["filter"] += _delete_all(snap, first)
        batch["filter"].append(f"-I {FORWARD} 1 {first.text}")

    for group in [fixed, *groups]:
        group = [r for r in group if r.family == f]
        if all(snap.count(r.table, r.chain, r.text) >= 1 for r in group):
            continue
        for rule in dict.fromkeys(group):
            batch[rule.table] += _delete_all(snap, rule)
        for rule in group:
            batch[rule.table].append(f"-A {rule.chain} {rule.text}")
    return {table: lines for table, lines in batch.items() if lines}


def plan_remove(snap: Snapshot, rules: Iterable[Rule]) -> dict[str, list[str]]:
    """Lines that delete every copy of the rules (of `snap.family`) that are present."""
    batch: dict[str, list[str]] = {}
    for rule in dict.fromkeys(r for r in rules if r.family == snap.family):
        lines = _delete_all(snap, rule)
        if lines:
            batch.setdefault(rule.table, []).extend(lines)
    return batch
