import ipaddress

import pytest

from driver.errors import Conflict, InvalidRequest
from driver.bridge.options import NetworkOptions
from driver.bridge.store import Endpoint, Network
from driver.publish.portmap import PORTMAP, Binding, PortRequest, parse_portmap
from driver.publish.publisher import Publisher, host_addresses
from ipam.addr import parse_interface

A = ipaddress.ip_address
NID, EID, EID2 = "1" * 64, "a" * 64, "b" * 64


def entry(**kw):
    base = {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 0, "HostPortEnd": 0}
    return {**base, **kw}


def test_parse_portmap():
    got = parse_portmap({PORTMAP: [entry(HostPort=8080, HostPortEnd=8080),
                                   entry(Proto=17, Port=53, HostIP="127.0.0.1", HostPort=5353),
                                   entry(HostPort=8090, HostPortEnd=8099), entry()]})
    assert got == [PortRequest("tcp", 80, None, 8080, 8080),
                   PortRequest("udp", 53, A("127.0.0.1"), 5353, 5353),
                   PortRequest("tcp", 80, None, 8090, 8099),
                   PortRequest("tcp", 80, None, 0, 0)]
    assert parse_portmap(None) == [] and parse_portmap({PORTMAP: None}) == []


@pytest.mark.parametrize("bad,why", [
    (entry(Proto=1), "protocol 1"),
    (entry(Port=0), "container port 0"),
    (entry(Port="80"), "not a number"),
    (entry(HostPort=70000), "out of range"),
    (entry(HostPort=9000, HostPortEnd=8000), "is empty"),
    (entry(HostIP="localhost"), "not an IP address"),
    (entry(HostIP="1.2.3.4; rm -rf /"), "not an IP address"),
    ("80:80", "not an object"),
])
def test_parse_portmap_refuses(bad, why):
    with pytest.raises(InvalidRequest, match=why):
        parse_portmap({PORTMAP: [bad]})


def test_binding_round_trip_and_text():
    b = Binding("tcp", A("::"), 8080, A("fd00::2"), 80)
    assert Binding.from_json(b.to_json()) == b
    assert str(b) == "[::]:8080->80/tcp" and b.any_address and b.family == 6


def network(**opts):
    return Network(NID, "pn-test", NetworkOptions(**opts), [], [])


def endpoint(eid=EID, v4="10.1.0.2/24", v6=None):
    return Endpoint(eid, NID, "pnh", "pnc", "02:00:00:00:00:01", True,
                    parse_interface(v4) if v4 else None, parse_interface(v6) if v6 else None)


def test_host_addresses():
    req = PortRequest("tcp", 80, None, 8080, 8080)
    assert host_addresses(req, network(), endpoint()) == [(A("0.0.0.0"), A("10.1.0.2"))]
    assert host_addresses(req, network(), endpoint(v6="fd00::2/64")) == [
        (A("0.0.0.0"), A("10.1.0.2")), (A("::"), A("fd00::2"))]
    assert host_addresses(req, network(host_binding_ipv4="127.0.0.1"), endpoint()) == [
        (A("127.0.0.1"), A("10.1.0.2"))]
    with pytest.raises(InvalidRequest, match="no IPv6 address"):
        host_addresses(PortRequest("tcp", 80, A("::1"), 8080, 8080), network(), endpoint())


def test_publisher_holds_ports_and_names_conflicts():
    pub = Publisher()
    ep1, ep2 = endpoint(), endpoint(EID2, "10.1.0.3/24")
    any_port = pub.bind(network(host_binding_ipv4="127.0.0.1"), ep1,
                        [PortRequest("tcp", 80, None, 0, 0)], [])
    (b,) = any_port
    assert b.host_port > 0 and b.host_ip == A("127.0.0.1") and b.container_ip == A("10.1.0.2")
    others = [(ep1, b)]
    with pytest.raises(Conflict, match=f"already published by endpoint {EID[:12]}"):
        pub.bind(network(), ep2, [PortRequest("tcp", 80, A("127.0.0.1"), b.host_port, b.host_port)], others)
    # The socket really holds the port on the host.
    with pytest.raises(Conflict, match="already in use on the host"):
        pub.bind(network(), ep2, [PortRequest("tcp", 80, A("127.0.0.1"), b.host_port, b.host_port)], [])
    # A range skips the held port; udp is another namespace of ports.
    (r,) = pub.bind(network(), ep2, [PortRequest("tcp", 80, A("127.0.0.1"), b.host_port, b.host_port + 1)], others)
    assert r.host_port == b.host_port + 1
    (u,) = pub.bind(network(), ep2, [PortRequest("udp", 80, A("127.0.0.1"), b.host_port, b.host_port)], [])
    assert u.proto == "udp"
    pub.release(ep1.endpoint_id)
    pub.release(ep2.endpoint_id)
    (again,) = pub.bind(network(), ep2, [PortRequest("tcp", 80, A("127.0.0.1"), b.host_port, b.host_port)], [])
    pub.release(ep2.endpoint_id)


def test_publisher_all_or_nothing():
    pub = Publisher()
    ep = endpoint()
    with pytest.raises(InvalidRequest, match="not an address of this host"):
        pub.bind(network(), ep, [PortRequest("tcp", 80, A("127.0.0.1"), 0, 0),
                                 PortRequest("tcp", 81, A("198.51.100.123"), 0, 0)], [])
    assert pub._held == {}


def test_a_specific_default_ipv4_binding_adds_no_ipv6_wildcard():
    req = PortRequest("tcp", 80, None, 8080, 8080)
    ep = endpoint(v6="fd00::2/64")
    assert host_addresses(req, network(host_binding_ipv4="127.0.0.1"), ep) == [(A("127.0.0.1"), A("10.1.0.2"))]
    assert host_addresses(req, network(host_binding_ipv4="0.0.0.0"), ep) == [
        (A("0.0.0.0"), A("10.1.0.2")), (A("::"), A("fd00::2"))]
