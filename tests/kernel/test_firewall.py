"""driver.kernel.firewall.Iptables against real iptables/ip6tables in a namespace."""

import pytest

from driver.errors import KernelError
from driver.kernel.firewall import FORWARD_CHAIN, Iptables, Rule, network_rules

pytestmark = pytest.mark.kernel

JUMP = f"-A FORWARD -j {FORWARD_CHAIN}"


@pytest.fixture
def fw(ns):
    return Iptables(prefix=["ip", "netns", "exec", ns.name])


def tagged(ns, tag, family):
    return [r for r in ns.rules(family) if tag in r]


async def test_ensure_base_creates_chain_and_jump_first(ns, fw):
    for family in (4, 6):  # somebody's rules already in FORWARD
        ns.iptables(family, "-A", "FORWARD", "-i", "eth9", "-j", "DROP")
    await fw.ensure_base()
    for family in (4, 6):
        rules = ns.rules(family)
        assert f"-N {FORWARD_CHAIN}" in rules
        assert ns.chain("FORWARD", family) == [JUMP, "-A FORWARD -i eth9 -j DROP"]
        assert ns.chain(FORWARD_CHAIN, family) == []


async def test_ensure_base_is_idempotent(ns, fw):
    await fw.ensure_base()
    first = (ns.rules(4), ns.rules(6))
    await fw.ensure_base()
    await Iptables(prefix=["ip", "netns", "exec", ns.name]).ensure_base()  # a restarted pynet
    assert (ns.rules(4), ns.rules(6)) == first
    for family in (4, 6):
        assert ns.chain("FORWARD", family).count(JUMP) == 1


async def test_ensure_adds_network_rules_once(ns, fw):
    await fw.ensure_base()
    rules = network_rules("pn-0123456789ab", "pynet:0123456789ab")
    assert await fw.ensure(rules) == rules
    assert await fw.ensure(rules) == []
    expected = (f"-A {FORWARD_CHAIN} -i pn-0123456789ab -o pn-0123456789ab"
                ' -m comment --comment "pynet:0123456789ab" -j ACCEPT')
    for family in (4, 6):
        assert ns.chain(FORWARD_CHAIN, family) == [expected]
    assert await fw.missing(rules) == []


async def test_ensure_adds_only_what_is_missing(ns, fw):
    await fw.ensure_base()
    rules = network_rules("pn-0123456789ab", "pynet:0123456789ab")
    await fw.ensure(rules)
    ns.iptables(6, "-F", FORWARD_CHAIN)  # someone flushed the IPv6 side
    assert await fw.missing(rules) == [rules[1]]
    assert await fw.ensure(rules) == [rules[1]]
    for family in (4, 6):
        assert len(tagged(ns, "pynet:0123456789ab", family)) == 1


async def test_delete_removes_every_copy_and_nothing_else(ns, fw):
    await fw.ensure_base()
    rules = network_rules("pn-0123456789ab", "pynet:0123456789ab")
    other = network_rules("pn-ba9876543210", "pynet:ba9876543210")
    await fw.ensure(rules + other)
    for family in (4, 6):  # duplicates, as an older pynet or a race could leave them
        for _ in range(2):
            ns.iptables(family, "-A", FORWARD_CHAIN, "-i", "pn-0123456789ab", "-o", "pn-0123456789ab",
                        "-m", "comment", "--comment", "pynet:0123456789ab", "-j", "ACCEPT")
        # the same match without pynet's comment is somebody else's
        ns.iptables(family, "-A", FORWARD_CHAIN, "-i", "pn-0123456789ab", "-o", "pn-0123456789ab",
                    "-j", "ACCEPT")
        assert len(tagged(ns, "pynet:0123456789ab", family)) == 3
    await fw.delete(rules)
    for family in (4, 6):
        assert tagged(ns, "pynet:0123456789ab", family) == []
        assert len(tagged(ns, "pynet:ba9876543210", family)) == 1
        assert f"-A {FORWARD_CHAIN} -i pn-0123456789ab -o pn-0123456789ab -j ACCEPT" in ns.rules(family)
        assert ns.chain("FORWARD", family) == [JUMP]
    await fw.delete(rules)  # missing rules are fine
    assert await fw.missing(rules) == rules


async def test_ensure_is_all_or_nothing(ns, fw):
    await fw.ensure_base()
    good = network_rules("pn-0123456789ab", "pynet:0123456789ab")
    bad = Rule(4, "filter", FORWARD_CHAIN, ("-i", "pn-0123456789ab", "-m", "comment", "--comment",
                                            "pynet:0123456789ab", "-j", "PYNET-NO-SUCH-CHAIN"))
    before = (ns.rules(4), ns.rules(6))
    with pytest.raises(KernelError, match="PYNET-NO-SUCH-CHAIN"):
        await fw.ensure([good[0], bad, good[1]])
    assert (ns.rules(4), ns.rules(6)) == before
    # rules that were there before the failed call stay
    await fw.ensure([good[0]])
    with pytest.raises(KernelError):
        await fw.ensure([good[0], good[1], bad])
    assert len(tagged(ns, "pynet:0123456789ab", 4)) == 1
    assert tagged(ns, "pynet:0123456789ab", 6) == []


async def test_ensure_without_base_fails_cleanly(ns, fw):
    rules = network_rules("pn-0123456789ab", "pynet:0123456789ab")
    with pytest.raises(KernelError, match=FORWARD_CHAIN):
        await fw.ensure(rules)
    assert tagged(ns, "pynet:", 4) == [] and tagged(ns, "pynet:", 6) == []


async def test_a_missing_binary_is_a_kernel_error(ns):
    fw = Iptables(prefix=["ip", "netns", "exec", ns.name], v6="pynet-no-such-ip6tables")
    with pytest.raises(KernelError):
        await fw.ensure_base()
