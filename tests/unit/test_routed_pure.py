"""The routed mode without a kernel: the rules it adds to a bridge network,
its MTU, and which remote containers get a route (hosts off this host's
segment get none, and are named)."""

from types import SimpleNamespace

import pytest

from driver.bridge.network_rules import NetworkPolicy
from driver.chains import FORWARD, POSTROUTING
from driver.cluster.endpoints import Endpoints
from driver.cluster.keys import Keys
from driver.errors import InvalidRequest, KernelError
from driver.routed import routes as routes_module
from driver.cluster.definitions import requested_mtu
from driver.routed.routes import Routes
from driver.routed.rules import cross_host_rules, routed_sysctls

KEYS = Keys("/pynet")


def texts(rules, table, chain):
    return [" ".join(r.spec) for r in rules if (r.table, r.chain) == (table, chain)]


def test_rules_accept_the_subnet_between_bridge_and_underlay_and_never_masquerade_it():
    rules = cross_host_rules("ul")(NetworkPolicy("pn-1", "pynet:1", subnets4=("10.9.0.0/16",)))
    assert {r.family for r in rules} == {4}
    assert texts(rules, "filter", FORWARD) == [
        '-d 10.9.0.0/16 -i pn-1 -o ul -m comment --comment "pynet:1" -j ACCEPT',
        '-s 10.9.0.0/16 -d 10.9.0.0/16 -i ul -o pn-1 -m comment --comment "pynet:1" -j ACCEPT']
    assert texts(rules, "nat", POSTROUTING) == [
        '-s 10.9.0.0/16 -d 10.9.0.0/16 -o ul -m comment --comment "pynet:1" -j RETURN']


def test_with_icc_off_nothing_of_the_subnet_crosses():
    rules = cross_host_rules("ul")(NetworkPolicy("pn-1", "pynet:1", subnets4=("10.9.0.0/16",), icc=False))
    assert texts(rules, "filter", FORWARD) == [
        '-d 10.9.0.0/16 -i pn-1 ! -o pn-1 -m comment --comment "pynet:1" -j DROP']


def test_proxy_arp_answers_at_once():
    assert ("net/ipv4/conf/pn-1/proxy_arp", "1") in routed_sysctls("pn-1")
    assert ("net/ipv4/neigh/pn-1/proxy_delay", "0") in routed_sysctls("pn-1")


def test_the_mtu_is_the_modes_limit_at_most():
    option = "com.docker.network.driver.mtu"
    assert requested_mtu({}, option, 1500, "network n", "why") == 1500
    assert requested_mtu({option: "1400"}, option, 1500, "network n", "why") == 1400
    for bad in ("1501", "abc", "10", "-1"):
        with pytest.raises(InvalidRequest, match=rf"network n: MTU '{bad}': it must be a number from 68 to 1500 \(why\)"):
            requested_mtu({option: bad}, option, 1500, "network n", "why")


class Kernel:
    def __init__(self, off_segment: dict[str, str]) -> None:
        self.routes: dict[str, str] = {}
        self.off = off_segment
        self.refused: set[str] = set()

    async def next_hop(self, ipr, via, interface):
        return (False, self.off[via]) if via in self.off else (True, "")

    async def set_host_route(self, ipr, ip, via):
        if ip in self.refused:
            raise KernelError(f"route to {ip} via {via}: Network is unreachable")
        self.routes[ip] = via

    async def drop_host_route(self, ipr, ip):
        self.routes.pop(ip, None)

    async def host_routes(self, ipr):
        return dict(self.routes)


@pytest.fixture
def kernel(monkeypatch):
    k = Kernel({"198.51.100.9": "it is reached through the router 198.18.0.254"})
    for name in ("next_hop", "set_host_route", "drop_host_route", "host_routes"):
        monkeypatch.setattr(routes_module.kroutes, name, getattr(k, name))
    return k


def record(e: Endpoints, eid: str, host: str, via: str, *ips: str) -> None:
    e.records[KEYS.endpoint("web", eid).decode()] = (1, {"host": host, "vtep": via, "ips": list(ips)})


async def test_remote_containers_on_this_segment_are_routed_the_others_named(kernel):
    e = Endpoints(etcd=None, keys=KEYS, membership=SimpleNamespace(host="h1"), db=None)  # type: ignore[arg-type]
    r = Routes(e, ipr=None, underlay="ul")
    record(e, "a", "h2", "198.18.0.2", "10.9.1.2", "fd00::2")
    record(e, "b", "h9", "198.51.100.9", "10.9.9.9")
    record(e, "c", "h1", "198.18.0.1", "10.9.0.5")  # this host's own
    await r.add_network("web")
    assert kernel.routes == {"10.9.1.2": "198.18.0.2"}  # IPv4 only, never through a router
    assert r.problems("web") == ["host h9 (198.51.100.9): it is reached through the router 198.18.0.254:"
                                 " its containers are unreachable from here"]
    del e.records[KEYS.endpoint("web", "a").decode()]
    await r.sync("web")
    assert kernel.routes == {}
    await r.remove_network("web")
    assert list(r.networks()) == []


async def test_verification_puts_back_what_is_missing_and_drops_what_nobody_wants(kernel):
    e = Endpoints(etcd=None, keys=KEYS, membership=SimpleNamespace(host="h1"), db=None)  # type: ignore[arg-type]
    r = Routes(e, ipr=None, underlay="ul")
    record(e, "a", "h2", "198.18.0.2", "10.9.1.2")
    await r.add_network("web")
    assert await r.verify() == 0  # before etcd's snapshot nothing is touched
    e.synced.set()
    kernel.routes = {"10.9.7.7": "198.18.0.3"}  # its route lost, a stray one added
    assert await r.verify() == 2
    assert kernel.routes == {"10.9.1.2": "198.18.0.2"}


async def test_a_route_the_kernel_refuses_leaves_the_others_and_is_tried_again(kernel):
    e = Endpoints(etcd=None, keys=KEYS, membership=SimpleNamespace(host="h1"), db=None)  # type: ignore[arg-type]
    r = Routes(e, ipr=None, underlay="ul")
    record(e, "a", "h2", "198.18.0.2", "10.9.1.2")
    record(e, "b", "h3", "198.18.0.3", "10.9.1.3")
    kernel.refused = {"10.9.1.2"}
    await r.add_network("web")  # no exception: logged
    assert kernel.routes == {"10.9.1.3": "198.18.0.3"}
    kernel.refused = set()
    e.synced.set()
    assert await r.verify() == 1
    assert kernel.routes == {"10.9.1.2": "198.18.0.2", "10.9.1.3": "198.18.0.3"}


async def test_a_host_back_on_the_segment_is_routed_and_no_longer_reported(kernel):
    e = Endpoints(etcd=None, keys=KEYS, membership=SimpleNamespace(host="h1"), db=None)  # type: ignore[arg-type]
    r = Routes(e, ipr=None, underlay="ul")
    record(e, "b", "h9", "198.51.100.9", "10.9.9.9")
    record(e, "c", "h8", "fd00::8", "10.9.8.8")  # an IPv6 underlay address: never routed
    await r.add_network("web")
    assert set(r.unreachable()) == {"198.51.100.9", "fd00::8"} and kernel.routes == {}
    kernel.off = {}
    e.synced.set()
    await r.verify()
    assert kernel.routes == {"10.9.9.9": "198.51.100.9"} and set(r.unreachable()) == {"fd00::8"}
