"""What the routed mode adds to a bridge network, kernel settings and
firewall rules: pure functions, no I/O.

A container sees the whole subnet on its link and asks ARP for a remote
container's address; the bridge answers for it (proxy ARP) because the
host routes that address elsewhere, through the underlay, and forwards the
packet. Proxy ARP is chosen over Calico's on-link gateway route because
Docker gives the container its address with the subnet's length and its
routes itself: the container needs nothing special. proxy_delay 0: the
kernel otherwise delays each proxied answer by up to 0.8 s.

The rules stand before the bridge network's own: traffic within the subnet
between this bridge and the underlay is the network's inside traffic
(accepted, or dropped with ICC off, and allowed on an --internal network),
and never masqueraded.
"""

from __future__ import annotations

from ..bridge.api import AddedRules, NetworkPolicy, Rule
from ..chains import FORWARD, POSTROUTING, comment


def routed_sysctls(bridge: str) -> list[tuple[str, str]]:
    return [("net/ipv4/ip_forward", "1"), (f"net/ipv4/conf/{bridge}/proxy_arp", "1"),
            (f"net/ipv4/neigh/{bridge}/proxy_delay", "0")]


def cross_host_rules(underlay: str) -> AddedRules:
    """The rules of a routed network whose peers are reached through interface `underlay`."""
    def rules(p: NetworkPolicy) -> list[Rule]:
        br, out = p.bridge, []

        def add(table: str, chain: str, *matches: str, target: str) -> None:
            out.append(Rule(4, table, chain, (*matches, *comment(p.tag), "-j", target)))

        for subnet in p.subnets4:
            # In the order iptables -S prints matches: -s, -d, -i, -o.
            if p.icc:
                add("filter", FORWARD, "-d", subnet, "-i", br, "-o", underlay, target="ACCEPT")
                add("filter", FORWARD, "-s", subnet, "-d", subnet, "-i", underlay, "-o", br, target="ACCEPT")
            else:  # as between two containers of one bridge; published ports stay reachable
                add("filter", FORWARD, "-d", subnet, "-i", br, "!", "-o", br, target="DROP")
            add("nat", POSTROUTING, "-s", subnet, "-d", subnet, "-o", underlay, target="RETURN")
        return out
    return rules
