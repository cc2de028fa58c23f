"""A whole BridgeMode inside a throwaway namespace: kernel links, iptables, state."""

import asyncio

import pytest

from driver import naming, wire
from driver.bridge import store
from driver.db import Database
from driver.errors import Conflict, InvalidRequest, KernelError, NotFound
from driver.firewall import Firewall
from driver.kernel.iptables import Iptables
from driver.kernel.sysctl import Sysctl
from driver.bridge.network_rules import NetworkPolicy, network_rules
from driver.chains import FORWARD as FORWARD_CHAIN, ISOLATION
from driver.bridge import BridgeMode

pytestmark = pytest.mark.kernel

NID = "1ed2c0ffee00" + "a1" * 26
NID2 = "2ed2c0ffee00" + "b2" * 26
EID = "b8b9d00d0001" + "c3" * 26
EID2 = "b8b9d00d0002" + "d4" * 26
BR = "pn-1ed2c0ffee00"
HOST, PEER = "pnhb8b9d00d0001", "pncb8b9d00d0001"
TAG = "pynet:1ed2c0ffee00"
SANDBOX = "/var/run/docker/netns/dea40fc6f528"
PORTS = {"com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}


def network_req(nid=NID, pool="10.1.0.0/24", gateway="10.1.0.1/24", v6=None, generic=None, aux=None):
    body = {"NetworkID": nid,
            "Options": {"com.docker.network.enable_ipv6": v6 is not None,
                        "com.docker.network.generic": generic or {}},
            "IPv4Data": [{"AddressSpace": "PynetLocal", "Pool": pool, "Gateway": gateway,
                          "AuxAddresses": aux or {}}],
            "IPv6Data": [{"AddressSpace": "PynetLocal", "Pool": v6[0], "Gateway": v6[1]}] if v6 else []}
    return wire.CreateNetworkRequest.model_validate(body)


def endpoint_req(eid=EID, nid=NID, address="10.1.0.2/24", address6="", mac=""):
    return wire.CreateEndpointRequest.model_validate({
        "NetworkID": nid, "EndpointID": eid,
        "Interface": {"Address": address, "AddressIPv6": address6, "MacAddress": mac}, "Options": PORTS})


def ep_req(eid=EID, nid=NID):
    return wire.EndpointRequest(NetworkID=nid, EndpointID=eid)


def join_req(eid=EID, nid=NID, sandbox=SANDBOX):
    return wire.JoinRequest.model_validate({"NetworkID": nid, "EndpointID": eid, "SandboxKey": sandbox,
                                            "Options": PORTS})


# The filter rules of one network with default options (both families).
N_RULES = len([r for r in network_rules(NetworkPolicy(BR, TAG, ("10.1.0.0/24",))) if r.table == "filter"])


def sysctl_for(ns):
    # Never the test process's own /proc/sys: that is the host's.
    return Sysctl(prefix=["ip", "netns", "exec", ns.name])


def firewall_for(ns, **binaries):
    return Firewall(Iptables(prefix=["ip", "netns", "exec", ns.name], **binaries))


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "pynet.db")


@pytest.fixture
async def driver(ns, ipr, db_path):
    firewall = firewall_for(ns)
    await firewall.ensure()
    db = Database(db_path)
    await db.open([store.SCHEMA])
    drv = BridgeMode(db, ipr, firewall, netns_dirs=("/var/run/docker/netns",), sysctl=sysctl_for(ns))
    await drv.load()
    try:
        yield drv
    finally:
        await db.close()


def tagged(ns, tag=TAG):
    return [r for family in (4, 6) for r in ns.rules(family) if tag in r]


def assert_network_gone(ns, tag=TAG):
    assert ns.pynet_links() == []
    assert tagged(ns, tag) == []
    assert [r for f in (4, 6) for r in ns.rules(f, "nat") if tag in r] == []
    for family in (4, 6):  # pynet's base stays
        assert f"-N {FORWARD_CHAIN}" in ns.rules(family)


# --- networks --------------------------------------------------------------------------


async def test_create_network(ns, driver):
    assert await driver.create_network(network_req(v6=("fd00:1::/64", "fd00:1::1/64"))) == wire.Empty()
    br = ns.link(BR)
    assert br is not None and ns.kind(br) == "bridge" and ns.is_up(br)
    assert br["ifalias"] == naming.network_alias(NID)
    assert ns.global_addresses(BR) == ["10.1.0.1/24", "fd00:1::1/64"]
    icc = f"-A {FORWARD_CHAIN} -i {BR} -o {BR} -m comment --comment \"{TAG}\" -j ACCEPT"
    for family in (4, 6):
        chain = ns.chain(FORWARD_CHAIN, family)
        assert chain[0] == f"-A {FORWARD_CHAIN} -j {ISOLATION}" and icc in chain
    assert NID in driver.networks


async def test_create_network_with_bridge_name(ns, driver):
    await driver.create_network(network_req(generic={"com.docker.network.bridge.name": "pnbr-test"}))
    assert ns.pynet_links() == []  # not pn-<id>
    assert ns.link("pnbr-test")["ifalias"] == naming.network_alias(NID)
    with pytest.raises(Conflict, match="pnbr-test"):
        await driver.create_network(network_req(NID2, "10.2.0.0/24", "10.2.0.1/24",
                                                generic={"com.docker.network.bridge.name": "pnbr-test"}))
    assert list(driver.networks) == [NID]
    await driver.delete_network(wire.NetworkRequest(NetworkID=NID))
    assert "pnbr-test" not in ns.links()
    assert tagged(ns) == []


async def test_create_network_refuses_a_foreign_link_of_the_bridge_name(ns, driver):
    ns.ip("link", "add", "brforeign", "type", "veth", "peer", "name", "brforeign1")
    with pytest.raises(Conflict, match="brforeign"):
        await driver.create_network(network_req(generic={"com.docker.network.bridge.name": "brforeign"}))
    assert ns.kind(ns.link("brforeign")) == "veth"
    assert tagged(ns) == [] and driver.networks == {}


async def test_create_network_again_is_harmless(ns, driver):
    req = network_req(v6=("fd00:1::/64", "fd00:1::1/64"))
    await driver.create_network(req)
    before = (ns.links()[BR]["ifindex"], ns.rules(4), ns.rules(6))
    assert await driver.create_network(req) == wire.Empty()
    assert (ns.links()[BR]["ifindex"], ns.rules(4), ns.rules(6)) == before
    assert ns.global_addresses(BR) == ["10.1.0.1/24", "fd00:1::1/64"]
    assert len(tagged(ns)) == N_RULES


async def test_create_network_again_repairs_what_went_missing(ns, driver):
    await driver.create_network(network_req())
    ns.ip("link", "del", BR)
    ns.iptables(4, "-F", FORWARD_CHAIN)
    await driver.create_network(network_req())
    assert ns.is_up(ns.link(BR)) and ns.global_addresses(BR) == ["10.1.0.1/24"]
    assert len(tagged(ns)) == N_RULES


async def test_create_network_with_another_definition_refused(ns, driver):
    await driver.create_network(network_req())
    with pytest.raises(Conflict, match="another definition"):
        await driver.create_network(network_req(pool="10.9.0.0/24", gateway="10.9.0.1/24"))
    assert ns.global_addresses(BR) == ["10.1.0.1/24"]


@pytest.mark.parametrize("req", [
    dict(pool="10.1.0.5/24"),                      # not canonical
    dict(gateway="10.2.0.1/24"),                   # gateway outside the subnet
    dict(aux={"h": "10.3.0.5/24"}),                # aux outside the subnet
    dict(pool="fd00::/64", gateway=""),            # IPv6 pool as IPv4Data
    dict(generic={"com.docker.network.bridge.name": "br;reboot"}),
    dict(generic={"com.docker.network.bridge.mtu": "1400"}),
])
async def test_create_network_invalid(ns, driver, req):
    with pytest.raises(InvalidRequest):
        await driver.create_network(network_req(**req))
    assert ns.pynet_links() == [] and driver.networks == {}


async def test_failed_firewall_leaves_nothing_behind(ns, ipr, db_path):
    await firewall_for(ns).ensure()
    db = Database(db_path)
    await db.open([store.SCHEMA])
    try:
        # iptables works, ip6tables does not: the IPv4 rule is added, then rolled back.
        drv = BridgeMode(db, ipr, firewall_for(ns, v6="pynet-no-such-ip6tables"),
                            netns_dirs=("/var/run/docker/netns",), sysctl=sysctl_for(ns))
        with pytest.raises(KernelError, match="pynet-no-such-ip6tables"):
            await drv.create_network(network_req(v6=("fd00:1::/64", "fd00:1::1/64")))
        assert_network_gone(ns)
        assert drv.networks == {}
        assert await db.read(store.load) == ([], [])
    finally:
        await db.close()


def disk_full(driver, monkeypatch):
    async def failing_write(fn):
        raise OSError("disk full")
    monkeypatch.setattr(driver.db, "write", failing_write)


async def test_failed_state_write_leaves_nothing_behind(ns, driver, monkeypatch):
    disk_full(driver, monkeypatch)
    with pytest.raises(OSError):
        await driver.create_network(network_req())
    monkeypatch.undo()
    assert_network_gone(ns)
    assert driver.networks == {}
    # and it can be created afterwards
    await driver.create_network(network_req())
    assert ns.pynet_links() == [BR]


async def test_delete_network(ns, driver):
    await driver.create_network(network_req(v6=("fd00:1::/64", "fd00:1::1/64")))
    await driver.create_endpoint(endpoint_req())
    await driver.delete_endpoint(ep_req())
    assert await driver.delete_network(wire.NetworkRequest(NetworkID=NID)) == wire.Empty()
    assert_network_gone(ns)
    assert driver.networks == {} and driver.endpoints == {}
    assert await driver.db.read(store.load) == ([], [])


async def test_delete_network_with_endpoints_left(ns, driver):
    await driver.create_network(network_req())
    await driver.create_endpoint(endpoint_req())
    await driver.create_endpoint(endpoint_req(EID2, address="10.1.0.3/24"))
    await driver.delete_network(wire.NetworkRequest(NetworkID=NID))
    assert_network_gone(ns)
    assert driver.endpoints == {}
    assert await driver.db.read(store.load) == ([], [])


async def test_delete_network_leaves_other_networks_alone(ns, driver):
    await driver.create_network(network_req())
    await driver.create_network(network_req(NID2, "10.2.0.0/24", "10.2.0.1/24"))
    await driver.delete_network(wire.NetworkRequest(NetworkID=NID))
    assert ns.pynet_links() == ["pn-2ed2c0ffee00"]
    assert tagged(ns) == [] and len(tagged(ns, "pynet:2ed2c0ffee00")) == N_RULES


async def test_unknown_ids_are_fine(ns, driver):
    await driver.delete_network(wire.NetworkRequest(NetworkID=NID))
    await driver.delete_endpoint(ep_req())
    await driver.leave(ep_req())
    await driver.revoke_external_connectivity(ep_req())
    assert (await driver.oper_info(ep_req())) == wire.OperInfoResponse(Value={})
    await driver.create_network(network_req())
    await driver.delete_endpoint(ep_req())  # unknown endpoint, known network
    await driver.delete_network(wire.NetworkRequest(NetworkID=NID))
    await driver.delete_network(wire.NetworkRequest(NetworkID=NID))  # twice
    assert_network_gone(ns)


async def test_delete_unknown_network_clears_leftovers_of_a_failed_create(ns, driver):
    ns.ip("link", "add", BR, "type", "bridge")
    ns.ip("link", "set", BR, "alias", naming.network_alias(NID))
    for family in (4, 6):
        ns.iptables(family, "-A", FORWARD_CHAIN, "-i", BR, "-o", BR, "-m", "comment", "--comment", TAG,
                    "-j", "ACCEPT")
    ns.iptables(4, "-t", "nat", "-A", "PYNET-POSTROUTING", "-s", "10.1.0.0/24", "!", "-o", BR,
                "-m", "comment", "--comment", TAG, "-j", "MASQUERADE")
    ns.ip("link", "add", "pn-2ed2c0ffee00", "type", "bridge")  # not marked as pynet's: kept
    await driver.delete_network(wire.NetworkRequest(NetworkID=NID))
    await driver.delete_network(wire.NetworkRequest(NetworkID=NID2))
    assert ns.pynet_links() == ["pn-2ed2c0ffee00"]
    assert tagged(ns) == []


# --- endpoints ---------------------------------------------------------------------------


async def test_create_endpoint(ns, driver):
    await driver.create_network(network_req())
    reply = await driver.create_endpoint(endpoint_req())
    mac = naming.endpoint_mac(EID)
    assert reply == wire.CreateEndpointResponse(Interface=wire.InterfaceReply(MacAddress=mac))
    assert reply.model_dump(exclude_none=True) == {"Interface": {"MacAddress": mac}}
    assert ns.bridge_ports() == {HOST: BR}
    host, peer = ns.link(HOST), ns.link(PEER)
    assert ns.kind(host) == "veth" and ns.is_up(host)
    assert host["ifalias"] == naming.endpoint_alias(EID)
    assert peer["address"] == mac


async def test_create_endpoint_with_mac_reports_nothing(ns, driver):
    await driver.create_network(network_req())
    reply = await driver.create_endpoint(endpoint_req(mac="02:AA:bb:cc:dd:ee"))
    assert reply.model_dump(exclude_none=True) == {}
    assert ns.link(PEER)["address"] == "02:aa:bb:cc:dd:ee"
    assert ns.bridge_ports() == {HOST: BR}


async def test_create_endpoint_again(ns, driver):
    await driver.create_network(network_req())
    first = await driver.create_endpoint(endpoint_req())
    before = ns.links()
    assert await driver.create_endpoint(endpoint_req()) == first
    after = ns.links()
    assert {n: e["ifindex"] for n, e in after.items()} == {n: e["ifindex"] for n, e in before.items()}
    with pytest.raises(Conflict, match="another definition"):
        await driver.create_endpoint(endpoint_req(address="10.1.0.9/24"))


@pytest.mark.parametrize("kw,error", [
    (dict(address="10.2.0.2/24"), InvalidRequest),     # outside the network's subnets
    (dict(address="10.1.0.2"), InvalidRequest),        # no prefix length
    (dict(address6="fd00:1::2/64"), InvalidRequest),   # the network has no IPv6
    (dict(mac="02:aa:bb"), InvalidRequest),
    (dict(nid=NID2), NotFound),
])
async def test_create_endpoint_invalid(ns, driver, kw, error):
    await driver.create_network(network_req())
    with pytest.raises(error):
        await driver.create_endpoint(endpoint_req(**kw))
    assert ns.bridge_ports() == {} and driver.endpoints == {}
    assert not any(n.startswith(("pnh", "pnc")) for n in ns.links())


async def test_create_endpoint_rebuilds_a_missing_bridge(ns, driver):
    await driver.create_network(network_req())
    ns.ip("link", "del", BR)
    await driver.create_endpoint(endpoint_req())
    assert ns.bridge_ports() == {HOST: BR}
    assert ns.global_addresses(BR) == ["10.1.0.1/24"]


async def test_failed_endpoint_write_leaves_no_veth(ns, driver, monkeypatch):
    await driver.create_network(network_req())
    disk_full(driver, monkeypatch)
    with pytest.raises(OSError):
        await driver.create_endpoint(endpoint_req())
    monkeypatch.undo()
    assert ns.pynet_links() == [BR]
    assert driver.endpoints == {}


async def test_delete_endpoint(ns, driver):
    await driver.create_network(network_req())
    await driver.create_endpoint(endpoint_req())
    await driver.create_endpoint(endpoint_req(EID2, address="10.1.0.3/24"))
    assert await driver.delete_endpoint(ep_req()) == wire.Empty()
    assert ns.pynet_links() == [BR, "pncb8b9d00d0002", "pnhb8b9d00d0002"]
    assert list(driver.endpoints) == [EID2]
    await driver.delete_endpoint(ep_req())  # again
    await driver.delete_endpoint(ep_req(EID2))
    assert ns.pynet_links() == [BR]
    assert ns.bridge_ports() == {}


async def test_oper_info(ns, driver):
    await driver.create_network(network_req())
    await driver.create_endpoint(endpoint_req())
    value = (await driver.oper_info(ep_req())).Value
    assert value["HostInterface"] == HOST and value["MacAddress"] == naming.endpoint_mac(EID)


# --- join and leave ----------------------------------------------------------------------


async def test_join(ns, driver):
    await driver.create_network(network_req(v6=("fd00:1::/64", "fd00:1::1/64")))
    await driver.create_endpoint(endpoint_req(address6="fd00:1::2/64"))
    reply = await driver.join(join_req())
    assert reply.InterfaceName == wire.InterfaceName(SrcName=PEER, DstPrefix="eth")
    assert (reply.Gateway, reply.GatewayIPv6) == ("10.1.0.1", "fd00:1::1")
    assert reply.DisableGatewayService is False
    assert (await driver.oper_info(ep_req())).Value["Sandbox"] == SANDBOX
    assert await driver.leave(ep_req()) == wire.Empty()
    assert (await driver.oper_info(ep_req())).Value["Sandbox"] == ""


async def test_join_without_address_has_no_gateway(ns, driver):
    await driver.create_network(network_req())
    await driver.create_endpoint(endpoint_req(address=""))
    reply = await driver.join(join_req())
    assert (reply.Gateway, reply.GatewayIPv6) == ("", "")


@pytest.mark.parametrize("sandbox", [
    "/tmp/dea40fc6f528",
    "/var/run/docker/netns/../../../etc/passwd",
    "/var/run/docker/netns/a/b",
    "/var/run/docker/netns/",
    "/var/run/docker/netns",
    "var/run/docker/netns/dea40fc6f528",
    "/var/run/docker/netns/./dea40fc6f528",
    "//var/run/docker/netns/dea40fc6f528",
    "/run/docker/netns/dea40fc6f528",  # not in this driver's netns_dirs
    "",
])
async def test_join_refuses_a_bad_sandbox_key(ns, driver, sandbox):
    await driver.create_network(network_req())
    await driver.create_endpoint(endpoint_req())
    with pytest.raises(InvalidRequest, match="SandboxKey"):
        await driver.join(join_req(sandbox=sandbox))
    assert (await driver.oper_info(ep_req())).Value["Sandbox"] == ""


async def test_join_unknown_endpoint(ns, driver):
    await driver.create_network(network_req())
    with pytest.raises(NotFound):
        await driver.join(join_req())
    with pytest.raises(NotFound):
        await driver.join(join_req(nid=NID2))


async def test_join_rebuilds_a_missing_pair(ns, driver):
    await driver.create_network(network_req())
    await driver.create_endpoint(endpoint_req())
    ns.ip("link", "del", HOST)
    reply = await driver.join(join_req())
    assert reply.InterfaceName.SrcName == PEER
    assert ns.link(PEER)["address"] == naming.endpoint_mac(EID)
    assert ns.bridge_ports() == {HOST: BR}


async def test_program_external_connectivity(ns, driver):
    await driver.create_network(network_req())
    await driver.create_endpoint(endpoint_req())
    req = wire.ProgramExternalConnectivityRequest.model_validate(
        {"NetworkID": NID, "EndpointID": EID, "Options": PORTS})
    assert await driver.program_external_connectivity(req) == wire.Empty()
    published = wire.ProgramExternalConnectivityRequest.model_validate(
        {"NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]}})
    await driver.program_external_connectivity(published)
    dnat = ('-A PYNET-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "pynet:1ed2c0ffee00"'
            ' -j DNAT --to-destination 10.1.0.2:80')
    assert dnat in ns.rules(4, "nat")
    await driver.program_external_connectivity(published)  # a repeat changes nothing
    assert ns.rules(4, "nat").count(dnat) == 1
    await driver.revoke_external_connectivity(ep_req())
    assert dnat not in ns.rules(4, "nat")


# --- state -------------------------------------------------------------------------------


async def test_state_reload(ns, ipr, driver, db_path):
    await driver.create_network(network_req(v6=("fd00:1::/64", "fd00:1::1/64"), aux={"h": "10.1.0.5/24"}))
    await driver.create_endpoint(endpoint_req(address6="fd00:1::2/64"))
    await driver.create_endpoint(endpoint_req(EID2, address="10.1.0.3/24", mac="02:aa:bb:cc:dd:ee"))
    await driver.join(join_req())
    await driver.db.close()

    db = Database(db_path)
    await db.open([store.SCHEMA])
    try:
        again = BridgeMode(db, ipr, firewall_for(ns), netns_dirs=("/var/run/docker/netns",),
                              sysctl=sysctl_for(ns))
        await again.load()
        assert list(again.networks) == [NID]
        net = again.networks[NID]
        assert net.same_definition(driver.networks[NID])
        assert set(again.endpoints) == {EID, EID2}
        for eid in (EID, EID2):
            assert again.endpoints[eid].same_definition(driver.endpoints[eid])
        assert (await again.oper_info(ep_req())).Value["Sandbox"] == SANDBOX
        # what Docker would send next works against the reloaded state
        assert (await again.create_network(network_req(v6=("fd00:1::/64", "fd00:1::1/64"),
                                                       aux={"h": "10.1.0.5/24"}))) == wire.Empty()
        reply = await again.create_endpoint(endpoint_req(address6="fd00:1::2/64"))
        assert reply.Interface.MacAddress == naming.endpoint_mac(EID)  # the same answer again
        assert (await again.create_endpoint(endpoint_req(EID2, address="10.1.0.3/24",
                                                         mac="02:aa:bb:cc:dd:ee"))).Interface is None
        assert (await again.join(join_req(EID2))).Gateway == "10.1.0.1"
        assert await again.holder_of(net.ipv4[0].pool, net.ipv4[0].aux["h"]) == \
            "aux address 'h' of network 1ed2c0ffee00"
        assert again.network_using(net.ipv4[0].pool) == NID
        await again.leave(ep_req())
        await again.delete_endpoint(ep_req())
        await again.delete_network(wire.NetworkRequest(NetworkID=NID))
        assert_network_gone(ns)
    finally:
        await db.close()


# --- concurrency ---------------------------------------------------------------------------


async def test_concurrent_endpoints_on_one_network(ns, driver):
    await driver.create_network(network_req())
    eids = [f"{i:012x}" + "e5" * 26 for i in range(1, 11)]
    await asyncio.gather(*(driver.create_endpoint(endpoint_req(eid, address=f"10.1.0.{10 + n}/24"))
                           for n, eid in enumerate(eids)))
    assert ns.bridge_ports() == {f"pnh{eid[:12]}": BR for eid in eids}
    await asyncio.gather(*(driver.delete_endpoint(ep_req(eid)) for eid in eids))
    assert ns.pynet_links() == [BR] and driver.endpoints == {}


async def test_create_endpoint_queued_behind_delete_network(ns, driver):
    await driver.create_network(network_req())
    results = await asyncio.gather(driver.delete_network(wire.NetworkRequest(NetworkID=NID)),
                                   driver.create_endpoint(endpoint_req()), return_exceptions=True)
    assert results[0] == wire.Empty()
    assert ns.pynet_links() == [], "the deleted network's bridge and veth came back"
    assert tagged(ns) == [], "the deleted network's rules came back"
    assert driver.endpoints == {}, "an endpoint of a deleted network is recorded"
    assert isinstance(results[1], NotFound), results[1]
