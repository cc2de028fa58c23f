"""The overlay's VXLAN guard without a kernel: its rules as iptables -S prints
them, who counts as a member, and what it reads back (counters, senders)."""

import asyncio
from types import SimpleNamespace

from driver.cluster.endpoints import Endpoints
from driver.cluster.keys import Keys
from driver.cluster.members import Members
from driver.kernel.iptables import count_packets
from driver.overlay.guard import _senders, guard_rules

KEYS = Keys("/pynet")


def test_members_pass_and_everyone_else_is_dropped_and_noted():
    rules = guard_rules("198.18.0.1", {"198.18.0.10", "198.18.0.2", "fd00::1"})
    assert [r.text for r in rules] == [
        '-s 198.18.0.2/32 -d 198.18.0.1/32 -p udp -m udp --dport 4789 -m comment --comment "pynet:vxlan-members"'
        ' -j RETURN',
        '-s 198.18.0.10/32 -d 198.18.0.1/32 -p udp -m udp --dport 4789 -m comment --comment "pynet:vxlan-members"'
        ' -j RETURN',
        '-d 198.18.0.1/32 -p udp -m udp --dport 4789 -m recent --set --name pynet-vxlan --mask 255.255.255.255'
        ' --rsource -m comment --comment "pynet:vxlan-members" -j DROP']
    assert {r.family for r in rules} == {4}
    assert guard_rules("fd00::1", {"fd00::2"})[0].text.startswith("-s fd00::2/128 -d fd00::1/128")


def test_a_member_is_registered_or_has_endpoints_and_nothing_is_known_before_both_lists():
    e = Endpoints(etcd=None, keys=KEYS, membership=SimpleNamespace(host="h1"), db=None)  # type: ignore[arg-type]
    m = Members(etcd=None, keys=KEYS, endpoints=e)  # type: ignore[arg-type]
    assert m.addresses() is None  # a guard keeps what the kernel has until then
    m.registered = {"h1": "198.18.0.1", "h2": "198.18.0.2"}
    e.records[KEYS.endpoint("web", "x").decode()] = (3, {"host": "h3", "vtep": "198.18.0.3", "ips": ["10.0.0.3"]})
    m._listed = True
    e.synced.set()
    told = []

    async def listener():
        told.append(m.addresses())

    m.listeners.append(listener)
    asyncio.run(m._tell())
    # h3 is away (its lease gone) but not reclaimed: its records keep it in.
    assert told == [{"198.18.0.1", "198.18.0.2", "198.18.0.3"}]


def test_the_drops_counter_and_the_noted_senders_are_read_back(tmp_path):
    drop = guard_rules("198.18.0.1", set())[-1]
    saved = "\n".join(["*filter", ":INPUT ACCEPT [5:300]", f"[17:1904] -A PYNET-INPUT {drop.text}",
                       "[2:80] -A PYNET-INPUT -d 127.0.0.0/8 -j DROP", "COMMIT"])
    assert count_packets(saved, "PYNET-INPUT", drop.text) == 17
    recent = tmp_path / "pynet-vxlan"
    recent.write_text("src=198.18.0.50 ttl: 64 last_seen: 4295 oldest_pkt: 3 4294, 4295\n"
                      "src=198.18.0.51 ttl: 64 last_seen: 4296 oldest_pkt: 1 4296\n")
    assert _senders(recent) == ["198.18.0.50", "198.18.0.51"]
    assert _senders(tmp_path / "absent") == []
