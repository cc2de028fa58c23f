"""Firewall rule builders and the Iptables runner's logic, without root.

The runner is exercised through a fake `run` (a scripted iptables) and, for
argv construction, through `echo` as the prefix.
"""

import pytest

from driver import naming
from driver.errors import KernelError
from driver.kernel.firewall import FORWARD_CHAIN, Iptables, Rule, base_rules, network_rules


def test_base_rules_jump_to_pynets_chain_for_both_families():
    assert base_rules() == [Rule(4, "filter", "FORWARD", ("-j", FORWARD_CHAIN)),
                            Rule(6, "filter", "FORWARD", ("-j", FORWARD_CHAIN))]


def test_network_rules():
    tag = naming.firewall_tag("1ed2c0ffee00" + "a" * 52)
    assert tag == "pynet:1ed2c0ffee00"
    rules = network_rules("pn-1ed2c0ffee00", tag)
    assert [r.family for r in rules] == [4, 6]
    for rule in rules:
        assert (rule.table, rule.chain) == ("filter", FORWARD_CHAIN)
        assert rule.spec == ("-i", "pn-1ed2c0ffee00", "-o", "pn-1ed2c0ffee00",
                             "-m", "comment", "--comment", "pynet:1ed2c0ffee00", "-j", "ACCEPT")


def test_network_rules_are_plain_argv():
    """Each argument is one argv element: a bridge name can never add arguments."""
    rules = network_rules("br 0 -j DROP", "pynet:x")
    assert rules[0].spec[1] == "br 0 -j DROP"


def test_rules_are_hashable_values():
    assert network_rules("b", "t") == network_rules("b", "t")
    assert len(set(network_rules("b", "t") + network_rules("b", "t"))) == 2


class ScriptedIptables(Iptables):
    """iptables as a list of present rules (copies allowed); `fail_on` makes -A fail."""

    def __init__(self, present=(), fail_on=None):
        super().__init__()
        self.present = [(family, tuple(args)) for family, args in present]
        self.fail_on = fail_on
        self.log = []

    async def run(self, family, args):
        args = list(args)
        self.log.append((family, args))
        op, key = args[2], (family, tuple(args[3:]))  # args: -t TABLE OP CHAIN SPEC...
        if op == "-C":
            return (0, "") if key in self.present else (1, "Bad rule")
        if op == "-A":
            if self.fail_on and self.fail_on in args:
                return 2, f"Couldn't load target `{self.fail_on}'"
            self.present.append(key)
            return 0, ""
        if op == "-D":
            if key not in self.present:
                return 1, "Bad rule"
            self.present.remove(key)
            return 0, ""
        return 0, ""


async def test_ensure_adds_missing_only():
    rules = network_rules("pn-x", "pynet:x")
    fw = ScriptedIptables(present=[(4, [FORWARD_CHAIN, *rules[0].spec])])
    assert await fw.ensure(rules) == [rules[1]]
    assert [a[2] for _, a in fw.log] == ["-C", "-C", "-A"]
    assert fw.log[-1] == (6, ["-t", "filter", "-A", FORWARD_CHAIN, *rules[1].spec])


async def test_ensure_rolls_back_in_reverse_order():
    good = network_rules("pn-x", "pynet:x")
    bad = Rule(4, "filter", FORWARD_CHAIN, ("-j", "NOPE"))
    extra = Rule(4, "filter", FORWARD_CHAIN, ("-i", "pn-y", "-j", "ACCEPT"))
    fw = ScriptedIptables(fail_on="NOPE")
    with pytest.raises(KernelError, match="NOPE"):
        await fw.ensure([good[0], extra, bad, good[1]])
    assert fw.present == []
    deletes = [(f, a[3:]) for f, a in fw.log if a[2] == "-D"]
    assert deletes == [(4, [FORWARD_CHAIN, *extra.spec]), (4, [FORWARD_CHAIN, *good[0].spec])]
    assert not any(f == 6 for f, _ in fw.log)  # stopped at the failure


async def test_ensure_rollback_keeps_rules_that_were_there():
    good = network_rules("pn-x", "pynet:x")
    bad = Rule(6, "filter", FORWARD_CHAIN, ("-j", "NOPE"))
    fw = ScriptedIptables(present=[(4, [FORWARD_CHAIN, *good[0].spec])], fail_on="NOPE")
    with pytest.raises(KernelError):
        await fw.ensure([good[0], good[1], bad])
    assert fw.present == [(4, (FORWARD_CHAIN, *good[0].spec))]


async def test_delete_removes_every_copy():
    rules = network_rules("pn-x", "pynet:x")
    other = network_rules("pn-y", "pynet:y")
    fw = ScriptedIptables(present=[(4, [FORWARD_CHAIN, *rules[0].spec])] * 3
                          + [(6, [FORWARD_CHAIN, *other[1].spec])])
    await fw.delete(rules)
    assert fw.present == [(6, (FORWARD_CHAIN, *other[1].spec))]
    await fw.delete(rules)  # nothing left: fine


async def test_runner_argv(tmp_path):
    fw = Iptables(prefix=["echo", "PREFIX"], v4="ipt4", v6="ipt6")
    assert await fw.run(4, ["-t", "filter", "-S"]) == (0, "PREFIX ipt4 -w 5 -t filter -S")
    assert await fw.run(6, ["-A", "X", "-m", "comment", "--comment", "a b;c"]) == \
        (0, "PREFIX ipt6 -w 5 -A X -m comment --comment a b;c")


async def test_runner_reports_failures():
    fw = Iptables(prefix=["sh", "-c", "echo oops >&2; exit 3", "sh"])
    code, text = await fw.run(4, ["-S"])
    assert (code, text) == (3, "oops")
    with pytest.raises(KernelError, match="iptables -S: oops"):
        await fw._must(4, ["-S"])


async def test_missing_binary_is_a_kernel_error():
    fw = Iptables(v4="pynet-no-such-iptables", v6="pynet-no-such-ip6tables")
    with pytest.raises(KernelError, match="pynet-no-such-iptables"):
        await fw.ensure(network_rules("pn-x", "pynet:x"))
