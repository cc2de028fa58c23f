"""Firewall policy (driver/chains.py) and iptables-save parsing, without root.

Plans are checked line by line, and also applied to an in-memory model of
`iptables-restore --noflush` (which fails, as iptables would, on a -D of an
absent rule, a -N of an existing chain, an -I past the end...), so that "the
plan converges in one step" can be checked on arbitrary damage.
"""

import copy
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver.kernel.iptables import Snapshot, parse_save
from driver.publish.portmap import Binding
from driver.bridge.network_rules import NetworkPolicy, network_rules
from driver.publish.dnat_rules import binding_rules
from driver.chains import (ALLOWED_BEFORE_JUMP, CHAINS, DNAT, FAMILIES, FORWARD, INPUT, ISOLATION, ISOLATION_2,
                          POSTROUTING, Rule, base_chain_rules, base_jumps, docker_bridge_rules, jump_position,
                          plan_remove, plan_sync)

A = ipaddress.ip_address
BR, TAG = "pn-1ed2c0ffee00", "pynet:1ed2c0ffee00"
C = f'-m comment --comment "{TAG}"'
JUMP = f"-j {FORWARD}"
BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}


def policy(**kw):
    kw.setdefault("subnets4", ("10.1.0.0/24",))
    return NetworkPolicy(BR, TAG, **kw)


def chains_of(rules, family):
    """(table, chain) -> rule texts in order, for one family."""
    out = {}
    for r in rules:
        if r.family == family:
            out.setdefault((r.table, r.chain), []).append(r.text)
    return out


# --- network_rules -------------------------------------------------------------------

ISOLATION_RULES = [f"-i {BR} -o {BR} {C} -j RETURN",
                   f"-i {BR} ! -o {BR} {C} -j {ISOLATION_2}"]
ISOLATION_2_RULES = [f"-o {BR} {C} -j DROP"]
OUTBOUND = [f"-o {BR} -m conntrack --ctstate RELATED,ESTABLISHED {C} -j ACCEPT",
            f"-o {BR} -m conntrack --ctstate DNAT {C} -j ACCEPT",
            f"-i {BR} {C} -j ACCEPT",
            f"-o {BR} {C} -j DROP"]
LOOPBACK_GUARD = f"-d 127.0.0.0/8 -i {BR} -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT {C} -j DROP"
HOST_MASQUERADE = f"-o {BR} -m addrtype --src-type LOCAL -m conntrack --ctstate DNAT {C} -j MASQUERADE"


def hairpin(subnet):
    return f"-s {subnet} -o {BR} -m conntrack --ctstate DNAT {C} -j MASQUERADE"


def masquerade(subnet):
    return f"-s {subnet} ! -o {BR} {C} -j MASQUERADE"


def test_default_network():
    rules = network_rules(policy())
    assert chains_of(rules, 4) == {
        ("filter", ISOLATION): ISOLATION_RULES,
        ("filter", ISOLATION_2): ISOLATION_2_RULES,
        ("filter", FORWARD): [f"-i {BR} -o {BR} {C} -j ACCEPT", *OUTBOUND],
        ("filter", INPUT): [LOOPBACK_GUARD],
        ("nat", POSTROUTING): [HOST_MASQUERADE, hairpin("10.1.0.0/24"), masquerade("10.1.0.0/24")],
    }
    # IPv6 without an IPv6 subnet: same filter rules, only the host's hairpin in nat.
    assert chains_of(rules, 6) == {
        ("filter", ISOLATION): ISOLATION_RULES,
        ("filter", ISOLATION_2): ISOLATION_2_RULES,
        ("filter", FORWARD): [f"-i {BR} -o {BR} {C} -j ACCEPT", *OUTBOUND],
        ("nat", POSTROUTING): [HOST_MASQUERADE],
    }


def test_the_final_drop_comes_after_the_accepts():
    for family in FAMILIES:
        forward = chains_of(network_rules(policy()), family)[("filter", FORWARD)]
        assert forward[-1] == f"-o {BR} {C} -j DROP"
        assert all(r.endswith("-j ACCEPT") for r in forward[:-1])


def test_icc_off_accepts_dnat_before_dropping_the_bridge():
    for family in FAMILIES:
        forward = chains_of(network_rules(policy(icc=False)), family)[("filter", FORWARD)]
        assert forward == [f"-i {BR} -o {BR} -m conntrack --ctstate DNAT {C} -j ACCEPT",
                           f"-i {BR} -o {BR} {C} -j DROP", *OUTBOUND]
        assert not any(r == f"-i {BR} -o {BR} {C} -j ACCEPT" for r in forward)


@pytest.mark.parametrize("icc", [True, False])
def test_internal_network_drops_in_and_out_and_has_no_nat(icc):
    rules = network_rules(policy(internal=True, icc=icc, subnets6=("fd00:1::/64",), masquerade6=True))
    assert {r.table for r in rules} == {"filter"}
    same_bridge = ([f"-i {BR} -o {BR} {C} -j ACCEPT"] if icc else
                   [f"-i {BR} -o {BR} -m conntrack --ctstate DNAT {C} -j ACCEPT", f"-i {BR} -o {BR} {C} -j DROP"])
    for family in FAMILIES:
        assert chains_of(rules, family) == {
            ("filter", ISOLATION): ISOLATION_RULES,
            ("filter", ISOLATION_2): ISOLATION_2_RULES,
            ("filter", FORWARD): [*same_bridge, f"-i {BR} {C} -j DROP", f"-o {BR} {C} -j DROP"],
        }


def test_masquerade4_off_keeps_the_hairpin():
    nat = chains_of(network_rules(policy(masquerade4=False)), 4)[("nat", POSTROUTING)]
    assert nat == [HOST_MASQUERADE, hairpin("10.1.0.0/24")]


def test_ipv6_subnets_masquerade6():
    p = policy(subnets4=("10.1.0.0/24", "10.9.0.0/16"), subnets6=("fd00:1::/64", "fd00:2::/64"))
    off = chains_of(network_rules(p), 6)[("nat", POSTROUTING)]
    assert off == [HOST_MASQUERADE, hairpin("fd00:1::/64"), hairpin("fd00:2::/64")]
    on = chains_of(network_rules(NetworkPolicy(**{**p.__dict__, "masquerade6": True})), 6)
    assert on[("nat", POSTROUTING)] == [HOST_MASQUERADE, hairpin("fd00:1::/64"), masquerade("fd00:1::/64"),
                                        hairpin("fd00:2::/64"), masquerade("fd00:2::/64")]
    v4 = chains_of(network_rules(p), 4)[("nat", POSTROUTING)]
    assert v4 == [HOST_MASQUERADE, hairpin("10.1.0.0/24"), masquerade("10.1.0.0/24"),
                  hairpin("10.9.0.0/16"), masquerade("10.9.0.0/16")]


POLICIES = [policy(), policy(icc=False), policy(internal=True), policy(masquerade4=False),
            policy(subnets6=("fd00:1::/64",), masquerade6=True),
            policy(subnets4=(), subnets6=("fd00:1::/64",))]


@pytest.mark.parametrize("p", POLICIES, ids=["default", "icc-off", "internal", "no-masq4", "v6", "v6-only"])
def test_every_network_rule_is_tagged_and_in_both_families(p):
    rules = network_rules(p)
    assert len(set(rules)) == len(rules)
    assert {r.family for r in rules} == {4, 6}
    for r in rules:
        assert r.table in CHAINS and r.chain in CHAINS[r.table]
        assert all(isinstance(t, str) and t for t in r.spec)
        assert r.text.count(C) == 1
        # the comment stands just before the target, as iptables-save prints it
        assert r.spec[-6:-2] == ("-m", "comment", "--comment", f'"{TAG}"')
        assert r.spec[-2] == "-j"
    # Both families hold the same filter rules, but for the IPv4 loopback guard.
    filters = {f: [(r.chain, r.text) for r in rules if r.family == f and r.table == "filter"
                   and r.chain != INPUT] for f in FAMILIES}
    assert filters[4] == filters[6]
    assert [r.family for r in rules if r.chain == INPUT] == ([] if p.internal else [4])


def test_subnets_only_in_their_familys_nat_rules():
    rules = network_rules(policy(subnets4=("10.1.0.0/24",), subnets6=("fd00:1::/64",), masquerade6=True))
    for r in rules:
        if "10.1.0.0/24" in r.text:
            assert (r.family, r.table) == (4, "nat")
        if "fd00:1::/64" in r.text:
            assert (r.family, r.table) == (6, "nat")
    assert sum("10.1.0.0/24" in r.text for r in rules) == 2
    assert sum("fd00:1::/64" in r.text for r in rules) == 2


def test_base_rules():
    for family in FAMILIES:
        assert chains_of(base_jumps(), family) == {
            ("filter", "FORWARD"): [JUMP],
            ("filter", "INPUT"): [f"-j {INPUT}"],
            ("nat", "PREROUTING"): [f"-m addrtype --dst-type LOCAL -j {DNAT}"],
            ("nat", "OUTPUT"): [f"-m addrtype --dst-type LOCAL -j {DNAT}"],
            ("nat", "POSTROUTING"): [f"-j {POSTROUTING}"],
        }
        assert chains_of(base_chain_rules(), family) == {
            ("filter", FORWARD): [f"-j {ISOLATION}"],
        }
        assert chains_of(docker_bridge_rules(["docker0", "br-0123456789ab"]), family) == {
            ("filter", ISOLATION_2): ["-o br-0123456789ab -j DROP", "-o docker0 -j DROP"]}


# --- what the isolation chains do to a packet ------------------------------------------

def _iface_match(pattern, name):
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def _matches(spec, iin, out):
    tokens, i = list(spec), 0
    while i < len(tokens):
        negate = tokens[i] == "!"
        if negate:
            i += 1
        if tokens[i] in ("-i", "-o"):
            hit = _iface_match(tokens[i + 1], iin if tokens[i] == "-i" else out)
            if hit == negate:
                return False
            i += 2
        elif tokens[i] == "-j":
            return True
        elif tokens[i] == "-m":  # only comments in the isolation chains
            assert tokens[i + 1] == "comment"
            i += 4
        else:
            raise AssertionError(f"unexpected match in {spec}")
    return True


def isolation_verdict(rules, iin, out, chain=ISOLATION):
    """DROP, or RETURN when the packet goes on to the networks' own rules."""
    for r in (r for r in rules if r.family == 4 and r.table == "filter" and r.chain == chain):
        if _matches(r.spec, iin, out):
            target = r.spec[-1]
            if target in ("DROP", "RETURN"):
                return target
            if target == ISOLATION_2 and isolation_verdict(rules, iin, out, ISOLATION_2) == "DROP":
                return "DROP"
    return "RETURN"


def installed(*policies):
    rules = [*base_chain_rules(), *docker_bridge_rules(["docker0", "br-0123456789ab"])]
    for p in policies:
        rules += network_rules(p)
    return rules


def test_isolation_between_networks():
    a, b = NetworkPolicy("pn-aaaaaaaaaaaa", "pynet:a"), NetworkPolicy("pn-bbbbbbbbbbbb", "pynet:b")
    rules = installed(a, b)
    assert isolation_verdict(rules, "pn-aaaaaaaaaaaa", "pn-bbbbbbbbbbbb") == "DROP"
    assert isolation_verdict(rules, "pn-bbbbbbbbbbbb", "pn-aaaaaaaaaaaa") == "DROP"
    for docker in ("docker0", "br-0123456789ab"):
        assert isolation_verdict(rules, "pn-aaaaaaaaaaaa", docker) == "DROP"
        # Docker's bridges into pynet's: new connections meet the network's own final drop.
        assert isolation_verdict(rules, docker, "pn-aaaaaaaaaaaa") == "RETURN"
    # A host uplink that happens to be a bridge named br-... is not Docker's.
    assert isolation_verdict(rules, "pn-aaaaaaaaaaaa", "br-ex") == "RETURN"
    assert isolation_verdict(rules, "pn-aaaaaaaaaaaa", "eth0") == "RETURN"
    assert isolation_verdict(rules, "eth0", "pn-aaaaaaaaaaaa") == "RETURN"
    assert isolation_verdict(rules, "pn-aaaaaaaaaaaa", "pn-aaaaaaaaaaaa") == "RETURN"


@pytest.mark.parametrize("bridge", ["br-lan", "docker0"])
def test_custom_bridge_name_like_dockers_keeps_its_own_traffic(bridge):
    # `-o com.docker.network.bridge.name=br-lan` is accepted (options.py); with
    # br_netfilter, container-to-container traffic on it crosses FORWARD with
    # -i br-lan -o br-lan and meets `-i br-+ -o br-lan -j DROP` before the
    # network's icc ACCEPT.
    rules = installed(NetworkPolicy(bridge, "pynet:c"))
    assert isolation_verdict(rules, bridge, bridge) == "RETURN"


# --- binding_rules -------------------------------------------------------------------

@pytest.mark.parametrize("binding, text", [
    (Binding("tcp", A("127.0.0.1"), 8080, A("10.1.0.2"), 80),
     f"-d 127.0.0.1/32 -p tcp -m tcp --dport 8080 {C} -j DNAT --to-destination 10.1.0.2:80"),
    (Binding("udp", A("0.0.0.0"), 5353, A("10.1.0.2"), 53),
     f"-p udp -m udp --dport 5353 {C} -j DNAT --to-destination 10.1.0.2:53"),
    (Binding("tcp", A("::"), 8080, A("fd00::2"), 80),
     f"-p tcp -m tcp --dport 8080 {C} -j DNAT --to-destination [fd00::2]:80"),
    (Binding("udp", A("::1"), 53, A("fd00:0:0:1::2"), 53),
     f"-d ::1/128 -p udp -m udp --dport 53 {C} -j DNAT --to-destination [fd00:0:0:1::2]:53"),
    (Binding("sctp", A("192.0.2.7"), 9, A("10.1.0.3"), 9),
     f"-d 192.0.2.7/32 -p sctp -m sctp --dport 9 {C} -j DNAT --to-destination 10.1.0.3:9"),
])
def test_binding_rules(binding, text):
    assert binding_rules(binding, TAG) == [Rule(binding.family, "nat", DNAT, tuple(text.split(" ")))]
    assert binding_rules(binding, TAG)[0].text == text


def test_binding_family_follows_the_host_address():
    assert binding_rules(Binding("tcp", A("0.0.0.0"), 1, A("10.1.0.2"), 1), TAG)[0].family == 4
    assert binding_rules(Binding("tcp", A("::"), 1, A("fd00::2"), 1), TAG)[0].family == 6


# --- jump_position -------------------------------------------------------------------

DOCKER_JUMPS = list(ALLOWED_BEFORE_JUMP)
DOCKER_ACCEPT = "-i docker0 ! -o docker0 -j ACCEPT"


@pytest.mark.parametrize("forward, position", [
    ([], 1),
    ([DOCKER_ACCEPT], 1),
    (["-j DOCKER-USER"], 2),
    (DOCKER_JUMPS, 3),
    ([*DOCKER_JUMPS, DOCKER_ACCEPT], 3),
    ([*DOCKER_JUMPS, JUMP], None),
    ([*DOCKER_JUMPS, JUMP, DOCKER_ACCEPT], None),
    ([JUMP], None),
    ([JUMP, *DOCKER_JUMPS], None),  # before Docker's drop-only jumps is fine too
    (["-j DOCKER-USER", JUMP, "-j DOCKER-ISOLATION-STAGE-1"], None),
    ([*DOCKER_JUMPS, DOCKER_ACCEPT, JUMP], 3),  # after an ACCEPT: right after the allowed prefix
    (["-j DOCKER-USER", DOCKER_ACCEPT, JUMP], 2),
    ([*DOCKER_JUMPS, JUMP, JUMP], 3),  # duplicated
    ([JUMP, DOCKER_ACCEPT, JUMP], 1),
    ([*DOCKER_JUMPS, "-j DOCKER-USER", JUMP], None),
])
def test_jump_position(forward, position):
    assert jump_position(forward) == position


def test_jump_position_accepts_any_sequence():
    assert jump_position(("-j DOCKER-USER", JUMP)) is None


# --- parse_save ------------------------------------------------------------------------

SAVE = """\
# Generated by iptables-save v1.8.9 (nf_tables) on Fri Nov 27 16:11:29 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [12:3456]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i eth0 -m comment --comment "two words" -j DROP
-A DOCKER-USER -j RETURN
COMMIT
# Completed on Fri Nov 27 16:11:29 2026
# Generated by iptables-save v1.8.9 (nf_tables) on Fri Nov 27 16:11:29 2026
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:PYNET-DNAT - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j PYNET-DNAT
-A PYNET-DNAT -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -m comment --comment "pynet:x" -j DNAT --to-destination 10.1.0.2:80
COMMIT
"""


def test_parse_save():
    snap = parse_save(4, SAVE)
    assert snap.family == 4
    assert snap.chains == {("filter", "INPUT"), ("filter", "FORWARD"), ("filter", "OUTPUT"),
                           ("filter", "DOCKER-USER"), ("nat", "PREROUTING"), ("nat", "POSTROUTING"),
                           ("nat", "PYNET-DNAT")}
    assert snap.rules == {
        ("filter", "FORWARD"): ["-j DOCKER-USER", "-i docker0 ! -o docker0 -j ACCEPT",
                                '-i eth0 -m comment --comment "two words" -j DROP'],
        ("filter", "DOCKER-USER"): ["-j RETURN"],
        ("nat", "PREROUTING"): ["-m addrtype --dst-type LOCAL -j PYNET-DNAT"],
        ("nat", "PYNET-DNAT"): ['-d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -m comment --comment "pynet:x"'
                                " -j DNAT --to-destination 10.1.0.2:80"],
    }
    assert snap.chain_rules("filter", "INPUT") == [] and snap.chain_rules("raw", "X") == []
    assert snap.count("filter", "FORWARD", "-j DOCKER-USER") == 1
    assert snap.count("filter", "FORWARD", "-j DOCKER-USER ") == 0
    # The built binding rule reads back as what parse_save keeps.
    b = binding_rules(Binding("tcp", A("127.0.0.1"), 8080, A("10.1.0.2"), 80), "pynet:x")[0]
    assert snap.count("nat", DNAT, b.text) == 1


def test_parse_save_empty():
    assert parse_save(6, "") == Snapshot(6)


# --- a model of iptables-restore --noflush -------------------------------------------------

def save_text(tables):
    """iptables-save-like text: {table: {chain: [rule texts]}}; built-in chains are added."""
    out = []
    for table in ("filter", "nat"):
        chains = {c: [] for c in BUILTIN[table]}
        chains.update(tables.get(table, {}))
        out.append(f"*{table}")
        out += [f":{c} {'ACCEPT' if c in BUILTIN[table] else '-'} [0:0]" for c in chains]
        out += [f"-A {c} {r}" for c, rules in chains.items() for r in rules]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def empty(family):
    return parse_save(family, save_text({}))


def restore(snap, batch):
    """Apply a batch the way iptables-restore --noflush would, or fail as it would."""
    new = copy.deepcopy(snap)
    for table, lines in batch.items():
        assert table in ("filter", "nat")
        for line in lines:
            op, chain, *rest = line.split(" ", 2)
            spec = rest[0] if rest else ""
            key = (table, chain)
            if op == "-N":
                assert key not in new.chains and not spec, line
                new.chains.add(key)
                continue
            assert key in new.chains, f"{line}: no chain"
            rules = new.rules.setdefault(key, [])
            if op == "-A":
                rules.append(spec)
            elif op == "-I":
                pos, spec = spec.split(" ", 1)
                assert 1 <= int(pos) <= len(rules) + 1, f"{line}: index out of range"
                rules.insert(int(pos) - 1, spec)
            elif op == "-D":
                assert spec in rules, f"{line}: no such rule"
                rules.remove(spec)
            else:
                raise AssertionError(f"unexpected line {line}")
    return new


NET_A = NetworkPolicy("pn-aaaaaaaaaaaa", "pynet:a", ("10.1.0.0/24",), ("fd00:1::/64",), masquerade6=True)
NET_B = NetworkPolicy("pn-bbbbbbbbbbbb", "pynet:b", ("10.2.0.0/24",), icc=False)
NET_C = NetworkPolicy("pn-cccccccccccc", "pynet:c", ("10.3.0.0/24",), internal=True)
BIND_A = [*binding_rules(Binding("tcp", A("127.0.0.1"), 8080, A("10.1.0.2"), 80), "pynet:a"),
          *binding_rules(Binding("udp", A("::"), 53, A("fd00:1::2"), 53), "pynet:a")]
GROUPS = [network_rules(NET_A), network_rules(NET_B), network_rules(NET_C), BIND_A]


def text_lines(group, family, table):
    return [f"-A {r.chain} {r.text}" for r in group if r.family == family and r.table == table]


def complete(family, groups=GROUPS, extra=None):
    """The snapshot pynet's plan leads to, built by hand."""
    tables = {"filter": {"FORWARD": [JUMP], "INPUT": [f"-j {INPUT}"], FORWARD: [f"-j {ISOLATION}"],
                         ISOLATION: [], ISOLATION_2: [], INPUT: []},
              "nat": {"PREROUTING": [f"-m addrtype --dst-type LOCAL -j {DNAT}"],
                      "OUTPUT": [f"-m addrtype --dst-type LOCAL -j {DNAT}"],
                      "POSTROUTING": [f"-j {POSTROUTING}"], DNAT: [], POSTROUTING: []}}
    for group in groups:
        for r in group:
            if r.family == family:
                tables[r.table][r.chain].append(r.text)
    for (table, chain), rules in (extra or {}).items():
        tables[table].setdefault(chain, [])[:0] = rules
    return parse_save(family, save_text(tables))


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_sync_from_empty(family):
    group = network_rules(NET_A)
    assert plan_sync(empty(family), [group]) == {
        "filter": [f"-N {FORWARD}", f"-N {ISOLATION}", f"-N {ISOLATION_2}", f"-N {INPUT}",
                   f"-I FORWARD 1 {JUMP}",
                   f"-I INPUT 1 -j {INPUT}",
                   f"-I {FORWARD} 1 -j {ISOLATION}",
                   *text_lines(group, family, "filter")],
        "nat": [f"-N {DNAT}", f"-N {POSTROUTING}",
                f"-I PREROUTING 1 -m addrtype --dst-type LOCAL -j {DNAT}",
                f"-I OUTPUT 1 -m addrtype --dst-type LOCAL -j {DNAT}",
                f"-I POSTROUTING 1 -j {POSTROUTING}",
                *text_lines(group, family, "nat")],
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_sync_from_empty_leads_to_the_complete_state(family):
    after = restore(empty(family), plan_sync(empty(family), GROUPS))
    assert after == complete(family)
    assert plan_sync(after, GROUPS) == {}


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_sync_of_a_complete_snapshot_is_empty(family):
    assert plan_sync(complete(family), GROUPS) == {}
    assert plan_sync(complete(family), []) == {}
    # Other people's rules around pynet's change nothing.
    docker = {("filter", "FORWARD"): ["-j DOCKER-USER", "-j DOCKER-ISOLATION-STAGE-1"],
              ("nat", "POSTROUTING"): ["-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"]}
    snap = complete(family, extra=docker)
    snap.rules[("filter", "FORWARD")].append(DOCKER_ACCEPT)
    assert snap.chain_rules("filter", "FORWARD") == [*DOCKER_JUMPS, JUMP, DOCKER_ACCEPT]
    assert plan_sync(snap, GROUPS) == {}


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_sync_reinstalls_a_damaged_group_whole(family):
    snap = complete(family)
    group_b = [r for r in network_rules(NET_B) if r.family == family]
    missing = next(r for r in group_b if r.text == f"-i {NET_B.bridge} -m comment --comment \"pynet:b\" -j ACCEPT")
    snap.rules[("filter", FORWARD)].remove(missing.text)
    doubled = group_b[-1]  # one rule twice: both copies go
    assert doubled.table == "nat"
    snap.rules[("nat", doubled.chain)].append(doubled.text)
    present = [r for r in group_b if r is not missing]
    assert plan_sync(snap, GROUPS) == {
        "filter": [*(f"-D {r.chain} {r.text}" for r in present if r.table == "filter"),
                   *text_lines(group_b, family, "filter")],
        "nat": [*(f"-D {r.chain} {r.text}" for r in present if r.table == "nat"),
                f"-D {doubled.chain} {doubled.text}",
                *text_lines(group_b, family, "nat")],
    }
    after = restore(snap, plan_sync(snap, GROUPS))
    assert plan_sync(after, GROUPS) == {}
    # Network B's rules now stand at the end of each chain, in order.
    for (table, chain), texts in chains_of(group_b, family).items():
        assert after.chain_rules(table, chain)[-len(texts):] == texts


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_sync_puts_the_isolation_jump_first_again(family):
    snap = complete(family)
    forward = snap.rules[("filter", FORWARD)]
    forward.append(forward.pop(0))
    assert plan_sync(snap, GROUPS) == {"filter": [f"-D {FORWARD} -j {ISOLATION}",
                                                  f"-I {FORWARD} 1 -j {ISOLATION}"]}
    forward.pop()
    assert plan_sync(snap, GROUPS) == {"filter": [f"-I {FORWARD} 1 -j {ISOLATION}"]}
    forward[:0] = [f"-j {ISOLATION}", f"-j {ISOLATION}"]
    assert plan_sync(snap, GROUPS) == {"filter": [f"-D {FORWARD} -j {ISOLATION}"] * 2
                                       + [f"-I {FORWARD} 1 -j {ISOLATION}"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_sync_moves_the_forward_jump(family):
    snap = complete(family, extra={("filter", "FORWARD"): ["-j DOCKER-USER", DOCKER_ACCEPT]})
    assert snap.chain_rules("filter", "FORWARD") == ["-j DOCKER-USER", DOCKER_ACCEPT, JUMP]
    assert plan_sync(snap, GROUPS) == {"filter": [f"-D FORWARD {JUMP}", f"-I FORWARD 2 {JUMP}"]}
    snap.rules[("filter", "FORWARD")] = ["-j DOCKER-USER", JUMP, DOCKER_ACCEPT, JUMP]
    assert plan_sync(snap, GROUPS) == {"filter": [f"-D FORWARD {JUMP}"] * 2 + [f"-I FORWARD 2 {JUMP}"]}
    after = restore(snap, plan_sync(snap, GROUPS))
    assert after.chain_rules("filter", "FORWARD") == ["-j DOCKER-USER", JUMP, DOCKER_ACCEPT]


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_sync_keeps_one_nat_jump(family):
    snap = complete(family)
    pre = f"-m addrtype --dst-type LOCAL -j {DNAT}"
    snap.rules[("nat", "PREROUTING")] = ["-m addrtype --dst-type LOCAL -j DOCKER", pre, pre]
    del snap.rules[("nat", "POSTROUTING")]
    assert plan_sync(snap, GROUPS) == {"nat": [f"-D PREROUTING {pre}", f"-D PREROUTING {pre}",
                                               f"-I PREROUTING 1 {pre}",
                                               f"-I POSTROUTING 1 -j {POSTROUTING}"]}


def test_plan_sync_plans_only_its_family():
    for family in FAMILIES:
        batch = plan_sync(empty(family), GROUPS)
        lines = [line for lines in batch.values() for line in lines]
        other = "fd00:1::" if family == 4 else "10.1.0."
        assert not any(other in line for line in lines)
        assert any(("10.1.0." if family == 4 else "fd00:1::") in line for line in lines)
        dnat = [line for line in lines if line.startswith(f"-A {DNAT} ")]
        assert dnat == [f"-A {DNAT} {r.text}" for r in BIND_A if r.family == family]
        assert len(dnat) == 1
    # A group with no rule of the family is complete there.
    v6_only = [r for r in BIND_A if r.family == 6]
    assert plan_sync(complete(4, groups=[]), [v6_only]) == {}
    assert plan_sync(complete(6, groups=[]), [v6_only]) == {"nat": [f"-A {DNAT} {v6_only[0].text}"]}


def test_plan_sync_does_not_recreate_existing_chains():
    snap = complete(4)
    del snap.rules[("filter", FORWARD)]
    batch = plan_sync(snap, GROUPS)
    assert not any(line.startswith("-N") for lines in batch.values() for line in lines)
    assert plan_sync(restore(snap, batch), GROUPS) == {}


# Arbitrary damage, then one plan: the result is complete and well ordered.
FOREIGN = ["-i eth9 -j DROP", "-j DOCKER-USER", "-j DOCKER-ISOLATION-STAGE-1", DOCKER_ACCEPT, JUMP,
           f"-j {ISOLATION}", "-j RETURN"]
damage = st.lists(st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.sampled_from(FOREIGN)),
    st.tuples(st.just("flush"), st.integers(0, 10_000)),
), max_size=12)


def damaged(family, ops):
    snap = complete(family)
    keys = sorted(snap.chains)
    for op in ops:
        key = keys[op[1] % len(keys)]
        rules = snap.rules.setdefault(key, [])
        if op[0] == "delete" and rules:
            del rules[op[1] % len(rules)]
        elif op[0] == "insert":
            rules.insert(op[1] % (len(rules) + 1), op[2])
        elif op[0] == "flush":
            rules.clear()
    return snap


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(FAMILIES), ops=damage)
def test_plan_sync_repairs_any_damage_in_one_step(family, ops):
    snap = damaged(family, ops)
    after = restore(snap, plan_sync(snap, GROUPS))
    assert plan_sync(after, GROUPS) == {}
    forward = after.chain_rules("filter", "FORWARD")
    prefix = 0
    while forward[prefix] in ALLOWED_BEFORE_JUMP:
        prefix += 1
    assert forward[prefix] == JUMP and forward.count(JUMP) == 1
    assert after.chain_rules("filter", FORWARD)[0] == f"-j {ISOLATION}"
    for group in [base_chain_rules()[1:3], *GROUPS]:
        for (table, chain), texts in chains_of(group, family).items():
            rules = after.chain_rules(table, chain)
            positions = [rules.index(t) for t in texts]
            assert positions == sorted(positions), (chain, texts)


# --- plan_remove ---------------------------------------------------------------------------

def test_plan_remove():
    group = network_rules(NET_A) + BIND_A
    for family in FAMILIES:
        snap = complete(family)
        mine = [r for r in group if r.family == family]
        gone, doubled = mine[0], mine[-1]
        snap.rules[(gone.table, gone.chain)].remove(gone.text)
        snap.rules[(doubled.table, doubled.chain)].append(doubled.text)
        batch = plan_remove(snap, group + group)  # a rule listed twice is deleted once per copy
        expected = {}
        for r in mine[1:]:
            expected.setdefault(r.table, []).append(f"-D {r.chain} {r.text}")
        expected[doubled.table].append(f"-D {doubled.chain} {doubled.text}")
        assert batch == expected
        after = restore(snap, batch)
        assert not any('"pynet:a"' in r for rules in after.rules.values() for r in rules)
        # everything else stands
        assert plan_sync(after, GROUPS[1:3]) == {}
        assert plan_remove(after, group) == {}


def test_plan_remove_of_absent_rules_is_empty():
    assert plan_remove(empty(4), GROUPS[0]) == {}
    assert plan_remove(complete(4, groups=[]), [r for g in GROUPS for r in g]) == {}


def test_plan_remove_only_its_family():
    snap = complete(4)
    v6 = [r for r in network_rules(NET_A) if r.family == 6]
    assert plan_remove(snap, v6) == {}
    assert plan_remove(complete(6), v6) != {}
