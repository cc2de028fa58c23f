"""Which of pynet's firewall rules a packet meets, and what they do to it:
pynet's chains read from the live firewall (as iptables-save prints them)
and walked rule by rule for one packet. Pure: no I/O.

Only the matches pynet's own rules use are understood (interfaces, addresses,
protocol and port, conntrack state, address type, comments). A rule with any
other match is reported as undecided rather than guessed at. What Docker's
and the host's own chains do outside pynet's is not walked: a packet that
leaves pynet's chains without a verdict is said to do so.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field, replace
from typing import Optional

from ..kernel.iptables import Snapshot

TERMINAL = ("ACCEPT", "DROP", "REJECT", "DNAT", "MASQUERADE", "SNAT")


@dataclass(frozen=True)
class Packet:
    family: int
    src: str
    dst: str
    proto: str = "tcp"
    dport: Optional[int] = None
    iif: str = ""
    oif: str = ""
    ctstate: frozenset[str] = frozenset({"NEW"})
    local: frozenset[str] = frozenset()  # this host's addresses (addrtype LOCAL)

    def is_local(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return address in self.local or ip.is_loopback


@dataclass
class Verdict:
    target: str  # ACCEPT, DROP, DNAT, MASQUERADE, ... or "" (no verdict in pynet's chains)
    rule: str = ""  # "-A CHAIN spec", as iptables-save prints it
    chain: str = ""
    spec: str = ""
    args: list[str] = field(default_factory=list)  # the target's own options (--to-destination ...)
    undecided: str = ""  # a match pynet does not read: the walk stopped here

    @property
    def to_destination(self) -> str:
        return self.args[self.args.index("--to-destination") + 1] if "--to-destination" in self.args else ""


class Unknown(Exception):
    pass


def _iface(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def _in(net: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(net, strict=False)
    except ValueError:
        return False


def _ports(spec: str, port: int) -> bool:
    low, _, high = spec.partition(":")
    return int(low) <= port <= int(high or low)


def matches(tokens: list[str], p: Packet) -> tuple[bool, list[str], str]:
    """(whether the rule's matches hold for `p`, the target's options, the target)."""
    i = 0
    while i < len(tokens):
        negate = tokens[i] == "!"
        if negate:
            i += 1
        opt = tokens[i]
        if opt == "-j":
            return True, tokens[i + 2:], tokens[i + 1]
        arg = tokens[i + 1] if i + 1 < len(tokens) else ""
        i += 2
        if opt == "-m":
            continue  # the module's options follow and are read on their own
        if opt == "-i":
            hit = _iface(arg, p.iif)
        elif opt == "-o":
            hit = _iface(arg, p.oif)
        elif opt == "-s":
            hit = _in(arg, p.src)
        elif opt == "-d":
            hit = _in(arg, p.dst)
        elif opt == "-p":
            hit = arg == p.proto
        elif opt == "--dport":
            if p.dport is None:
                raise Unknown(f"a rule matches port {arg}: give --to ADDRESS:PORT")
            hit = _ports(arg, p.dport)
        elif opt == "--ctstate":
            hit = bool(set(arg.split(",")) & p.ctstate)
        elif opt == "--src-type":
            hit = arg == "LOCAL" and p.is_local(p.src)
        elif opt == "--dst-type":
            hit = arg == "LOCAL" and p.is_local(p.dst)
        elif opt == "--comment":
            continue
        else:
            raise Unknown(f"a match pynet does not read ({opt})")
        if hit == negate:
            return False, [], ""  # a miss: what follows (even a match pynet does not read) is moot
    return True, [], ""


def walk(snap: Snapshot, table: str, chain: str, p: Packet, depth: int = 0) -> Verdict:
    """The first verdict pynet's rules in `chain` (and the chains it jumps to) give `p`;
    Verdict("") if they give none (the packet goes on to the host's other rules)."""
    if depth > 8:
        return Verdict("", undecided="chains jump deeper than pynet's ever do")
    for spec in snap.chain_rules(table, chain):
        rule = f"-A {chain} {spec}"
        try:
            hit, args, target = matches(shlex.split(spec), p)
        except Unknown as exc:
            return Verdict("", rule, chain, spec, undecided=str(exc))
        except (ValueError, IndexError) as exc:
            return Verdict("", rule, chain, spec, undecided=f"a rule pynet cannot read ({exc})")
        if not hit or not target:
            continue
        if target == "RETURN":
            return Verdict("RETURN", rule, chain, spec)
        if target in TERMINAL:
            return Verdict(target, rule, chain, spec, args)
        inner = walk(snap, table, target, p, depth + 1)
        if inner.target == "RETURN":
            continue
        if inner.target or inner.undecided:
            return inner
    return Verdict("")


def with_destination(p: Packet, to: str) -> Packet:
    """`p` after a DNAT to `to` (address:port or [v6]:port)."""
    host, _, port = to.rpartition(":")
    return replace(p, dst=host.strip("[]"), dport=int(port) if port else p.dport,
                   ctstate=p.ctstate | {"DNAT"})
