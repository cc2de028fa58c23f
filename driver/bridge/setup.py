"""How the bridge mode builds a network in the kernel: a list of steps, each
with the condition under which it applies, run in order under one Rollback.
Every step is idempotent (a repeat or a repair finds its work done), and one
that fails undoes what the steps before it created. Another mode reuses
them: an overlay network is these steps plus a VXLAN device on the bridge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

from pyroute2 import AsyncIPRoute

from .. import naming
from ..firewall import Firewall
from ..kernel import links
from ..kernel.sysctl import Sysctl
from ..rollback import Rollback
from . import store
from .network_rules import AddedRules, rules_of

log = logging.getLogger("pynet.driver")


@dataclass
class Build:
    """What the steps of one network's set-up share."""

    net: store.Network
    ipr: AsyncIPRoute
    firewall: Firewall
    sysctl: Sysctl
    undo: Rollback
    saved: bool  # already in the state: a repeat or a repair, whose rules are not this call's
    with_rules: bool = True
    added_rules: Sequence[AddedRules] = ()  # rules modes built on the network add before its own
    index: int = 0  # the bridge's link index, once it exists
    created: bool = False  # whether this call created the bridge


@dataclass(frozen=True)
class Step:
    name: str
    applies: Callable[[Build], bool]
    run: Callable[[Build], Awaitable[None]]


def wanted_sysctls(net: store.Network) -> list[str]:
    """The kernel settings (each wanted at 1) a network needs."""
    if net.options.internal:
        return []
    wanted = ["net/ipv4/ip_forward", f"net/ipv4/conf/{net.bridge}/route_localnet"]
    if net.ipv6:
        wanted.append("net/ipv6/conf/all/forwarding")
    return wanted


async def _bridge(b: Build) -> None:
    net = b.net
    # An unmarked bridge of pynet's own name is a crash's leftover: adopt it;
    # one named by the operator (-o ...bridge.name) must carry pynet's mark.
    adopt = net.bridge == naming.bridge_name(net.network_id)
    b.index, b.created = await links.ensure_bridge(b.ipr, net.bridge, naming.network_alias(net.network_id),
                                                   mtu=net.options.mtu, adopt_unmarked=adopt)
    if b.created:
        b.undo.push(lambda: links.delete_link(b.ipr, net.bridge), f"bridge {net.bridge}")


async def _gateways(b: Build) -> None:
    await links.ensure_addresses(b.ipr, b.index, b.net.bridge, b.net.bridge_gateways)


async def _sysctls(b: Build) -> None:
    for key in wanted_sysctls(b.net):
        problem = await b.sysctl.ensure(key, "1")
        if problem:  # e.g. a read-only /proc/sys in a managed plugin
            log.warning("network %s: %s: outbound traffic or ports published on 127.0.0.1"
                        " may not work", naming.short(b.net.network_id), problem)


async def _rules(b: Build) -> None:
    rules = rules_of(b.net, b.added_rules)
    if not b.saved:  # a saved network keeps its rules: this call did not add them
        b.undo.push(lambda: b.firewall.remove(rules), "its firewall rules")
    await b.firewall.ensure([rules])


NETWORK_STEPS: list[Step] = [
    # The bridge, marked as this network's (its alias), at the network's MTU, up.
    Step("bridge", lambda b: True, _bridge),
    # The gateway addresses containers route through (no IPv4 one with inhibit_ipv4).
    Step("gateway addresses", lambda b: bool(b.net.bridge_gateways), _gateways),
    # Forwarding, and route_localnet for ports published on 127.0.0.1; an
    # internal network forwards nothing.
    Step("kernel settings", lambda b: bool(wanted_sysctls(b.net)), _sysctls),
    # Isolation, forwarding and NAT rules, as a whole; a repair leaves them to
    # the firewall check, which puts back every network's at once.
    Step("firewall rules", lambda b: b.with_rules, _rules),
]


async def run_steps(steps: list[Step], build: Build) -> None:
    for step in steps:
        if step.applies(build):
            await step.run(build)
