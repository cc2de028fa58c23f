"""The bridge mode's reconciliation decisions, from snapshots made by hand:
no root, no kernel. (tests/kernel/test_reconcile.py repairs a real one.)"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from types import SimpleNamespace

from driver import naming
from driver.bridge import store
from driver.bridge.options import NetworkOptions
from driver.bridge.repair import JOIN_GRACE, Snapshot, decide
from driver.kernel.link_reader import Link

NID = "1ed2c0ffee00" + "a" * 52
EID = "3f2a9c1b7e4d" + "b" * 52
NOW = 1_000_000.0
I = ipaddress.ip_interface
BRIDGE = naming.bridge_name(NID)
HOST, PEER = naming.veth_names(EID)


def network(**options) -> store.Network:
    return store.Network(NID, BRIDGE, NetworkOptions(**options),
                         [store.Subnet(ipaddress.ip_network("10.1.0.0/24"), I("10.1.0.1/24"))], [])


def endpoint(sandbox: str = "/run/docker/netns/c1", created: float = NOW - 3600) -> store.Endpoint:
    return store.Endpoint(EID, NID, HOST, PEER, "02:00:00:00:00:01", True, I("10.1.0.2/24"), None, sandbox, created)


def link(index: int, kind: str, alias: str | None, master: int | None = None, up: bool = True) -> Link:
    return Link(index=index, name="", kind=kind, alias=alias, master=master, up=up)


def healthy(**changes) -> Snapshot:
    """One network, one running container, all in line; `changes` replace fields."""
    net, ep = network(), endpoint()
    fields = dict(networks={NID: net}, endpoints={EID: ep}, in_flight=set(), joined_at={EID: NOW - 3600},
                  loaded_at=NOW - 7200, now=NOW,
                  links={BRIDGE: link(10, "bridge", naming.network_alias(NID)),
                         HOST: link(11, "veth", naming.endpoint_alias(EID), master=10)},
                  addresses={10: {"10.1.0.1/24"}}, alive={ep.sandbox: True},
                  sandbox_paths={ep.sandbox: ep.sandbox})
    fields.update(changes)
    return Snapshot(**fields)


async def _noop(*args, **kw):
    return True


DRIVER = SimpleNamespace(repair_network=_noop, repair_endpoint=_noop, rebuild_endpoint=_noop,
                         reclaim_endpoint=_noop, ipr=None)


def actions(snap: Snapshot, full: bool = True, min_age: float = 60, spare: bool = False) -> list[tuple[str, bool]]:
    """(action, whether pynet fixes it) of each decision."""
    return [(d.finding.action, d.fix is not None) for d in decide(snap, DRIVER, full, min_age, spare)]


def test_all_in_line_decides_nothing():
    assert actions(healthy()) == []


def test_a_missing_bridge_is_recreated_and_nothing_else_is_judged_on_it():
    snap = healthy(links={HOST: link(11, "veth", naming.endpoint_alias(EID))})
    assert actions(snap, full=False) == [("bridges recreated", True)]


def test_a_bridge_down_or_without_its_gateway_is_repaired():
    down = healthy()
    down.links[BRIDGE] = replace(down.links[BRIDGE], up=False)
    assert actions(down, full=False) == [("bridges repaired", True)]
    assert actions(healthy(addresses={}), full=False) == [("bridges repaired", True)]


def test_wrong_settings_are_set_or_named_when_pynet_cannot():
    wrong = {NID: ["net/ipv4/ip_forward"]}
    assert actions(healthy(wrong_sysctls=wrong), full=False) == [("settings restored", True)]
    (d,) = decide(healthy(wrong_sysctls=wrong, sysctls_read_only="Read-only file system"), DRIVER, False, 60, False)
    assert d.fix is None and "`sysctl -w net.ipv4.ip_forward=1`" in d.finding.fix


def test_a_veth_off_its_bridge_is_put_back():
    snap = healthy()
    snap.links[HOST] = replace(snap.links[HOST], master=None)
    assert actions(snap) == [("endpoints repaired", True)]


def test_a_running_containers_lost_veth_is_rebuilt():
    snap = healthy()
    del snap.links[HOST]
    assert actions(snap) == [("endpoints rebuilt", True)]


def test_a_container_stopped_while_pynet_was_away_is_reclaimed_only_after_the_join_grace():
    stopped = healthy(alive={"/run/docker/netns/c1": False, "/run/docker/netns/other": True})
    stopped.links[PEER] = link(12, "veth", naming.endpoint_alias(EID))  # both ends back on the host
    assert actions(stopped) == [("stale endpoints reclaimed", True)]
    stopped.joined_at[EID] = NOW - JOIN_GRACE / 2  # may be a container starting right now
    assert actions(stopped) == []


def test_a_young_endpoint_without_a_container_is_left_alone():
    snap = healthy(endpoints={EID: endpoint(sandbox="", created=NOW - 5)}, alive={}, joined_at={})
    del snap.links[HOST]
    assert actions(snap) == []
    snap.endpoints[EID].created = NOW - 3600
    assert actions(snap) == [("stale endpoints reclaimed", True)]


def test_no_visible_namespace_is_a_host_problem_and_stops_reclaims():
    """A running container (its end moved away) whose namespace pynet cannot see:
    pynet looks in the wrong place, so another endpoint's gone veth proves nothing."""
    other = "9f9f9f9f9f9f" + "c" * 52
    gone = store.Endpoint(other, NID, *naming.veth_names(other), "02:00:00:00:00:02", True, I("10.1.0.3/24"),
                          None, "/run/docker/netns/c2", NOW - 3600)
    snap = healthy(alive={"/run/docker/netns/c1": False, "/run/docker/netns/c2": False})
    snap.endpoints[other] = gone
    (d,) = decide(snap, DRIVER, True, 60, False)
    assert (d.finding.action, d.fix) == ("host problems", None) and "looked for /run/docker/netns/c1" in d.warn


def test_orphans_by_mark_or_by_derived_name_and_what_spares_them():
    foreign = "pn-9ab000000000"
    snap = healthy()
    snap.links[foreign] = link(20, "bridge", naming.network_alias("9ab0" + "0" * 60))
    snap.links["pnh" + "c" * 12] = link(21, "veth", None)  # unmarked, of a derived name
    snap.links["eth0"] = link(1, "veth", None)  # not pynet's
    assert actions(snap) == [("orphan bridges deleted", True), ("orphan veths deleted", True)]
    assert actions(snap, spare=True) == [("leftovers kept", False), ("leftovers kept", False)]
    snap.in_flight = {"9ab0" + "0" * 60, "c" * 64}  # being created right now
    assert actions(snap) == []


def test_links_of_objects_made_while_the_kernel_was_read_are_no_orphans():
    """The copies of the state are taken before the link dump, and calls go on
    meanwhile: an endpoint made in between has its veth in the dump but not in the
    copies. Deleting it would break the container Docker is starting."""
    made = "d" * 64
    snap = healthy()
    snap.links["pnh" + made[:12]] = link(22, "veth", naming.endpoint_alias(made), master=10)
    snap.links["pnc" + made[:12]] = link(23, "veth", None)
    assert actions(snap) == [("orphan veths deleted", True), ("orphan veths deleted", True)]
    snap.known_after = {made}
    assert actions(snap) == []
