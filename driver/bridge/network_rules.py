"""The bridge mode's firewall rules for one network: pure functions, no I/O.
The chains they go in, and how they are applied, are driver/chains.py's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .. import naming
from ..chains import FAMILIES, FORWARD, INPUT, ISOLATION, ISOLATION_2, POSTROUTING, Rule, comment
from . import store


@dataclass(frozen=True)
class NetworkPolicy:
    """What one network's rules depend on."""

    bridge: str
    tag: str  # comment on each rule: pynet:<network id>
    subnets4: tuple[str, ...] = ()
    subnets6: tuple[str, ...] = ()
    icc: bool = True
    masquerade4: bool = True
    masquerade6: bool = False
    internal: bool = False


# Rules a mode built on a network adds to it: they stand before the network's own
# in its group (e.g. the routed mode's cross-host accepts, before the final drop).
AddedRules = Callable[[NetworkPolicy], list[Rule]]


def network_rules(p: NetworkPolicy) -> list[Rule]:
    """Every filter and nat rule of one network, in the order they must stand."""
    br = p.bridge
    rules: list[Rule] = []
    for f in FAMILIES:
        subnets = p.subnets4 if f == 4 else p.subnets6
        masquerade = p.masquerade4 if f == 4 else p.masquerade6

        def add(table: str, chain: str, *matches: str, target: str, family: int = f) -> None:
            # matches, then the comment, then the target: the order iptables -S prints
            rules.append(Rule(family, table, chain, (*matches, *comment(p.tag), "-j", target)))

        # Isolation: leaving this bridge for another bridge. Traffic within the
        # bridge returns first, whatever the bridge is called.
        add("filter", ISOLATION, "-i", br, "-o", br, target="RETURN")
        add("filter", ISOLATION, "-i", br, "!", "-o", br, target=ISOLATION_2)
        add("filter", ISOLATION_2, "-o", br, target="DROP")

        # Inside the bridge (with br_netfilter, even this is filtered).
        if p.icc:
            add("filter", FORWARD, "-i", br, "-o", br, target="ACCEPT")
        else:
            # Published ports stay reachable from neighbours through the host address.
            add("filter", FORWARD, "-i", br, "-o", br, "-m", "conntrack", "--ctstate", "DNAT",
                target="ACCEPT")
            add("filter", FORWARD, "-i", br, "-o", br, target="DROP")
        if p.internal:
            add("filter", FORWARD, "-i", br, target="DROP")
            add("filter", FORWARD, "-o", br, target="DROP")
            continue
        if f == 4:
            # route_localnet (for ports published on 127.0.0.1) would also let
            # containers reach the host's loopback services (CVE-2020-8558):
            # only replies and forwarded ports may come in that way.
            add("filter", INPUT, "-d", "127.0.0.0/8", "-i", br, "-m", "conntrack", "!", "--ctstate",
                "RELATED,ESTABLISHED,DNAT", target="DROP")
        add("filter", FORWARD, "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
            target="ACCEPT")
        add("filter", FORWARD, "-o", br, "-m", "conntrack", "--ctstate", "DNAT", target="ACCEPT")
        add("filter", FORWARD, "-i", br, target="ACCEPT")
        add("filter", FORWARD, "-o", br, target="DROP")

        # Published ports reached from the host itself (127.0.0.1 or its own
        # addresses) or by a neighbour through the host (hairpin): the reply
        # must come back through the host, so the source becomes the gateway.
        add("nat", POSTROUTING, "-o", br, "-m", "addrtype", "--src-type", "LOCAL",
            "-m", "conntrack", "--ctstate", "DNAT", target="MASQUERADE")
        for subnet in subnets:
            add("nat", POSTROUTING, "-s", subnet, "-o", br, "-m", "conntrack", "--ctstate", "DNAT",
                target="MASQUERADE")
            if masquerade:
                add("nat", POSTROUTING, "-s", subnet, "!", "-o", br, target="MASQUERADE")
    return rules


def policy_of(net: store.Network) -> NetworkPolicy:
    """A saved network's policy, read from its record."""
    o = net.options
    return NetworkPolicy(
        bridge=net.bridge, tag=naming.firewall_tag(net.network_id),
        subnets4=tuple(str(s.pool) for s in net.ipv4), subnets6=tuple(str(s.pool) for s in net.ipv6),
        icc=o.icc, masquerade4=o.masquerade, masquerade6=o.gateway_mode_ipv6 == "nat",
        internal=o.internal)


def rules_of(net: store.Network, added: Sequence[AddedRules] = ()) -> list[Rule]:
    """A saved network's rules: first those modes built on it add (api.py), then its own."""
    policy = policy_of(net)
    return [*(rule for more in added for rule in more(policy)), *network_rules(policy)]
