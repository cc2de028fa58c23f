"""`pynet path` without root: destinations, the walk through pynet's rules, the
endpoint lookup, the JSON shape scripts rely on, and the text."""

from __future__ import annotations

import ipaddress

import pytest

from driver.bridge.network_rules import NetworkPolicy, network_rules
from driver.chains import FORWARD, POSTROUTING, base_chain_rules
from driver.kernel.iptables import Snapshot, parse_save
from driver.path.cli import render
from driver.path.model import Hop, Path, Problem, Step, parse_destination
from driver.path.service import resolve
from driver.path.walk import Packet, walk


@pytest.mark.parametrize("text, address, port", [
    ("10.1.0.3", "10.1.0.3", None), ("10.1.0.3:80", "10.1.0.3", 80), ("fd00::3", "fd00::3", None),
    ("[fd00::3]:443", "fd00::3", 443)])
def test_destinations(text, address, port):
    d = parse_destination(text)
    assert (d.address, d.port) == (ipaddress.ip_address(address), port)


@pytest.mark.parametrize("text, why", [("web:80", "not an IP address"), ("10.1.0.3:0", "1 to 65535"),
                                       ("10.1.0.3:http", "not a number"), ("[fd00::3]x", r"expected \[IPv6\]:PORT")])
def test_bad_destinations_say_why(text, why):
    with pytest.raises(ValueError, match=why):
        parse_destination(text)


def snapshot(policy: NetworkPolicy) -> Snapshot:
    """The firewall as pynet installs a network's rules (iptables-save's form)."""
    lines = ["*filter", f":{FORWARD} - [0:0]"]
    for r in [*base_chain_rules(), *network_rules(policy)]:
        if r.family == 4 and r.table == "filter":
            lines.append(f"-A {r.chain} {r.text}")
    lines += ["COMMIT", "*nat"]
    lines += [f"-A {r.chain} {r.text}" for r in network_rules(policy) if r.family == 4 and r.table == "nat"]
    return parse_save(4, "\n".join(lines + ["COMMIT"]))


POLICY = NetworkPolicy(bridge="pn-a", tag="pynet:a", subnets4=("10.1.0.0/24",))


def packet(**kw) -> Packet:
    return Packet(**{"family": 4, "src": "10.1.0.2", "dst": "10.1.0.3", "iif": "pn-a", "oif": "pn-a", **kw})


def test_within_the_bridge_icc_decides():
    assert walk(snapshot(POLICY), "filter", FORWARD, packet()).target == "ACCEPT"
    off = walk(snapshot(NetworkPolicy(**{**POLICY.__dict__, "icc": False})), "filter", FORWARD, packet())
    assert off.target == "DROP" and off.rule.startswith(f"-A {FORWARD} -i pn-a -o pn-a -m comment")
    # A published port reached through the host (DNAT) passes even with ICC off.
    dnat = walk(snapshot(NetworkPolicy(**{**POLICY.__dict__, "icc": False})), "filter", FORWARD,
                packet(ctstate=frozenset({"NEW", "DNAT"})))
    assert dnat.target == "ACCEPT" and "--ctstate DNAT" in dnat.rule


def test_another_bridge_is_isolated_and_outside_is_masqueraded():
    snap = snapshot(POLICY)
    other = walk(snap, "filter", FORWARD, packet(dst="10.9.0.3", oif="pn-b"))
    assert other.target == "" or other.target == "ACCEPT"  # pn-b is no network of this firewall
    isolated = snapshot(POLICY)
    isolated.rules[("filter", "PYNET-ISOLATION-2")].append("-o pn-b -j DROP")
    assert walk(isolated, "filter", FORWARD, packet(dst="10.9.0.3", oif="pn-b")).target == "DROP"
    out = packet(dst="198.51.100.7", oif="eth0")
    assert walk(snap, "filter", FORWARD, out).target == "ACCEPT"
    assert walk(snap, "nat", POSTROUTING, out).target == "MASQUERADE"
    internal = snapshot(NetworkPolicy(**{**POLICY.__dict__, "internal": True}))
    assert walk(internal, "filter", FORWARD, out).target == "DROP"


def test_a_match_pynet_does_not_read_stops_the_walk_undecided():
    snap = Snapshot(4, rules={("filter", FORWARD): ["-m physdev --physdev-is-bridged -j DROP"]})
    v = walk(snap, "filter", FORWARD, packet())
    assert v.target == "" and "does not read" in v.undecided
    # ... unless an earlier match of the same rule already missed.
    snap = Snapshot(4, rules={("filter", FORWARD): ["-i other -m physdev --physdev-is-bridged -j DROP"]})
    assert walk(snap, "filter", FORWARD, packet()).target == ""


def test_endpoints_are_named_in_full_or_by_a_unique_prefix():
    ids = ["3f2a" + "0" * 60, "3f2b" + "0" * 60]
    assert resolve(ids, "3f2a") == (ids[0], "")
    assert resolve(ids, ids[1]) == (ids[1], "")
    assert "ambiguous" in resolve(ids, "3f2")[1]
    assert resolve(ids, "nope") == (None, "endpoint 'nope' is unknown to pynet (no endpoint of its networks"
                                          " has that ID)")


def sample() -> dict:
    p = Path("3f2a" + "0" * 60, parse_destination("10.1.0.3:80"), network_id="9ab" + "0" * 61, mode="bridge")
    p.hops = [Hop("container", "eth0", holds={"addresses": ["10.1.0.2/24"], "mtu": 1500}),
              Hop("veth", "pnh3f2a", problems=[Problem("veth pnh3f2a is gone", "`pynet doctor --repair` ...")]),
              Hop("firewall", "rules", items=[{"family": 4, "table": "filter", "rule": "-A X -j ACCEPT",
                                                "present": True, "packets": 7}])]
    p.steps = [Step("firewall", "dropped: ICC is off on this network", "-A PYNET-FORWARD -j DROP", 3, "drop")]
    return p.to_json()


def test_the_json_keeps_its_shape():
    body = sample()
    assert set(body) == {"endpoint", "network", "mode", "ok", "hops", "to"}
    assert set(body["hops"][0]) == {"kind", "name", "ok", "holds", "items", "problems"}
    assert set(body["hops"][1]["problems"][0]) == {"what", "repair"}
    assert set(body["to"]) == {"destination", "steps"}
    assert set(body["to"]["steps"][0]) == {"at", "what", "rule", "packets", "verdict"}
    assert body["ok"] is False and body["to"]["destination"] == "10.1.0.3:80/tcp"


def test_the_text_marks_each_broken_hop_with_its_repair():
    text = render({**sample(), "container": "web", "network_name": "front"})
    assert text.startswith("container web, endpoint 3f2a00000000, network front (9ab000000000), bridge mode")
    assert "✗ veth pnh3f2a is gone" in text and "repair: `pynet doctor --repair`" in text
    assert "7 pkts  -A X -j ACCEPT" in text
    assert "DROP     dropped: ICC is off on this network  [-A PYNET-FORWARD -j DROP, 3 pkts]" in text
    assert text.endswith("1 problem(s); `pynet doctor --repair` fixes what it names")


def test_the_picture_is_drawn_from_the_modes_hops():
    from pathlib import Path as FilePath

    from driver.path.picture import chain, draw
    from driver import registry
    specs = {s.name: s for s in registry.specs()}
    assert [h.kind for h in chain(specs["overlay"])] == [
        "container", "veth", "bridge", "firewall", "ports", "vxlan", "peers", "uplink"]
    assert [h.kind for h in chain(specs["routed"])][-2:] == ["routes", "uplink"]
    committed = (FilePath(__file__).resolve().parents[2] / "docs" / "packet-path.svg").read_text()
    assert committed == draw(), "docs/packet-path.svg is stale: python -m driver.path.picture > docs/packet-path.svg"


def test_negated_states_ranges_ports_and_ipv6_targets():
    from driver.path.walk import matches, with_destination
    tokens = "-d 127.0.0.0/8 -i pn-a -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP".split()
    assert matches(tokens, packet(dst="127.0.0.1"))[0]  # a new connection: dropped
    assert not matches(tokens, packet(dst="127.0.0.1", ctstate=frozenset({"ESTABLISHED"})))[0]
    ranged = "-p tcp -m tcp --dport 8000:8010 -j DNAT --to-destination 10.1.0.3:80".split()
    assert matches(ranged, packet(dport=8005))[0] and not matches(ranged, packet(dport=8011))[0]
    assert not matches(ranged, packet(proto="udp"))[0]  # a miss first: the missing port is moot
    snap = Snapshot(4, rules={("nat", "PYNET-DNAT"): [" ".join(ranged[:-3]) + " -j DNAT --to-destination 10.1.0.3:80"]})
    v = walk(snap, "nat", "PYNET-DNAT", packet())  # no port given: cannot say
    assert v.target == "" and "give --to ADDRESS:PORT" in v.undecided
    six = with_destination(Packet(6, "fd00::2", "fd00::1", dport=8080), "[fd00::3]:80")
    assert (six.dst, six.dport, "DNAT" in six.ctstate) == ("fd00::3", 80, True)
    assert not matches(["!", "-o", "pn+", "-j", "ACCEPT"], packet(oif="pn-b"))[0]  # a wildcard, negated
