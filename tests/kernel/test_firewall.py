"""The firewall against real iptables/ip6tables (iptables-save/-restore) in a namespace.

Everything runs inside the `ns` fixture's namespace through
Iptables(prefix=['ip', 'netns', 'exec', NS]); results are also read back with
plain `iptables -S` (ns.rules), not only through the code under test.
"""

import asyncio
import ipaddress

import pytest

from driver import wire
from driver.bridge import store
from driver.db import Database
from driver.errors import KernelError
from driver.firewall import Firewall
from driver.kernel.iptables import Iptables
from driver.kernel.sysctl import Sysctl
from driver.bridge import BridgeMode
from driver.publish.portmap import Binding
from driver.bridge.network_rules import NetworkPolicy, network_rules
from driver.publish.dnat_rules import binding_rules
from driver.chains import (DNAT, FAMILIES, FORWARD, ISOLATION, ISOLATION_2, POSTROUTING, Rule, base_chain_rules,
                          base_jumps, plan_sync)

pytestmark = pytest.mark.kernel

A = ipaddress.ip_address
JUMP = f"-A FORWARD -j {FORWARD}"

NET_A = NetworkPolicy("pn-aaaaaaaaaaaa", "pynet:aaaaaaaaaaaa", ("10.1.0.0/24",))
NET_B = NetworkPolicy("pn-bbbbbbbbbbbb", "pynet:bbbbbbbbbbbb", ("10.2.0.0/24", "10.20.0.0/16"), icc=False)
NET_C = NetworkPolicy("pn-cccccccccccc", "pynet:cccccccccccc", ("10.3.0.0/24",), ("fd00:3::/64",),
                      internal=True)
NET_D = NetworkPolicy("pn-dddddddddddd", "pynet:dddddddddddd", ("10.4.0.0/24",),
                      ("fd00:4::/64", "fd00:0:0:44::/64"), masquerade4=False, masquerade6=True)
NET_E = NetworkPolicy("pnv6-custom", "pynet:eeeeeeeeeeee", (), ("fd00:5::/64",))  # IPv6 only
NETS = [NET_A, NET_B, NET_C, NET_D, NET_E]

BINDINGS_A = [Binding("tcp", A("0.0.0.0"), 8080, A("10.1.0.2"), 80),
              Binding("udp", A("127.0.0.1"), 5353, A("10.1.0.2"), 53),
              Binding("tcp", A("192.0.2.7"), 8443, A("10.1.0.3"), 443)]
BINDINGS_D = [Binding("tcp", A("::"), 8080, A("fd00:4::2"), 80),
              Binding("udp", A("::1"), 5353, A("fd00:0:0:44::2"), 53),
              Binding("tcp", A("10.0.0.1"), 2222, A("10.4.0.2"), 22),
              Binding("sctp", A("fd00:0:0:1:2:0:0:3"), 9, A("fd00:4:0:0:1::9"), 9)]


def groups_of(*nets):
    groups = [network_rules(n) for n in nets]
    if NET_A in nets:
        groups.append([r for b in BINDINGS_A for r in binding_rules(b, NET_A.tag)])
    if NET_D in nets:
        groups.append([r for b in BINDINGS_D for r in binding_rules(b, NET_D.tag)])
    return groups


GROUPS = groups_of(*NETS)


@pytest.fixture
def ipt(ns):
    return Iptables(prefix=["ip", "netns", "exec", ns.name])


@pytest.fixture
def fw(ipt):
    return Firewall(ipt, wanted=lambda: GROUPS)


def state(ns):
    """Every rule of both families and tables, as `iptables -S` prints them."""
    return {(f, t): ns.rules(f, t) for f in FAMILIES for t in ("filter", "nat")}


def expected_chains(family, groups):
    """chain -> rule texts in order: what plan_sync on an empty namespace builds."""
    chains = {}
    for r in [*base_jumps(), *base_chain_rules(), *(r for g in groups for r in g)]:
        if r.family == family:
            chains.setdefault((r.table, r.chain), []).append(r.text)
    return chains


def tagged(ns, tag):
    return [r for f in FAMILIES for t in ("filter", "nat") for r in ns.rules(f, t) if tag in r]


# --- round trip: what pynet builds is what iptables-save prints -------------------------------

async def test_every_rule_reads_back_exactly_as_built(ns, ipt):
    for family in FAMILIES:
        await ipt.apply(family, plan_sync(await ipt.snapshot(family), GROUPS))
    for family in FAMILIES:
        snap = await ipt.snapshot(family)
        assert plan_sync(snap, GROUPS) == {}
        for (table, chain), texts in expected_chains(family, GROUPS).items():
            assert snap.chain_rules(table, chain) == texts, (family, chain)
            # and `iptables -S` prints the same
            assert [r for r in ns.rules(family, table) if r.startswith(f"-A {chain} ")] == \
                [f"-A {chain} {t}" for t in texts]
        for table, chains in (("filter", (FORWARD, ISOLATION, ISOLATION_2)), ("nat", (DNAT, POSTROUTING))):
            for chain in chains:
                assert (table, chain) in snap.chains
    # Spot checks, written out: the rules really hold what they should.
    nat4, nat6 = ns.rules(4, "nat"), ns.rules(6, "nat")
    assert (f'-A {DNAT} -d 127.0.0.1/32 -p udp -m udp --dport 5353 -m comment --comment "{NET_A.tag}"'
            " -j DNAT --to-destination 10.1.0.2:53") in nat4
    assert (f'-A {DNAT} -p tcp -m tcp --dport 8080 -m comment --comment "{NET_D.tag}"'
            " -j DNAT --to-destination [fd00:4::2]:80") in nat6
    assert not any("10.4.0.2" in r for r in nat6) and not any("fd00" in r for r in nat4)
    assert any(f"-s fd00:0:0:44::/64 ! -o {NET_D.bridge}" in r for r in nat6)
    assert not any(f"-s 10.4.0.0/24 ! -o {NET_D.bridge}" in r for r in nat4)  # masquerade4 off
    assert not any(NET_C.bridge in r for r in nat4 + nat6)  # internal


async def test_snapshot_of_a_fresh_namespace(ns, ipt):
    for family in FAMILIES:
        snap = await ipt.snapshot(family)
        assert snap.family == family and snap.rules == {}
        assert {("filter", "FORWARD"), ("nat", "PREROUTING"), ("nat", "POSTROUTING")} <= snap.chains
        assert not any(chain.startswith("PYNET") for _, chain in snap.chains)


# --- Firewall.ensure / remove ------------------------------------------------------------------

async def test_ensure_is_idempotent(ns, ipt, fw):
    assert await fw.ensure(GROUPS) > 0
    before = state(ns)
    assert await fw.ensure(GROUPS) == 0
    assert await Firewall(ipt).ensure(GROUPS) == 0  # a restarted pynet
    assert await fw.ensure() == 0
    assert await fw.check() == 0 and fw.restored == 0
    assert state(ns) == before
    for family in FAMILIES:
        assert ns.chain("FORWARD", family) == [JUMP]


async def test_ensure_with_no_group_builds_the_base(ns, fw):
    assert await fw.ensure() == 2 * (4 + 2 + 1 + 2 + 3)  # -N, jumps, fixed rules; per family
    for family in FAMILIES:
        assert ns.chain("FORWARD", family) == [JUMP]
        assert ns.chain(FORWARD, family) == [f"-A {FORWARD} -j {ISOLATION}"]
        assert ns.chain(ISOLATION_2, family) == []


async def test_remove_takes_one_networks_rules_only(ns, ipt, fw):
    await fw.ensure(GROUPS)
    assert tagged(ns, NET_A.tag)
    a_rules = [r for g in groups_of(NET_A) for r in g]
    await fw.remove(a_rules)
    assert tagged(ns, NET_A.tag) == []
    others = groups_of(NET_B, NET_C, NET_D, NET_E)
    for family in FAMILIES:
        snap = await ipt.snapshot(family)
        assert plan_sync(snap, others) == {}
        assert snap.chain_rules("filter", FORWARD)[0] == f"-j {ISOLATION}"
    before = state(ns)
    await fw.remove(a_rules)  # again: nothing there, nothing done, no error
    assert state(ns) == before


async def test_remove_one_family_failing_does_not_stop_the_other(ns, fw):
    await fw.ensure(GROUPS)
    broken = Firewall(Iptables(prefix=["ip", "netns", "exec", ns.name], v6="pynet-no-such-ip6tables"))
    with pytest.raises(KernelError, match="pynet-no-such-ip6tables"):
        await broken.remove(network_rules(NET_A))
    gone = {f"-A {r.chain} {r.text}" for r in network_rules(NET_A)}
    assert not gone & {r for t in ("filter", "nat") for r in ns.rules(4, t)}
    assert len(gone & {r for t in ("filter", "nat") for r in ns.rules(6, t)}) == \
        len([r for r in network_rules(NET_A) if r.family == 6])


# --- Firewall.check: put back what disappears ---------------------------------------------------

async def test_check_restores_flushed_rules(ns, fw):
    first = await fw.check()
    assert first > 0 and fw.restored == first
    whole = state(ns)
    total = first

    ns.iptables(4, "-F", FORWARD)
    applied = await fw.check()
    assert applied > 0
    total += applied
    assert fw.restored == total
    assert state(ns) == whole

    for family in FAMILIES:
        ns.iptables(family, "-t", "nat", "-F", DNAT)
    bindings = [r for g in groups_of(NET_A, NET_D)[2:] for r in g]
    assert await fw.check() == len(bindings)  # only the DNAT rules are appended again
    total += len(bindings)
    assert fw.restored == total
    assert state(ns) == whole

    for family in FAMILIES:
        ns.iptables(family, "-D", "FORWARD", "-j", FORWARD)
    assert await fw.check() == 2  # one -I per family
    assert fw.restored == total + 2
    assert state(ns) == whole

    assert await fw.check() == 0
    assert fw.restored == total + 2


async def test_check_restores_a_deleted_chain(ns, ipt, fw):
    await fw.check()
    whole = state(ns)
    ns.iptables(6, "-t", "nat", "-D", "POSTROUTING", "-j", POSTROUTING)
    ns.iptables(6, "-t", "nat", "-F", POSTROUTING)
    ns.iptables(6, "-t", "nat", "-X", POSTROUTING)
    assert await fw.check() > 0
    after = state(ns)
    # The networks with a rule in the deleted chain were installed again as a whole, at the
    # end of the chains: the order of networks may change, not a network's own order.
    assert {k: v for k, v in after.items() if k != (6, "filter")} == \
        {k: v for k, v in whole.items() if k != (6, "filter")}
    assert sorted(after[(6, "filter")]) == sorted(whole[(6, "filter")])
    assert plan_sync(await ipt.snapshot(6), GROUPS) == {}
    assert await fw.check() == 0


async def test_watch_puts_rules_back(ns, fw):
    await fw.check()
    whole = state(ns)
    watcher = asyncio.create_task(fw.watch(0.05))
    try:
        ns.iptables(4, "-F", ISOLATION)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if state(ns) == whole:
                break
        assert state(ns) == whole
        assert fw.restored > 0
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


# --- where the FORWARD jump stands -------------------------------------------------------------

DOCKER_FORWARD = ["-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
                  "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT"]


def docker_forward(ns, family):
    for chain in ("DOCKER-USER", "DOCKER-ISOLATION-STAGE-1"):
        ns.iptables(family, "-N", chain)
        ns.iptables(family, "-A", chain, "-j", "RETURN")
    for rule in DOCKER_FORWARD:
        ns.iptables(family, *rule.split(" "))


async def test_forward_jump_after_dockers_jumps_before_its_accepts(ns, fw):
    for family in FAMILIES:
        docker_forward(ns, family)
    await fw.check()
    placed = [*DOCKER_FORWARD[:2], JUMP, DOCKER_FORWARD[2]]
    for family in FAMILIES:
        assert ns.chain("FORWARD", family) == placed
    assert await fw.check() == 0  # no fighting

    # Docker restarts and puts its jumps back at the top: pynet's stays where it is.
    for family in FAMILIES:
        for chain in ("DOCKER-ISOLATION-STAGE-1", "DOCKER-USER"):
            ns.iptables(family, "-D", "FORWARD", "-j", chain)
            ns.iptables(family, "-I", "FORWARD", "-j", chain)
        assert ns.chain("FORWARD", family) == placed
    assert await fw.check() == 0
    ns.iptables(4, "-D", "FORWARD", "-j", "DOCKER-USER")
    ns.iptables(4, "-I", "FORWARD", "2", "-j", "DOCKER-USER")
    assert await fw.check() == 0

    # Someone's ACCEPT above it: the jump moves up, once.
    ns.iptables(4, "-I", "FORWARD", "1", "-i", "eth9", "-j", "ACCEPT")
    assert await fw.check() == 2  # -D and -I
    assert ns.chain("FORWARD", 4) == [JUMP, "-A FORWARD -i eth9 -j ACCEPT", "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
                                      "-A FORWARD -j DOCKER-USER", DOCKER_FORWARD[2]]
    assert ns.chain("FORWARD", 6) == placed
    assert await fw.check() == 0


async def test_duplicate_forward_jumps_are_reduced_to_one(ns, fw):
    await fw.check()
    ns.iptables(4, "-A", "FORWARD", "-j", FORWARD)
    ns.iptables(4, "-I", "FORWARD", "1", "-j", FORWARD)
    assert ns.chain("FORWARD", 4) == [JUMP] * 3
    assert await fw.check() == 4  # three -D, one -I
    assert ns.chain("FORWARD", 4) == [JUMP]


# --- failures --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    "-A FORWARD -p tcp --dport 99999 -j ACCEPT",  # iptables rejects the spec
    "-A FORWARD -j PYNET-NO-SUCH-CHAIN",
    "-D FORWARD -i eth9 -j ACCEPT",  # not there
    "-N INPUT",
])
async def test_a_failing_batch_changes_nothing(ns, ipt, fw, bad):
    await fw.ensure(groups_of(NET_A))
    before = {f: await ipt.snapshot(f) for f in FAMILIES}
    text = state(ns)
    batch = {"filter": ["-N PYNET-TEST", "-A PYNET-TEST -j ACCEPT", "-I FORWARD 1 -j PYNET-TEST",
                        f"-D {FORWARD} -j {ISOLATION}", bad],
             "nat": [f"-A {DNAT} -p tcp -m tcp --dport 1 -j DNAT --to-destination 10.1.0.9:1"]}
    for family in FAMILIES:
        with pytest.raises(KernelError, match="restore"):
            await ipt.apply(family, batch)
        assert await ipt.snapshot(family) == before[family]
    assert state(ns) == text


async def test_ensure_with_a_rule_iptables_rejects_changes_nothing(ns, ipt):
    before = {f: await ipt.snapshot(f) for f in FAMILIES}
    bad = Rule(4, "filter", FORWARD, ("-p", "tcp", "--dport", "99999", "-j", "ACCEPT"))
    with pytest.raises(KernelError, match="99999"):
        await Firewall(ipt).ensure([[*network_rules(NET_A), bad]])
    for family in FAMILIES:
        assert await ipt.snapshot(family) == before[family]


async def test_empty_batch_runs_nothing(ns):
    ipt = Iptables(prefix=["ip", "netns", "exec", ns.name], v4="pynet-no-such-iptables")
    await ipt.apply(4, {})
    await ipt.apply(4, {"filter": [], "nat": []})


@pytest.mark.parametrize("prefix", [["ip", "netns", "exec", "NS"], []], ids=["in-netns", "direct"])
async def test_a_missing_binary_raises_kernel_error(ns, prefix):
    # Nothing runs on the host: the binary does not exist.
    prefix = [ns.name if p == "NS" else p for p in prefix]
    ipt = Iptables(prefix=prefix, v4="pynet-no-such-iptables", v6="pynet-no-such-ip6tables")
    for family in FAMILIES:
        with pytest.raises(KernelError, match="pynet-no-such-ip"):
            await ipt.snapshot(family)
        with pytest.raises(KernelError, match="pynet-no-such-ip"):
            await ipt.apply(family, {"filter": [f"-N {FORWARD}"]})
    with pytest.raises(KernelError):
        await Firewall(ipt).ensure()
    with pytest.raises(KernelError):
        await Firewall(ipt).check()


# --- the watcher and the driver ----------------------------------------------------------------

NID = "5ac0ffee0000" + "e5" * 26
NET_REQ = {"NetworkID": NID, "Options": {"com.docker.network.enable_ipv6": False,
                                         "com.docker.network.generic": {}},
           "IPv4Data": [{"AddressSpace": "PynetLocal", "Pool": "10.7.0.0/24", "Gateway": "10.7.0.1/24"}],
           "IPv6Data": []}


async def test_a_check_during_delete_network_does_not_bring_its_rules_back(ns, ipr, tmp_path):
    firewall = Firewall(Iptables(prefix=["ip", "netns", "exec", ns.name]))
    db = Database(str(tmp_path / "pynet.db"))
    await db.open([store.SCHEMA])
    try:
        drv = BridgeMode(db, ipr, firewall, netns_dirs=("/var/run/docker/netns",),
                            sysctl=Sysctl(prefix=["ip", "netns", "exec", ns.name]))
        await drv.load()
        await drv.create_network(wire.CreateNetworkRequest.model_validate(NET_REQ))
        assert tagged(ns, "pynet:5ac0ffee0000")
        write = db.write

        async def write_while_the_watcher_runs(fn):
            await firewall.check()  # the watcher's turn comes while the state is being saved
            return await write(fn)

        db.write = write_while_the_watcher_runs
        await drv.delete_network(wire.NetworkRequest(NetworkID=NID))
        assert NID not in drv.networks
        assert tagged(ns, "pynet:5ac0ffee0000") == []
    finally:
        await db.close()


# --- iptables-legacy hosts --------------------------------------------------------------------

async def test_round_trip_and_repair_with_iptables_legacy(ns):
    """Docker uses whatever `iptables` is on the host; on a legacy host that is
    iptables-legacy. The same rules must read back identically there."""
    legacy = Iptables(prefix=["ip", "netns", "exec", ns.name], v4="iptables-legacy", v6="ip6tables-legacy")
    try:
        fw = Firewall(legacy, wanted=lambda: GROUPS)
        assert await fw.check() > 0
        for family in FAMILIES:
            assert plan_sync(await legacy.snapshot(family), GROUPS) == {}
        ns.exec("iptables-legacy", "-F", FORWARD)
        assert await fw.check() > 0
        assert await fw.check() == 0
    finally:  # legacy tables are not nftables: clear them so nothing stays behind
        for tool in ("iptables-legacy", "ip6tables-legacy"):
            for table in ("filter", "nat"):
                ns.exec(tool, "-t", table, "-F")
                ns.exec(tool, "-t", table, "-X")
