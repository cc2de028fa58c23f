"""The bridge's set-up steps on an in-memory kernel: which apply when, and a
failing step undoes what the steps before it created."""

import ipaddress

import pytest

from driver.bridge import store
from driver.bridge.options import NetworkOptions
from driver.bridge.setup import NETWORK_STEPS, Build, run_steps
from driver.errors import KernelError
from driver.rollback import Rollback

from .fakes import FakeFirewall, FakeIPRoute, FakeSysctl

NID = "1ed2c0ffee00" + "a" * 52
I = ipaddress.ip_interface
N = ipaddress.ip_network


def network(**options) -> store.Network:
    return store.Network(NID, "pn-1ed2c0ffee00", NetworkOptions(**options),
                         [store.Subnet(N("10.1.0.0/24"), I("10.1.0.1/24"))], [])


async def build(net: store.Network, **kw):
    ipr, firewall, sysctl = FakeIPRoute(), FakeFirewall(), FakeSysctl()
    async with Rollback("network test") as undo:
        b = Build(net, ipr, firewall, sysctl, undo, **{"saved": False, **kw})
        await run_steps(NETWORK_STEPS, b)
    return b, ipr, firewall, sysctl


def test_the_steps_in_order():
    assert [s.name for s in NETWORK_STEPS] == ["bridge", "gateway addresses", "kernel settings", "firewall rules"]


async def test_a_new_network_gets_every_step():
    b, ipr, firewall, sysctl = await build(network())
    assert b.created and "pn-1ed2c0ffee00" in {m["ifname"] for m in ipr.links.values()}
    assert any(addrs for addrs in ipr.addrs.values())
    assert ("net/ipv4/ip_forward", "1") in sysctl.keys
    assert [call for call, _ in firewall.calls] == ["ensure"]


async def test_an_internal_network_sets_no_forwarding_and_a_repair_no_rules():
    _, _, firewall, sysctl = await build(network(internal=True), with_rules=False)
    assert sysctl.keys == [] and firewall.calls == []


async def test_a_failing_step_undoes_the_bridge_it_created():
    ipr, firewall, sysctl = FakeIPRoute(), FakeFirewall(), FakeSysctl()

    async def refuse(groups=()):
        raise KernelError("iptables-restore: line 3 failed")

    firewall.ensure = refuse
    with pytest.raises(KernelError, match="line 3"):
        async with Rollback("network test") as undo:
            await run_steps(NETWORK_STEPS, Build(network(), ipr, firewall, sysctl, undo, saved=False))
    assert "pn-1ed2c0ffee00" not in {m["ifname"] for m in ipr.links.values()}
    assert [call for call, _ in firewall.calls] == ["remove"]  # its rules, in case some went in


async def test_rules_a_mode_adds_stand_first_in_the_networks_group():
    from driver.chains import FORWARD, Rule

    def cross_host(policy):
        return [Rule(4, "filter", FORWARD, ("!", "-i", policy.bridge, "-o", policy.bridge, "-j", "ACCEPT"))]

    _, _, firewall, _ = await build(network(), added_rules=[cross_host])
    (call, groups), = firewall.calls
    group = list(groups)[0]
    assert group[0].spec == ("!", "-i", "pn-1ed2c0ffee00", "-o", "pn-1ed2c0ffee00", "-j", "ACCEPT")
    assert group[-1].table == "nat"  # the network's own rules follow
