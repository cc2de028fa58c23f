"""Hostile input over the wire: the real app, the real driver and IPAM, fake kernel.

driver.server.make_app with a real BridgeMode and a real IpamService on a
real state database (tmp_path), wired as driver/app.py wires them; only the
kernel handles are fakes: an in-memory netlink handle (FakeIPRoute) that
refuses names the kernel would refuse or a shell would misread, a firewall
that records rules and refuses arguments with blanks or control characters,
a sysctl that records keys, and host ports held in memory.

1. A table of hostile requests: each must be refused with 500 {"Err": text
   naming the field or object}, leave every table of the database (and the
   in-memory state, the fake kernel and the held ports) as it was, and the
   server must go on answering Plugin.Activate. The base state (two networks
   with an endpoint each, a full /30 pool) is built once through the wire and
   copied; the table runs against one server, restarted on a fresh copy if a
   case changed anything.
2. A hypothesis property test sending more than 10,000 generated requests
   through the HTTP server of one pynet whose state builds up: parts of
   Docker's own call sequences (create, run -p, stop, rm) interleaved with
   requests on random paths whose bodies are valid, plausible or junk.

The bugs this file found have tests of their own at its end. A failure found
by the property test names the request; as the server's state carries over
between examples, hypothesis may call it flaky when shrinking.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver.bridge.options import OPTIONS
from driver.publish.portmap import EXPOSED, PORTMAP
from driver.server import CONTENT_TYPE, MAX_BODY, routes

ACCEPT = {"Accept": "application/vnd.docker.plugins.v1.2+json"}
INTERNAL = "pynet internal error"


from .fakes import (_id, Harness, build_harness, NID_A, NID_I, NID_NEW, EID_A, EID_I, EID_NEW, POOL_A, POOL_I, POOL_TINY, SANDBOX)  # noqa: E402


async def post(client, path: str, body: Any = None, raw: Optional[bytes] = None, method: str = "POST"):
    """Send the way Docker does (no Content-Type); (status, parsed reply, raw text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    resp = await client.request(method, path, data=data, headers=ACCEPT,
                                skip_auto_headers=["Content-Type"])
    text = await resp.text()
    assert resp.headers.get("Content-Type", "").split(";")[0] == CONTENT_TYPE, (path, resp.headers)
    return resp.status, json.loads(text), text


async def ok(client, method: str, body: Any = None) -> dict:
    status, reply, text = await post(client, f"/{method}", body)
    assert status == 200, (method, body, text)
    return reply


async def make_base_state(client) -> None:
    """Two networks with an endpoint each, the way Docker builds them, and a full tiny pool."""
    gw = {"RequestAddressType": "com.docker.network.gateway"}
    assert (await ok(client, "IpamDriver.RequestPool", {"Pool": "10.1.0.0/24"}))["PoolID"] == POOL_A
    await ok(client, "IpamDriver.RequestAddress", {"PoolID": POOL_A, "Address": "", "Options": gw})
    await ok(client, "IpamDriver.RequestAddress", {"PoolID": POOL_A, "Address": "10.1.0.5", "Options": None})
    await ok(client, "NetworkDriver.CreateNetwork", {
        "NetworkID": NID_A,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "PynetLocal", "Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24",
                      "AuxAddresses": {"printer": "10.1.0.5/24"}}],
        "IPv6Data": []})
    assert (await ok(client, "IpamDriver.RequestAddress", {"PoolID": POOL_A, "Address": ""}))["Address"] \
        == "10.1.0.2/24"
    await ok(client, "NetworkDriver.CreateEndpoint", {
        "NetworkID": NID_A, "EndpointID": EID_A,
        "Interface": {"Address": "10.1.0.2/24", "AddressIPv6": "", "MacAddress": ""},
        "Options": {EXPOSED: [], PORTMAP: []}})

    assert (await ok(client, "IpamDriver.RequestPool", {"Pool": "10.3.0.0/24"}))["PoolID"] == POOL_I
    await ok(client, "IpamDriver.RequestAddress", {"PoolID": POOL_I, "Address": "", "Options": gw})
    await ok(client, "NetworkDriver.CreateNetwork", {
        "NetworkID": NID_I, "Options": {"com.docker.network.internal": True},
        "IPv4Data": [{"Pool": "10.3.0.0/24", "Gateway": "10.3.0.1/24"}]})
    await ok(client, "IpamDriver.RequestAddress", {"PoolID": POOL_I, "Address": ""})
    await ok(client, "NetworkDriver.CreateEndpoint", {
        "NetworkID": NID_I, "EndpointID": EID_I,
        "Interface": {"Address": "10.3.0.2/24", "AddressIPv6": "", "MacAddress": ""}})

    assert (await ok(client, "IpamDriver.RequestPool", {"Pool": "10.9.0.0/30"}))["PoolID"] == POOL_TINY
    await ok(client, "IpamDriver.RequestAddress", {"PoolID": POOL_TINY, "Address": ""})
    await ok(client, "IpamDriver.RequestAddress", {"PoolID": POOL_TINY, "Address": ""})


class _NoPatch:
    def setattr(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def base_template(tmp_path_factory):
    """The base state, built once through the wire: its database file and fake kernel."""
    directory = tmp_path_factory.mktemp("base")

    async def build():
        h = await build_harness(directory, _NoPatch())
        cl = TestClient(TestServer(h.app()))
        await cl.start_server()
        try:
            await make_base_state(cl)
            h.check_consistency()
        finally:
            await cl.close()
            await h.close()  # checkpoints the WAL into the file
        return h.ipr

    loop = asyncio.new_event_loop()
    try:
        ipr = loop.run_until_complete(build())
    finally:
        loop.close()
    return directory / "pynet.db", ipr


@pytest.fixture
async def harness(tmp_path, monkeypatch, base_template):
    """A pynet started on a copy of the base state (as after a restart: loaded from disk)."""
    path, ipr = base_template
    shutil.copyfile(path, tmp_path / "pynet.db")
    h = await build_harness(tmp_path, monkeypatch, copy.deepcopy(ipr))
    h.check_consistency()
    yield h
    await h.close()


@pytest.fixture
async def client(aiohttp_client, harness):
    return await aiohttp_client(harness.app())


async def refused(client, harness, path: str, body: Any = None, raw: Optional[bytes] = None) -> str:
    """Send a request that must be refused; check the refusal and that nothing changed."""
    before = harness.snapshot()
    status, reply, text = await post(client, path, body, raw)
    assert status == 500, text
    assert isinstance(reply, dict) and set(reply) == {"Err"}, text
    err = reply["Err"]
    assert isinstance(err, str) and err, text
    assert INTERNAL not in err, err
    after = harness.snapshot()
    assert after == before, f"refused, but the state changed: {err}"
    status, reply, _ = await post(client, "/Plugin.Activate")
    assert (status, reply) == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
    harness.check_consistency()
    return err


# --- the table ------------------------------------------------------------------------

CN, CE, JOIN, PEC = ("/NetworkDriver.CreateNetwork", "/NetworkDriver.CreateEndpoint",
                     "/NetworkDriver.Join", "/NetworkDriver.ProgramExternalConnectivity")
RP, RA, REL_A, REL_P = ("/IpamDriver.RequestPool", "/IpamDriver.RequestAddress",
                        "/IpamDriver.ReleaseAddress", "/IpamDriver.ReleasePool")
S_A, S_I, S_NEW, E_A, E_NEW = NID_A[:12], NID_I[:12], NID_NEW[:12], EID_A[:12], EID_NEW[:12]


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: Any = None
    expect: tuple = ()  # each item must be in the text; a tuple item: one of its strings
    raw: Optional[bytes] = None

    def __str__(self) -> str:
        return self.name


def net(pool="10.7.0.0/24", gateway="10.7.0.1/24", generic=None, aux=None, nid=NID_NEW, **options):
    """A CreateNetwork body for a new network; keyword options go to Options."""
    data = {"AddressSpace": "PynetLocal", "Pool": pool, "Gateway": gateway}
    if aux is not None:
        data["AuxAddresses"] = aux
    opts = {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": generic or {}}
    opts.update(options)
    return {"NetworkID": nid, "Options": opts, "IPv4Data": [data], "IPv6Data": []}


def net6(pool6, gateway6="", mtu=None):
    body = net(generic={"com.docker.network.driver.mtu": mtu} if mtu else None,
               **{"com.docker.network.enable_ipv6": True})
    body["IPv6Data"] = [{"AddressSpace": "PynetLocal", "Pool": pool6, "Gateway": gateway6}]
    return body


def opt(key, value):
    return net(generic={key: value})


def bridge(name):
    return opt("com.docker.network.bridge.name", name)


def ep(iface=None, nid=NID_A, eid=EID_NEW, options=None):
    return {"NetworkID": nid, "EndpointID": eid,
            "Interface": iface if iface is not None else {"Address": "", "AddressIPv6": "", "MacAddress": ""},
            "Options": options if options is not None else {}}


def iface(address="", address6="", mac=""):
    return {"Address": address, "AddressIPv6": address6, "MacAddress": mac}


def join(key, nid=NID_A, eid=EID_A):
    return {"NetworkID": nid, "EndpointID": eid, "SandboxKey": key,
            "Options": {EXPOSED: [], PORTMAP: []}}


def portmap(*entries, nid=NID_A, eid=EID_A):
    return {"NetworkID": nid, "EndpointID": eid, "Options": {EXPOSED: [], PORTMAP: list(entries)}}


def pm(**overrides):
    entry = {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}
    for key, value in overrides.items():
        if value is ...:
            entry.pop(key)
        else:
            entry[key] = value
    return entry


ALL_OPTION_KEYS = tuple(sorted(OPTIONS))
BIG = json.dumps({"NetworkID": NID_NEW, "Options": {"x": "y" * (MAX_BODY + 10)}}).encode()

CASES = [
    # malformed bodies
    Case("json-truncated", CN, raw=b'{"NetworkID": "', expect=("body is not valid JSON",)),
    Case("json-trailing-comma", CN, raw=b'{"NetworkID": "' + NID_NEW.encode() + b'",}',
         expect=("body is not valid JSON",)),
    Case("json-single-quotes", RP, raw=b"{'Pool': '10.7.0.0/24'}", expect=("body is not valid JSON",)),
    Case("json-bad-utf8", CE, raw=b'{"NetworkID": "\xff\xfe"}', expect=("body is not valid JSON",)),
    Case("json-garbage", JOIN, raw=b"\x00\x01\x02<html>", expect=("body is not valid JSON",)),
    Case("body-array", CN, raw=b"[]", expect=("body must be a JSON object, not list",)),
    Case("body-array-of-object", CN, raw=json.dumps([{"NetworkID": NID_NEW}]).encode(),
         expect=("body must be a JSON object, not list",)),
    Case("body-number", RP, raw=b"42", expect=("body must be a JSON object, not int",)),
    Case("body-float", JOIN, raw=b"1.5e300", expect=("body must be a JSON object, not float",)),
    Case("body-string", REL_P, raw=json.dumps(POOL_A).encode(), expect=("body must be a JSON object, not str",)),
    Case("body-null", "/NetworkDriver.DeleteNetwork", raw=b"null", expect=("body must be a JSON object",)),
    Case("body-true", RA, raw=b"true", expect=("body must be a JSON object, not bool",)),
    Case("body-empty-needs-fields", CN, raw=b"", expect=(("field NetworkID", "empty request body"),)),
    Case("body-over-1mib", CN, raw=BIG, expect=(f"body larger than {MAX_BODY} bytes",)),
    Case("body-over-1mib-ipam", RP, raw=b'{"Pool": "' + b"1" * (MAX_BODY + 1) + b'"}',
         expect=(f"body larger than {MAX_BODY} bytes",)),
    # wrong types
    Case("networkid-int", CN, {"NetworkID": 5}, ("field NetworkID",)),
    Case("networkid-float", "/NetworkDriver.DeleteNetwork", {"NetworkID": 1e64}, ("field NetworkID",)),
    Case("networkid-list", JOIN, {**join(SANDBOX), "NetworkID": [NID_A]}, ("field NetworkID",)),
    Case("options-list", CN, {"NetworkID": NID_NEW, "Options": []}, ("field Options",)),
    Case("options-list-endpoint", CE, {**ep(), "Options": ["a"]}, ("field Options",)),
    Case("options-string-join", JOIN, {**join(SANDBOX), "Options": "x"}, ("field Options",)),
    Case("interface-string", CE, ep(iface="10.1.0.9/24"), ("field Interface",)),
    Case("interface-list", CE, ep(iface=[]), ("field Interface",)),
    Case("interface-address-int", CE, ep(iface={"Address": 167837961}), ("field Interface.Address",)),
    Case("ipv4data-object", CN, {"NetworkID": NID_NEW, "IPv4Data": {"Pool": "10.7.0.0/24"}}, ("field IPv4Data",)),
    Case("ipv4data-gateway-int", CN, {"NetworkID": NID_NEW, "IPv4Data": [{"Pool": "10.7.0.0/24", "Gateway": 1}]},
         ("field IPv4Data.0.Gateway",)),
    Case("aux-list", CN, net(aux=["10.7.0.5/24"]), ("field IPv4Data.0.AuxAddresses",)),
    Case("aux-value-int", CN, net(aux={"h": 5}), ("field IPv4Data.0.AuxAddresses.h",)),
    Case("endpointid-list", "/NetworkDriver.Leave", {"NetworkID": NID_A, "EndpointID": [EID_A]},
         ("field EndpointID",)),
    Case("sandbox-null", JOIN, join(None), ("field SandboxKey",)),
    Case("sandbox-int", JOIN, join(0), ("field SandboxKey",)),
    Case("v6-string", RP, {"Pool": "10.7.0.0/24", "V6": "true"}, ("field V6",)),
    Case("pool-int", RP, {"Pool": 10}, ("field Pool",)),
    Case("subpool-list", RP, {"Pool": "10.7.0.0/24", "SubPool": ["10.7.0.0/25"]}, ("field SubPool",)),
    Case("ipam-options-int-value", RP, {"Pool": "10.7.0.0/24", "Options": {"a": 1}}, ("field Options.a",)),
    Case("ipam-options-list", RA, {"PoolID": POOL_A, "Options": ["x"]}, ("field Options",)),
    Case("poolid-int", REL_P, {"PoolID": 7}, ("field PoolID",)),
    Case("release-address-null", REL_A, {"PoolID": POOL_A, "Address": None}, ("field Address",)),
    Case("discovery-type-string", "/NetworkDriver.DiscoverNew", {"DiscoveryType": "1"}, ("field DiscoveryType",)),
    # missing fields
    Case("missing-networkid", CN, {}, ("field NetworkID",)),
    Case("missing-endpointid", CE, {"NetworkID": NID_A}, ("field EndpointID",)),
    Case("missing-sandbox", JOIN, {"NetworkID": NID_A, "EndpointID": EID_A}, ("field SandboxKey",)),
    Case("missing-ids-operinfo", "/NetworkDriver.EndpointOperInfo", {}, ("field NetworkID", "field EndpointID")),
    Case("missing-pool", CN, {"NetworkID": NID_NEW, "IPv4Data": [{"Gateway": "10.7.0.1/24"}]},
         ("field IPv4Data.0.Pool",)),
    Case("missing-poolid-release", REL_P, {}, ("field PoolID",)),
    Case("missing-poolid-request", RA, {"Address": "10.1.0.9"}, ("field PoolID",)),
    Case("missing-address-release", REL_A, {"PoolID": POOL_A}, ("field Address",)),
    # invalid and non-canonical CIDRs
    Case("cidr-noncanonical-network", CN, net(pool="10.1.0.5/24", gateway=""),
         ("IPv4Data.Pool", "'10.1.0.5/24'", "did you mean 10.1.0.0/24")),
    Case("cidr-noncanonical-pool", RP, {"Pool": "10.1.0.5/24"}, ("subnet '10.1.0.5/24'", "did you mean 10.1.0.0/24")),
    Case("cidr-noncanonical-v6", RP, {"Pool": "fd00:0::/64", "V6": True}, ("did you mean fd00::/64",)),
    Case("cidr-noncanonical-subpool", RP, {"Pool": "10.7.0.0/24", "SubPool": "10.7.0.5/25"},
         ("ip-range '10.7.0.5/25'", "did you mean 10.7.0.0/25")),
    Case("cidr-prefix-33", RP, {"Pool": "10.7.0.0/33"}, ("subnet '10.7.0.0/33' is not a valid CIDR",)),
    Case("cidr-no-prefix", RP, {"Pool": "10.7.0.0"}, ("subnet '10.7.0.0' is not a CIDR",)),
    Case("cidr-words", RP, {"Pool": "banana/24"}, ("subnet 'banana/24'",)),
    Case("cidr-leading-zero", RP, {"Pool": "010.7.0.0/24"}, ("subnet '010.7.0.0/24'",)),
    Case("cidr-blank", RP, {"Pool": " 10.7.0.0/24"}, ("subnet ' 10.7.0.0/24'",)),
    Case("cidr-v6-prefix-200", RP, {"Pool": "fd00::/200", "V6": True}, ("subnet 'fd00::/200'",)),
    Case("cidr-shell", RP, {"Pool": "10.7.0.0/24;reboot"}, ("subnet '10.7.0.0/24;reboot'",)),
    Case("cidr-empty-network", CN, net(pool="", gateway=""), ("IPv4Data.Pool ''",)),
    Case("cidr-v6-in-ipv4data", CN, net(pool="fd00::/64", gateway=""), ("IPv4Data.Pool fd00::/64 is not IPv4",)),
    Case("cidr-v4-in-ipv6data", CN, net6("10.8.0.0/24"), ("IPv6Data.Pool 10.8.0.0/24 is not IPv6",)),
    Case("pool-v4-asked-v6", RP, {"Pool": "10.7.0.0/24", "V6": True}, ("subnet 10.7.0.0/24 is not an IPv6",)),
    Case("subpool-outside", RP, {"Pool": "10.7.0.0/24", "SubPool": "10.8.0.0/25"},
         ("ip-range 10.8.0.0/25 is not inside subnet 10.7.0.0/24",)),
    Case("subpool-without-pool", RP, {"SubPool": "10.7.0.0/25"}, ("ip-range 10.7.0.0/25 needs a --subnet",)),
    Case("address-space-unknown", RP, {"AddressSpace": "`id`", "Pool": "10.7.0.0/24"},
         ("address space '`id`' is unknown",)),
    Case("ipam-opt-unknown", RP, {"Pool": "10.7.0.0/24", "Options": {"foo": "bar"}}, ("unknown --ipam-opt 'foo'",)),
    # gateway and aux addresses outside the subnet
    Case("gateway-outside", CN, net(gateway="10.2.0.1/24"), ("gateway 10.2.0.1 is outside subnet 10.7.0.0/24",)),
    Case("gateway-v6-in-v4", CN, net(gateway="fd00::1/64"), ("gateway fd00::1 is outside subnet 10.7.0.0/24",)),
    Case("gateway-no-prefix", CN, net(gateway="10.7.0.1"),
         ("IPv4Data.Gateway '10.7.0.1' must be an address with a prefix length",)),
    Case("gateway-junk", CN, net(gateway="10.7.0.300/24"), ("IPv4Data.Gateway '10.7.0.300/24'",)),
    Case("gateway6-outside", CN, net6("fd00:7::/64", "fd00:8::1/64"), ("gateway fd00:8::1 is outside subnet fd00:7::/64",)),
    Case("aux-outside", CN, net(aux={"printer": "10.2.0.5/24"}),
         ("aux address printer=10.2.0.5 is outside subnet 10.7.0.0/24",)),
    Case("aux-junk", CN, net(aux={"printer": "printer.local"}), ("aux address 'printer'",)),
    Case("aux-shell", CN, net(aux={"x": "$(reboot)"}), ("aux address 'x'", "$(reboot)")),
    # --ip outside the pool, and other refused addresses
    Case("ip-outside-pool", RA, {"PoolID": POOL_A, "Address": "10.2.0.9"},
         (POOL_A, "address 10.2.0.9 is not inside pool 10.1.0.0/24")),
    Case("ip-network-address", RA, {"PoolID": POOL_A, "Address": "10.1.0.0"}, ("network address of pool 10.1.0.0/24",)),
    Case("ip-broadcast-address", RA, {"PoolID": POOL_A, "Address": "10.1.0.255"},
         ("broadcast address of pool 10.1.0.0/24",)),
    Case("ip-v6-in-v4-pool", RA, {"PoolID": POOL_A, "Address": "fd00::9"}, ("fd00::9 is not inside pool",)),
    Case("ip-junk", RA, {"PoolID": POOL_A, "Address": "10.1.0.999"}, ("address '10.1.0.999' is not a valid IP",)),
    Case("ip-shell", RA, {"PoolID": POOL_A, "Address": "10.1.0.9;reboot"}, ("address '10.1.0.9;reboot'",)),
    Case("ip-held-by-gateway", RA, {"PoolID": POOL_A, "Address": "10.1.0.1"},
         (f"address 10.1.0.1 is already in use by the gateway of network {S_A}",)),
    Case("ip-held-by-aux", RA, {"PoolID": POOL_A, "Address": "10.1.0.5"}, (f"aux address 'printer' of network {S_A}",)),
    Case("ip-held-by-endpoint", RA, {"PoolID": POOL_A, "Address": "10.1.0.2/24"},
         (f"endpoint {E_A} on network {S_A}",)),
    Case("ip-unknown-pool", RA, {"PoolID": "PynetLocal/10.99.0.0/24", "Address": ""},
         ("pool 'PynetLocal/10.99.0.0/24' not found",)),
    Case("ip-shell-pool", RA, {"PoolID": "$(reboot)", "Address": ""}, ("pool '$(reboot)' not found",)),
    Case("release-junk-address", REL_A, {"PoolID": POOL_A, "Address": "junk"},
         (POOL_A, "address 'junk' is not a valid IP address")),
    Case("endpoint-address-outside", CE, ep(iface("10.2.0.9/24")),
         ("address 10.2.0.9/24 is outside the subnets of network", S_A, "10.1.0.0/24")),
    Case("endpoint-address-no-prefix", CE, ep(iface("10.1.0.9")), ("Interface.Address '10.1.0.9' must be",)),
    Case("endpoint-address6-no-v6", CE, ep(iface("10.1.0.9/24", "fd00::9/64")),
         ("address fd00::9/64 is outside the subnets", "(none)")),
    Case("endpoint-mac-junk", CE, ep(iface("10.1.0.9/24", mac="02:00:00:00:00:01;reboot")),
         ("MacAddress '02:00:00:00:00:01;reboot' is not a MAC address",)),
    Case("endpoint-unknown-network", CE, ep(nid=NID_NEW), (f"network {S_NEW} not found",)),
    Case("endpoint-redefined", CE, ep(iface("10.1.0.9/24"), eid=EID_A),
         (f"endpoint {E_A} already exists with another definition",)),
    # overlapping subnets, exhausted pool
    Case("overlap-supernet", RP, {"Pool": "10.1.0.0/16"},
         (f"subnet 10.1.0.0/16 overlaps network {S_A} (10.1.0.0/24)",)),
    Case("overlap-subnet", RP, {"Pool": "10.1.0.128/25"}, ("subnet 10.1.0.128/25 overlaps network",)),
    Case("overlap-same-used", RP, {"Pool": "10.1.0.0/24"}, ("subnet 10.1.0.0/24 overlaps network",)),
    Case("overlap-same-other-range", RP, {"Pool": "10.1.0.0/24", "SubPool": "10.1.0.0/25"}, ("overlaps network",)),
    Case("overlap-pool", RP, {"Pool": "10.9.0.0/29"}, (f"overlaps pool {POOL_TINY}",)),
    Case("exhausted", RA, {"PoolID": POOL_TINY, "Address": ""},
         (POOL_TINY, "no free address left in 10.9.0.0/30")),
    Case("exhausted-gateway", RA, {"PoolID": POOL_TINY, "Address": "",
                                   "Options": {"RequestAddressType": "com.docker.network.gateway"}},
         ("no free address left in 10.9.0.0/30",)),
    # -o options
    Case("option-unknown", CN, opt("com.docker.network.bridge.nme", "x"),
         ("unknown option -o com.docker.network.bridge.nme", *ALL_OPTION_KEYS)),
    Case("option-unknown-short", CN, opt("mtu", "1500"), ("unknown option -o mtu", *ALL_OPTION_KEYS)),
    Case("option-mtu-abc", CN, opt("com.docker.network.driver.mtu", "abc"),
         ("option -o com.docker.network.driver.mtu=abc: expected a number",)),
    Case("option-mtu-low", CN, opt("com.docker.network.driver.mtu", "67"), ("mtu=67: must be between 68 and 65535",)),
    Case("option-mtu-high", CN, opt("com.docker.network.driver.mtu", "65536"), ("mtu=65536: must be between",)),
    Case("option-mtu-negative", CN, opt("com.docker.network.driver.mtu", "-1"), ("mtu=-1",)),
    Case("option-mtu-float", CN, opt("com.docker.network.driver.mtu", "1e3"), ("mtu=1e3: expected a number",)),
    Case("option-mtu-shell", CN, opt("com.docker.network.driver.mtu", "1500;reboot"), ("mtu=1500;reboot",)),
    Case("option-mtu-int", CN, opt("com.docker.network.driver.mtu", 1500),
         ("option -o com.docker.network.driver.mtu: expected a string, got 1500",)),
    Case("option-icc-yes", CN, opt("com.docker.network.bridge.enable_icc", "yes"),
         ("option -o com.docker.network.bridge.enable_icc=yes: expected true or false",)),
    Case("option-icc-bool", CN, opt("com.docker.network.bridge.enable_icc", True),
         ("com.docker.network.bridge.enable_icc: expected a string",)),
    Case("option-icc-shell", CN, opt("com.docker.network.bridge.enable_icc", "`id`"), ("enable_icc=`id`",)),
    Case("option-masquerade-empty", CN, opt("com.docker.network.bridge.enable_ip_masquerade", ""),
         ("enable_ip_masquerade=: expected true or false",)),
    Case("option-inhibit-no", CN, opt("com.docker.network.bridge.inhibit_ipv4", "no"), ("inhibit_ipv4=no",)),
    Case("option-host-binding-v6", CN, opt("com.docker.network.bridge.host_binding_ipv4", "::1"),
         ("host_binding_ipv4=::1: expected an IPv4 address",)),
    Case("option-host-binding-shell", CN, opt("com.docker.network.bridge.host_binding_ipv4", "$(reboot)"),
         ("host_binding_ipv4=$(reboot)",)),
    Case("option-gateway-mode", CN, opt("com.docker.network.bridge.gateway_mode_ipv6", "bridge"),
         ("gateway_mode_ipv6=bridge: expected nat or routed",)),
    Case("option-generic-list", CN, net(generic=None, **{"com.docker.network.generic": ["a"]}),
         ("option com.docker.network.generic: expected an object, got list",)),
    Case("option-ipv6-maybe", CN, net(**{"com.docker.network.enable_ipv6": "maybe"}),
         ("option com.docker.network.enable_ipv6: 'maybe' is not a boolean",)),
    Case("option-internal-int", CN, net(**{"com.docker.network.internal": 1}),
         ("option com.docker.network.internal: 1 is not a boolean",)),
    Case("option-ipv6-without-pool", CN, net(**{"com.docker.network.enable_ipv6": True}),
         ("--ipv6 was asked for but Docker sent no IPv6 pool",)),
    Case("option-ipv6-small-mtu", CN, net6("fd00:7::/64", mtu="1000"), ("IPv6 needs an MTU of at least 1280",)),
    # interface names
    *[Case(f"bridge-name-{i}", CN, bridge(name), ("com.docker.network.bridge.name", "is not a valid interface name"))
      for i, name in enumerate([
          "abcdefghijklmnop", "a" * 100, "", ".", "..", "-br", ".br", "br/0", "br 0", "brü", "br0\t",
          "br:0", "br0;rm -rf /", "$(reboot)", "`id`", "br0\nbr1", "br0|id", "br0&&id", "br0>x", "'br0'",
          "br0\x00", "\u0431r0"])],
    Case("bridge-name-not-string", CN, bridge(["br0"]),
         ("option -o com.docker.network.bridge.name: expected a string",)),
    Case("bridge-name-taken", CN, bridge("pn-" + S_A), (f"bridge name pn-{S_A} is already used by network {S_A}",)),
    Case("bridge-name-foreign", CN, bridge("eth0"), ("interface eth0 already exists and is not this network's bridge",)),
    Case("bridge-name-veth", CN, bridge("pnh" + E_A), (f"interface pnh{E_A} already exists",)),
    Case("network-redefined", CN, net(nid=NID_A, pool="10.1.0.0/24", gateway="10.1.0.1/24"),
         (f"network {S_A} already exists with another definition",)),
    # SandboxKey outside the netns directory
    *[Case(f"sandbox-{i}", JOIN, join(key), (f"endpoint {E_A}: SandboxKey", "is not inside Docker's netns directory"))
      for i, key in enumerate([
          "/etc/passwd", "/var/run/docker/netns/../../../etc/shadow", "var/run/docker/netns/dea40fc6f528",
          "netns/abc", "../netns/abc", "", "/var/run/docker/netns", "/var/run/docker/netns/",
          "/var/run/docker/netns/a/b", "/var/run/docker/netns/./abc", "/var/run/docker/netns//abc",
          "/var/run/docker/netns/..", "/var/run/docker/netns/../netns/abc", "/proc/1/ns/net",
          "/run/docker/netns/../../../etc/shadow", "~/netns/abc", "/var/run/docker/netns/abc\x00/../../etc",
          "/var/run/docker/netns/$(reboot)/x", "/var/run/docker/netns\n/etc"])],
    Case("join-unknown-endpoint", JOIN, join(SANDBOX, eid=EID_NEW), (f"endpoint {E_NEW} not found on network {S_A}",)),
    Case("join-wrong-network", JOIN, join(SANDBOX, nid=NID_I), (f"endpoint {E_A} not found on network {S_I}",)),
    Case("join-unknown-network", JOIN, join(SANDBOX, nid=NID_NEW), (f"network {S_NEW} not found",)),
    # IDs that are not Docker's
    *[Case(f"id-{route.rsplit('.', 1)[1]}-{label}", route, body, (f"field {fld}",))
      for label, bad in [("traversal", "../../x"), ("65-chars", "a" * 65), ("uppercase", "A" * 64),
                         ("11-chars", "a" * 11), ("not-hex", "g" * 64), ("newline", NID_A + "\n"),
                         ("space", " " + NID_A), ("arabic-digits", "\u0661" * 64), ("empty", ""),
                         ("0x", "0x" + "a" * 62), ("shell", "aaaaaaaaaaaa;reboot")]
      for route, body, fld in [
          (CN, {"NetworkID": bad}, "NetworkID"),
          ("/NetworkDriver.DeleteNetwork", {"NetworkID": bad}, "NetworkID"),
          (CE, ep(eid=bad), "EndpointID"),
          (JOIN, join(SANDBOX, eid=bad), "EndpointID"),
          ("/NetworkDriver.Leave", {"NetworkID": bad, "EndpointID": EID_A}, "NetworkID"),
          ("/NetworkDriver.DeleteEndpoint", {"NetworkID": NID_A, "EndpointID": bad}, "EndpointID"),
          ("/NetworkDriver.EndpointOperInfo", {"NetworkID": NID_A, "EndpointID": bad}, "EndpointID"),
          (PEC, portmap(eid=bad), "EndpointID"),
          ("/NetworkDriver.RevokeExternalConnectivity", {"NetworkID": bad, "EndpointID": EID_A}, "NetworkID"),
      ]],
    # published ports
    Case("portmap-proto-icmp", PEC, portmap(pm(Proto=1)), ("portmap: protocol 1 is not supported",)),
    Case("portmap-proto-name", PEC, portmap(pm(Proto="tcp")), ("portmap: protocol 'tcp' is not supported",)),
    Case("portmap-proto-missing", PEC, portmap(pm(Proto=...)), ("portmap: protocol None is not supported",)),
    Case("portmap-proto-bool", PEC, portmap(pm(Proto=True)), ("portmap: protocol True",)),
    Case("portmap-port-zero", PEC, portmap(pm(Port=0)), ("portmap: container port 0 is out of range",)),
    Case("portmap-port-high", PEC, portmap(pm(Port=70000)), ("container port 70000 is out of range",)),
    Case("portmap-port-string", PEC, portmap(pm(Port="80")), ("container port '80' is not a number",)),
    Case("portmap-port-float", PEC, portmap(pm(Port=80.0)), ("container port 80.0 is not a number",)),
    Case("portmap-port-bool", PEC, portmap(pm(Port=True)), ("container port True is not a number",)),
    Case("portmap-port-missing", PEC, portmap(pm(Port=...)), ("container port None is not a number",)),
    Case("portmap-hostport-negative", PEC, portmap(pm(HostPort=-1)), ("host port -1 is out of range",)),
    Case("portmap-hostport-high", PEC, portmap(pm(HostPort=65536, HostPortEnd=0)), ("host port 65536 is out of range",)),
    Case("portmap-hostport-string", PEC, portmap(pm(HostPort="8080")), ("host port '8080' is not a number",)),
    Case("portmap-range-empty", PEC, portmap(pm(HostPort=9100, HostPortEnd=9000)),
         ("host port range 9100-9000 is empty",)),
    Case("portmap-hostip-junk", PEC, portmap(pm(HostIP="1.2.3.999")), ("HostIP '1.2.3.999' is not an IP address",)),
    Case("portmap-hostip-shell", PEC, portmap(pm(HostIP="$(reboot)")), ("HostIP '$(reboot)' is not an IP address",)),
    Case("portmap-hostip-shell2", PEC, portmap(pm(HostIP="127.0.0.1;id")), ("HostIP '127.0.0.1;id'",)),
    Case("portmap-hostip-name", PEC, portmap(pm(HostIP="localhost")), ("HostIP 'localhost'",)),
    Case("portmap-hostip-int", PEC, portmap(pm(HostIP=5)), ("HostIP 5 is not a string",)),
    Case("portmap-hostip-v6-no-address", PEC, portmap(pm(HostIP="::1")),
         (f"endpoint {E_A}: cannot publish on ::1: the container has no IPv6 address",)),
    Case("portmap-not-list", PEC, portmap(nid=NID_A) | {"Options": {PORTMAP: {"Port": 80}}},
         (f"{PORTMAP}: expected a list, got dict",)),
    Case("portmap-string", PEC, portmap(nid=NID_A) | {"Options": {PORTMAP: "80:80"}},
         (f"{PORTMAP}: expected a list, got str",)),
    Case("portmap-entry-string", PEC, portmap("80:80"), ("entry '80:80' is not an object",)),
    Case("portmap-second-entry-bad", PEC, portmap(pm(), pm(Port=0, HostPort=8081, HostPortEnd=8081)),
         ("container port 0 is out of range",)),
    Case("portmap-same-port-twice", PEC, portmap(pm(), pm(Port=81)), ("host port", "8080/tcp", "already in use")),
    Case("portmap-internal-network", PEC, portmap(pm(), nid=NID_I, eid=EID_I),
         (f"network {S_I} is internal: ports cannot be published",)),
    Case("portmap-unknown-endpoint", PEC, portmap(pm(), eid=EID_NEW), (f"endpoint {E_NEW} not found on network {S_A}",)),
]


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), [n for n, k in Counter(names).items() if k > 1]


class SharedServer:
    """One pynet on a copy of the base state for the whole table: each case must leave the
    state as it found it, and if one did not (it fails then), the next case gets a new pynet."""

    def __init__(self, template, tmp_path_factory) -> None:
        self.template, self.tmp_path_factory = template, tmp_path_factory
        self.monkeypatch = pytest.MonkeyPatch()
        self.harness: Optional[Harness] = None
        self.client: Optional[TestClient] = None
        self.pristine = None
        self.restarts = 0

    async def start(self) -> None:
        directory = self.tmp_path_factory.mktemp("shared")
        path, ipr = self.template
        shutil.copyfile(path, directory / "pynet.db")
        self.harness = await build_harness(directory, self.monkeypatch, copy.deepcopy(ipr))
        self.client = TestClient(TestServer(self.harness.app()))
        await self.client.start_server()
        self.pristine = self.harness.snapshot()

    async def stop(self) -> None:
        await self.client.close()
        await self.harness.close()

    async def ready(self) -> tuple[TestClient, Harness]:
        if self.harness.snapshot() != self.pristine:
            self.restarts += 1
            await self.stop()
            await self.start()
        return self.client, self.harness


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(base_template, tmp_path_factory):
    server = SharedServer(base_template, tmp_path_factory)
    await server.start()
    yield server
    await server.stop()
    server.monkeypatch.undo()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=str)
async def test_hostile_request_is_refused(shared_server, case: Case):
    client, harness = await shared_server.ready()
    text = await refused(client, harness, case.path, case.body, case.raw)
    missing = [s for s in case.expect
               if (s not in text if isinstance(s, str) else not any(alt in text for alt in s))]
    assert not missing, f"{missing!r} not in {text!r}"


async def test_controls_succeed(client, harness):
    """The same calls with sane values pass, so the refusals above are about the hostile field."""
    await ok(client, "NetworkDriver.Join", join(SANDBOX))
    await ok(client, "NetworkDriver.Join", join("/run/docker/netns/default"))
    await ok(client, "NetworkDriver.ProgramExternalConnectivity", portmap(pm(), pm(Port=81, HostPort=0, HostPortEnd=0)))
    await ok(client, "IpamDriver.RequestPool", {"Pool": "10.7.0.0/24", "SubPool": "10.7.0.0/25"})
    await ok(client, "NetworkDriver.CreateNetwork", net(generic={
        "com.docker.network.bridge.name": "br-ok_1.x", "com.docker.network.driver.mtu": "1400",
        "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"}, aux={"printer": "10.7.0.5/24"}))
    await ok(client, "IpamDriver.RequestAddress", {"PoolID": POOL_A, "Address": "10.1.0.9"})
    await ok(client, "NetworkDriver.CreateEndpoint", ep(iface("10.1.0.9/24", mac="02:42:AC:11:00:09")))
    harness.check_consistency()
    assert "br-ok_1.x" in harness.ipr.links
    assert sorted(harness.ports.state()) == [("tcp", "0.0.0.0", 8080), ("tcp", "0.0.0.0", 40000)]


# --- generated requests -------------------------------------------------------------


class _Anything:
    def __getattr__(self, name):
        return None


KNOWN_PATHS = sorted(routes(_Anything(), _Anything()))

NIDS = [NID_A, NID_I, NID_NEW, _id("gen-n1"), _id("gen-n2"), "0123456789ab", "0123456789abcd"]
EIDS = [EID_A, EID_I, EID_NEW, _id("gen-e1"), _id("gen-e2"), _id("gen-e3"), "abcdef012345"]
# The first four are free in the base state; the last two overlap its networks.
POOLS4 = ["10.20.0.0/28", "10.21.0.0/28", "10.22.0.0/29", "10.23.0.0/30", "10.1.0.0/28", "10.0.0.0/8"]
POOLS6 = ["fd00:1::/124", "fd00:2::/126", "fd00:1::/64"]
SUBPOOLS = ["", "10.20.0.0/29", "10.20.0.8/29", "10.21.0.4/30", "fd00:1::/125", "10.9.9.0/29"]
POOL_IDS = ([f"PynetLocal/{p}" for p in POOLS4 + POOLS6]
            + ["PynetLocal/10.20.0.0/28/10.20.0.0/29", "PynetGlobal/10.22.0.0/29", POOL_A, POOL_TINY]
            + [f"PynetLocal/10.200.0.{i * 16}/28" for i in range(4)]
            + [f"PynetLocal/fd70:796e:6574::{i * 16:x}/124" for i in range(4)])
HOSTILE = ["", " ", "../../x", "a" * 65, "A" * 64, "br0;rm -rf /", "$(reboot)", "`id`", "x\ny", "\x00",
           "\ud800", "\udcff/x", "é", "\U0001f433", "%s%n", "' OR 1=1 --", "/etc/passwd", "10.1.0.5/24",
           "0" * 64, "true", "null", "{}", "[]", "-1", "1e999", "\u202e", "\r\n", "\\", "\"", "%"]


JUNK_POOL = [
    None, True, False, 0, -1, 1, 6, 2**64, -2**63, 1.5, 1e308, float("nan"), float("inf"), float("-inf"),
    *HOSTILE, "x" * 300, "x" * 20000, "\u00e9" * 500, [], {}, [None], [1, "a"], [[[[]]]], {"a": None},
    {"NetworkID": 5}, {"Pool": []}, {"": ""}, {"Proto": [6]}, [{"Proto": 6, "Port": 80}], {"\ud800": 1},
    NID_A, EID_A, POOL_A, "10.1.0.2/24", "10.1.0.2", "fd00:1::5", SANDBOX, "com.docker.network.gateway",
]
junk_generated = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
              st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF), max_size=6)),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=6)
junk = st.one_of(st.sampled_from(JUNK_POOL), st.sampled_from(JUNK_POOL), st.sampled_from(JUNK_POOL),
                 junk_generated)


def _hosts_of(cidr: str, n: int) -> list[str]:
    network = ipaddress.ip_network(cidr)
    return [str(network.network_address + i) for i in range(min(n, network.num_addresses))]


ADDRESSES = sorted({a for p in POOLS4[:4] + POOLS6[:2] for a in _hosts_of(p, 16)}
                   | {"10.1.0.255", "10.9.0.1", "192.0.2.10", "0.0.0.0", "::"})
# No IPv6 zones ("%eth0") here: the tests at the end cover them.
CIDRS = POOLS4 + POOLS6 + ["10.1.0.5/24", "10.1.0.0/33", "fd00:0::/64", "10.200.0.0/28", "10.3.0.0/24",
                           "10.9.0.0/30", "0.0.0.0/0", "::/0", "10.1.0.0/28 ", "10.1.0.0/028"]
OPTION_VALUES = {
    "com.docker.network.bridge.name": ["pn-custom", "br-x", "br0", "eth0", "lo", "a" * 16, "br0;id",
                                        "pnh" + EID_A[:12], "pn-" + NID_A[:12], "$(reboot)"],
    "com.docker.network.bridge.enable_icc": ["true", "false", "yes", ""],
    "com.docker.network.bridge.enable_ip_masquerade": ["true", "0", "nope"],
    "com.docker.network.bridge.host_binding_ipv4": ["127.0.0.1", "0.0.0.0", "::1", "x"],
    "com.docker.network.bridge.inhibit_ipv4": ["true", "false", "maybe"],
    "com.docker.network.bridge.gateway_mode_ipv6": ["nat", "routed", "bridge"],
    "com.docker.network.driver.mtu": ["1500", "1280", "1000", "abc", "67", "65536"],
    "com.docker.network.bridge.nme": ["x"],
}
SANDBOXES = ["/run/docker/netns/default", SANDBOX, "/var/run/docker/netns/0123456789ab",
             "/var/run/docker/netns/\udcff", "/etc/passwd", "/var/run/docker/netns/../../../etc/shadow",
             "relative/x", "/var/run/docker/netns/", "/var/run/docker/netns/a/b",
             "/var/run/docker/netns/$(reboot)", ""]


class Gen:
    """Strategies for plausible Docker payloads; with `dirty`, junk is mixed into every field."""

    def __init__(self, dirty: bool) -> None:
        self.dirty = dirty

    def mix(self, good, n_good: int = 4):
        return st.one_of(*([good] * n_good), junk) if self.dirty else good

    def ipam_data(self, version: int):
        """One IPv4Data/IPv6Data entry; gateway and aux mostly inside its pool."""
        def for_pool(pool: str):
            network = ipaddress.ip_network(pool)
            prefix = f"/{network.prefixlen}"
            inside = st.sampled_from([a + prefix for a in ADDRESSES])
            return st.fixed_dictionaries(
                {"AddressSpace": self.mix(st.sampled_from(["PynetLocal", ""])),
                 "Pool": self.mix(st.just(pool), 6),
                 "Gateway": self.mix(st.one_of(st.just(f"{network.network_address + 1}{prefix}"),
                                               st.just(""), inside))},
                optional={"AuxAddresses": self.mix(st.dictionaries(
                    st.sampled_from(["printer", "nas", "$(reboot)", "\ud800", ""]), self.mix(inside), max_size=2))})
        return st.one_of(*[for_pool(p) for p in (POOLS4 if version == 4 else POOLS6)])

    def generic(self):
        values = {key: self.mix(st.sampled_from(choices), 6) for key, choices in OPTION_VALUES.items()}

        @st.composite
        def build(draw):
            return {key: draw(values[key])
                    for key in draw(st.lists(st.sampled_from(sorted(OPTION_VALUES)), max_size=3))}
        return build()

    def endpoint_options(self):
        port_entry = st.fixed_dictionaries({
            "Proto": self.mix(st.sampled_from([6, 17, 132])), "IP": st.just(""),
            "Port": self.mix(st.integers(1, 65535)),
            "HostIP": self.mix(st.sampled_from(["", "", "127.0.0.1", "0.0.0.0", "::1", "::", "192.0.2.10",
                                                "192.0.2.99"])),
            "HostPort": self.mix(st.sampled_from([0, 8080, 8081, 9000])),
            "HostPortEnd": self.mix(st.sampled_from([0, 8080, 8085, 9000]))})
        return st.fixed_dictionaries({}, optional={
            PORTMAP: self.mix(st.lists(port_entry, max_size=3)),
            EXPOSED: self.mix(st.lists(st.fixed_dictionaries(
                {"Proto": self.mix(st.just(6)), "Port": self.mix(st.integers(1, 65535))}), max_size=2))})

    def specs(self) -> dict[str, dict[str, Any]]:
        """Per path: field -> strategy."""
        mix = self.mix
        nid, eid = mix(st.sampled_from(NIDS), 6), mix(st.sampled_from(EIDS), 6)
        pool_id, address = mix(st.sampled_from(POOL_IDS), 6), st.sampled_from(ADDRESSES)
        endpoint = {"NetworkID": nid, "EndpointID": eid}
        network_options = st.fixed_dictionaries({}, optional={
            "com.docker.network.enable_ipv6": mix(st.booleans()),
            "com.docker.network.internal": mix(st.booleans()),
            "com.docker.network.enable_ipv4": mix(st.booleans()),
            "com.docker.network.generic": mix(self.generic(), 8)})
        discovery = {"DiscoveryType": mix(st.integers(0, 3)), "DiscoveryData": junk}
        return {
            "/NetworkDriver.CreateNetwork": {
                "NetworkID": nid, "Options": mix(network_options, 6),
                "IPv4Data": mix(st.lists(self.ipam_data(4), max_size=2), 6),
                "IPv6Data": mix(st.lists(self.ipam_data(6), max_size=1))},
            "/NetworkDriver.DeleteNetwork": {"NetworkID": nid},
            "/NetworkDriver.CreateEndpoint": {
                **endpoint,
                "Interface": mix(st.fixed_dictionaries({
                    "Address": mix(st.one_of(st.just(""), st.builds(
                        lambda a, n: f"{a}/{n}", address, st.sampled_from([24, 28, 29, 30])))),
                    "AddressIPv6": mix(st.sampled_from(["", "fd00:1::5/124", "fd00:2::1/126"])),
                    "MacAddress": mix(st.sampled_from(["", "", "02:42:ac:11:00:02", "02:42:AC:11:00:03",
                                                       "zz:zz"]))})),
                "Options": mix(self.endpoint_options())},
            "/NetworkDriver.DeleteEndpoint": endpoint,
            "/NetworkDriver.EndpointOperInfo": endpoint,
            "/NetworkDriver.Join": {**endpoint, "SandboxKey": mix(st.sampled_from(SANDBOXES)),
                                    "Options": mix(self.endpoint_options())},
            "/NetworkDriver.Leave": endpoint,
            "/NetworkDriver.ProgramExternalConnectivity": {**endpoint, "Options": mix(self.endpoint_options(), 6)},
            "/NetworkDriver.RevokeExternalConnectivity": endpoint,
            "/NetworkDriver.DiscoverNew": discovery,
            "/NetworkDriver.DiscoverDelete": discovery,
            "/IpamDriver.RequestPool": {
                "AddressSpace": mix(st.sampled_from(["", "", "PynetLocal", "PynetGlobal", "Other"])),
                "Pool": mix(st.one_of(st.just(""), st.sampled_from(CIDRS))),
                "SubPool": mix(st.sampled_from(SUBPOOLS)),
                "Options": mix(st.sampled_from([None, {}, {"com.docker.network.ipam.serial": "true"},
                                                {"x": "y"}])),
                "V6": mix(st.booleans())},
            "/IpamDriver.ReleasePool": {"PoolID": pool_id},
            "/IpamDriver.RequestAddress": {
                "PoolID": pool_id, "Address": mix(st.one_of(st.just(""), address)),
                "Options": mix(st.sampled_from([None, {}, {"RequestAddressType": "com.docker.network.gateway"}]))},
            "/IpamDriver.ReleaseAddress": {"PoolID": pool_id, "Address": mix(address)},
        }


def valid_specs() -> dict[str, dict[str, Any]]:
    """Requests Docker could send: well-formed by construction; whether they succeed
    depends on the state (unknown IDs, overlaps, a full pool...)."""
    nid, eid, pool_id = st.sampled_from(NIDS), st.sampled_from(EIDS), st.sampled_from(POOL_IDS)
    endpoint = {"NetworkID": nid, "EndpointID": eid}

    def ipam_data(pool: str):
        network = ipaddress.ip_network(pool)
        prefix = f"/{network.prefixlen}"
        hosts = [h + prefix for h in _hosts_of(pool, 8)[2:]]
        return st.fixed_dictionaries(
            {"AddressSpace": st.just("PynetLocal"), "Pool": st.just(pool),
             "Gateway": st.sampled_from([f"{network.network_address + 1}{prefix}", ""])},
            optional={"AuxAddresses": st.dictionaries(st.sampled_from(["printer", "nas"]),
                                                      st.sampled_from(hosts), max_size=1)})

    valid_options = {"com.docker.network.bridge.enable_icc": ["true", "false"],
                     "com.docker.network.bridge.enable_ip_masquerade": ["true", "false"],
                     "com.docker.network.bridge.host_binding_ipv4": ["127.0.0.1", "0.0.0.0"],
                     "com.docker.network.driver.mtu": ["1500", "9000"],
                     "com.docker.network.bridge.name": ["br-gen1", "br-gen2"]}
    generic = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in valid_options.items()})
    v4_only = st.fixed_dictionaries({
        "NetworkID": nid,
        "Options": st.fixed_dictionaries({"com.docker.network.enable_ipv6": st.just(False),
                                          "com.docker.network.generic": generic},
                                         optional={"com.docker.network.internal": st.booleans()}),
        "IPv4Data": st.one_of(*[ipam_data(p) for p in POOLS4]).map(lambda d: [d]),
        "IPv6Data": st.just([])})
    dual = st.fixed_dictionaries({
        "NetworkID": nid,
        "Options": st.just({"com.docker.network.enable_ipv6": True, "com.docker.network.generic": {}}),
        "IPv4Data": st.one_of(*[ipam_data(p) for p in POOLS4]).map(lambda d: [d]),
        "IPv6Data": st.one_of(*[ipam_data(p) for p in POOLS6]).map(lambda d: [d])})
    port_entry = st.fixed_dictionaries({
        "Proto": st.sampled_from([6, 17]), "IP": st.just(""), "Port": st.integers(1, 65535),
        "HostIP": st.sampled_from(["", "127.0.0.1", "0.0.0.0"]),
        "HostPort": st.sampled_from([0, 8080, 8081]), "HostPortEnd": st.just(0)})
    options = st.fixed_dictionaries({PORTMAP: st.lists(port_entry, max_size=2), EXPOSED: st.just([])})
    return {
        "/NetworkDriver.CreateNetwork": {"": st.one_of(v4_only, v4_only, dual)},  # the whole body
        "/NetworkDriver.DeleteNetwork": {"NetworkID": nid},
        "/NetworkDriver.CreateEndpoint": {
            **endpoint,
            "Interface": st.fixed_dictionaries({
                "Address": st.one_of(st.just(""), st.sampled_from(
                    [f"{h}/{ipaddress.ip_network(p).prefixlen}" for p in POOLS4 for h in _hosts_of(p, 6)[2:]])),
                "AddressIPv6": st.sampled_from(["", "fd00:1::5/124"]),
                "MacAddress": st.sampled_from(["", "02:42:ac:11:00:02"])}),
            "Options": options},
        "/NetworkDriver.DeleteEndpoint": endpoint,
        "/NetworkDriver.EndpointOperInfo": endpoint,
        "/NetworkDriver.Join": {**endpoint, "SandboxKey": st.sampled_from(SANDBOXES[:3]), "Options": options},
        "/NetworkDriver.Leave": endpoint,
        "/NetworkDriver.ProgramExternalConnectivity": {**endpoint, "Options": options},
        "/NetworkDriver.RevokeExternalConnectivity": endpoint,
        "/NetworkDriver.DiscoverNew": {"DiscoveryType": st.integers(0, 3)},
        "/NetworkDriver.DiscoverDelete": {"DiscoveryType": st.integers(0, 3)},
        "/IpamDriver.RequestPool": {"": st.one_of(
            st.fixed_dictionaries({"AddressSpace": st.just("PynetLocal"), "Pool": st.sampled_from(POOLS4 + [""]),
                                   "SubPool": st.just(""), "Options": st.just(None), "V6": st.just(False)}),
            st.fixed_dictionaries({"AddressSpace": st.just("PynetLocal"), "Pool": st.sampled_from(POOLS6 + [""]),
                                   "SubPool": st.just(""), "Options": st.just({}), "V6": st.just(True)}))},
        "/IpamDriver.ReleasePool": {"PoolID": pool_id},
        "/IpamDriver.RequestAddress": {
            "PoolID": pool_id, "Address": st.one_of(st.just(""), st.sampled_from(ADDRESSES)),
            "Options": st.sampled_from([None, {"RequestAddressType": "com.docker.network.gateway"}])},
        "/IpamDriver.ReleaseAddress": {"PoolID": pool_id, "Address": st.sampled_from(ADDRESSES)},
    }


# How much hostility a payload gets: valid by construction, plausible values (some
# refused), or junk mixed into every field.
SPECS = {"valid": valid_specs(), "plausible": Gen(dirty=False).specs(), "dirty": Gen(dirty=True).specs()}
FLAVOURS = ["valid"] * 4 + ["plausible"] * 3 + ["dirty"] * 4


@dataclass
class Req:
    method: str
    path: str
    kind: str
    body: bytes
    payload: Any = None

    def __repr__(self) -> str:
        shown = self.body if len(self.body) <= 600 else self.body[:600] + b"...(%d bytes)" % len(self.body)
        return f"{self.method} {self.path} [{self.kind}] {shown!r}"


def _payload_strategy(spec: dict) -> st.SearchStrategy:
    return spec[""] if "" in spec else st.fixed_dictionaries(spec)


# Per flavour and path: the strategy of a whole payload (built once: strategies made
# inside a draw cost hypothesis a validation each time).
PAYLOADS = {flavour: {path: _payload_strategy(spec) for path, spec in specs.items()}
            for flavour, specs in SPECS.items()}
_EMPTY_PAYLOAD = st.just({})
_FLAVOUR = st.sampled_from(FLAVOURS)
_MUTATE = st.integers(0, 7)
_EXTRA_KEY = st.sampled_from(["", "NewField", "networkid", "\ud800"])


@st.composite
def payload_for(draw, path: str):
    flavour = draw(_FLAVOUR)
    body = draw(PAYLOADS[flavour].get(path, _EMPTY_PAYLOAD))
    if flavour == "dirty":
        body = dict(body)
        if body and draw(_MUTATE) == 0:
            del body[draw(st.sampled_from(sorted(body)))]
        if draw(_MUTATE) == 0:
            body[draw(_EXTRA_KEY)] = draw(junk)
    return body


UNKNOWN_PATHS = ["/", "/Plugin.Activate/x", "/IpamDriver.RequestPool.", "/NetworkDriver", "/plugin.activate",
                 "/NetworkDriver.Nope", "/IpamDriver.RequestAddressx", "/x" * 40, "/%00", "/..%2f..%2fetc",
                 "/a%20b", "/%0d"]  # %0a: test_unknown_path_with_newline_gets_a_json_404
_UNKNOWN_PATH = st.one_of(st.sampled_from(UNKNOWN_PATHS), st.sampled_from([p.lower() for p in KNOWN_PATHS]),
                          st.sampled_from([p + "x" for p in KNOWN_PATHS]))
_BODYLESS_PATH = st.sampled_from([p for p in KNOWN_PATHS if p not in SPECS["valid"]])
_CALL_PATH = st.sampled_from(sorted(SPECS["valid"]))
_PATH_CHOICE = st.integers(0, 39)
_OTHER_METHOD = st.sampled_from(["GET", "PUT", "DELETE", "PATCH"])
_KIND = st.sampled_from(["json"] * 20 + ["junk-json", "bytes", "truncated", "empty", "deep", "utf8"])
_PAYLOAD = {path: payload_for(path) for path in KNOWN_PATHS}
_BYTES = st.binary(max_size=300)
_BLANK = st.sampled_from([b"", b" ", b"\n\t "])
_DEPTH = st.sampled_from([1, 10, 100, 500, 900, 990, 1000, 1100, 5000, 100_000])
_NESTING = st.sampled_from([("[", "]"), ('{"a":', "}")])
_CUT = st.floats(0, 1)


@st.composite
def requests_(draw) -> Req:
    which = draw(_PATH_CHOICE)
    if which == 20:  # a path nobody serves
        path = draw(_UNKNOWN_PATH)
    elif which in (19, 21):
        path = draw(_BODYLESS_PATH)
    else:
        path = draw(_CALL_PATH)
    method = "POST" if draw(_PATH_CHOICE) != 20 else draw(_OTHER_METHOD)
    kind = draw(_KIND)
    payload = None
    payloads = _PAYLOAD.get(path, _PAYLOAD["/Plugin.Activate"])
    if kind == "json":
        payload = draw(payloads)
        body = json.dumps(payload).encode()
    elif kind == "utf8":  # raw UTF-8, lone surrogates encoded as they are (not valid UTF-8)
        payload = draw(payloads)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    elif kind == "junk-json":
        payload = draw(junk)
        body = json.dumps(payload).encode()
    elif kind == "bytes":
        body = draw(_BYTES)
    elif kind == "truncated":
        whole = json.dumps(draw(payloads)).encode()
        body = whole[:int(draw(_CUT) * max(0, len(whole) - 1))]
    elif kind == "empty":
        body = draw(_BLANK)
    else:  # deep nesting
        n = draw(_DEPTH)
        opener, closer = draw(_NESTING)
        body = (opener * n + ("1" if opener != "[" else "") + closer * n).encode()
    return Req(method, path, kind, body, payload)


def docker_calls(nid: str, eid: str, pool: str, internal: bool, ports: bool) -> list[tuple[str, dict]]:
    """What Docker sends for `network create`, `run -p`, `stop`, `network rm`, in order."""
    network = ipaddress.ip_network(pool)
    prefix = f"/{network.prefixlen}"
    gateway, ip = str(network.network_address + 1), str(network.network_address + 3)
    pool_id = f"PynetLocal/{pool}"
    endpoint = {"NetworkID": nid, "EndpointID": eid}
    options = {EXPOSED: [{"Proto": 6, "Port": 80}] if ports else [],
               PORTMAP: [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 0, "HostPortEnd": 0}]
               if ports else []}
    net_options = {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}}
    if internal:
        net_options["com.docker.network.internal"] = True
    return [
        ("/IpamDriver.RequestPool", {"AddressSpace": "PynetLocal", "Pool": pool, "SubPool": "", "Options": {},
                                     "V6": False}),
        ("/IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "",
                                        "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
        ("/NetworkDriver.CreateNetwork", {"NetworkID": nid, "Options": net_options, "IPv4Data": [
            {"AddressSpace": "PynetLocal", "Pool": pool, "Gateway": gateway + prefix}], "IPv6Data": []}),
        ("/IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": ip, "Options": None}),
        ("/NetworkDriver.CreateEndpoint", {**endpoint, "Interface": {"Address": ip + prefix, "AddressIPv6": "",
                                                                     "MacAddress": ""}, "Options": options}),
        ("/NetworkDriver.Join", {**endpoint, "SandboxKey": f"/var/run/docker/netns/{eid[:12]}",
                                 "Options": options}),
        ("/NetworkDriver.ProgramExternalConnectivity", {**endpoint, "Options": options}),
        ("/NetworkDriver.EndpointOperInfo", endpoint),
        ("/NetworkDriver.RevokeExternalConnectivity", endpoint),
        ("/NetworkDriver.Leave", endpoint),
        ("/NetworkDriver.DeleteEndpoint", endpoint),
        ("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": ip}),
        ("/IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": gateway}),
        ("/IpamDriver.ReleasePool", {"PoolID": pool_id}),
        ("/NetworkDriver.DeleteNetwork", {"NetworkID": nid}),
    ]


_SCENARIO_LEN = len(docker_calls(NID_A, EID_A, POOLS4[0], False, False))
_SCENARIO_ARGS = st.tuples(st.sampled_from(NIDS), st.sampled_from(EIDS), st.sampled_from(POOLS4[:4]),
                           st.booleans(), st.booleans())
# Mostly from the start (a network and an endpoint get built), sometimes a later part
# (on whatever earlier examples left).
_SPAN = st.tuples(st.sampled_from([0] * 8 + list(range(1, _SCENARIO_LEN))), st.integers(1, _SCENARIO_LEN))
_NOISE = st.lists(requests_(), min_size=6, max_size=16)


@st.composite
def batches(draw) -> list[Req]:
    """A run of Docker's own call sequence (part of one), with generated requests
    between its calls: so that hostile requests also meet networks with endpoints,
    joined sandboxes and published ports."""
    nid, eid, pool, internal, ports = draw(_SCENARIO_ARGS)
    start, length = draw(_SPAN)
    steps = [Req("POST", path, "docker", json.dumps(body).encode(), body)
             for path, body in docker_calls(nid, eid, pool, internal, ports)[start:start + length]]
    noise = draw(_NOISE)
    batch = []
    for req in noise:
        if steps and draw(st.booleans()):
            batch.append(steps.pop(0))
        batch.append(req)
    return batch + steps


async def send(client, req: Req) -> tuple[int, Any, str]:
    resp = await client.request(req.method, req.path, data=req.body, headers=ACCEPT,
                                skip_auto_headers=["Content-Type"])
    text = await resp.text()
    assert resp.headers.get("Content-Type", "").split(";")[0] == CONTENT_TYPE, (req, resp.headers)
    return resp.status, json.loads(text), text


async def run_batch(h: Harness, client, batch: list[Req], stats: Counter) -> None:
    current = h.snapshot()
    for req in batch:
        status, reply, text = await send(client, req)
        stats["requests"] += 1
        stats["docker sequence requests" if req.kind == "docker" else "random requests"] += 1
        stats[f"status {status}"] += 1
        known = req.method == "POST" and req.path in KNOWN_PATHS
        assert status in (200, 404, 500), (req, status, text)
        assert isinstance(reply, dict), (req, text)
        if not known:
            assert status == 404 and isinstance(reply.get("Err"), str), (req, status, text)
        elif status == 200:
            stats[f"200 {req.path}"] += 1
            assert "Err" not in reply and "Error" not in reply, (req, text)
        else:
            assert status == 500, (req, status, text)
            assert set(reply) == {"Err"} and isinstance(reply["Err"], str) and reply["Err"], (req, text)
            assert INTERNAL not in reply["Err"], f"unhandled exception for {req!r}: {reply['Err']}"
        after = h.snapshot()
        if status != 200:
            assert after == current, f"refused request changed the state: {req!r}: {text}"
        else:
            h.check_consistency(after["db"])
        current = after
    status, reply, _ = await send(client, Req("POST", "/Plugin.Activate", "empty", b""))
    assert (status, reply) == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})


@contextlib.contextmanager
def quiet_logs():
    logger = logging.getLogger("pynet")
    level = logger.level
    logger.setLevel(logging.ERROR)  # unexpected exceptions are still logged (log.exception)
    try:
        yield
    finally:
        logger.setLevel(level)


GENERATED_MIN = 10_000


@pytest.mark.slow
def test_generated_requests(tmp_path, monkeypatch):
    """More than GENERATED_MIN generated requests in sequences, against one server whose
    state builds up: every reply is 200, 404 or 500 as it should be, no refusal changes
    anything, and memory, database and kernel agree after every success."""
    stats: Counter = Counter()
    loop = asyncio.new_event_loop()
    started = time.monotonic()
    try:
        h = loop.run_until_complete(build_harness(tmp_path, monkeypatch))

        async def start():
            cl = TestClient(TestServer(h.app()))
            await cl.start_server()
            return cl

        client = loop.run_until_complete(start())
        try:
            loop.run_until_complete(make_base_state(client))

            @settings(max_examples=360, deadline=None, database=None, print_blob=True,
                      suppress_health_check=list(HealthCheck))
            @given(batches())
            def run(batch):
                stats["examples"] += 1
                loop.run_until_complete(run_batch(h, client, batch, stats))

            with quiet_logs():
                # Hypothesis runs of 360 examples (about 5,500 requests each), on the same
                # server, until GENERATED_MIN requests have been sent.
                while stats["requests"] < GENERATED_MIN and stats["hypothesis runs"] < 10:
                    stats["hypothesis runs"] += 1
                    run()
        finally:
            loop.run_until_complete(client.close())
            loop.run_until_complete(h.close())
    finally:
        loop.close()
    took = time.monotonic() - started
    print(f"\ngenerated requests: {stats['requests']} in {took:.1f} s; "
          + ", ".join(f"{k}: {v}" for k, v in sorted(stats.items()) if k != "requests"))
    assert stats["requests"] >= GENERATED_MIN, stats
    # The generator reaches past validation: every kind of call succeeded sometimes.
    for path in ("/NetworkDriver.CreateNetwork", "/NetworkDriver.CreateEndpoint", "/NetworkDriver.Join",
                 "/NetworkDriver.ProgramExternalConnectivity", "/NetworkDriver.DeleteNetwork",
                 "/IpamDriver.RequestPool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress"):
        assert stats[f"200 {path}"] > 0, (path, stats)


# --- bugs found, pinned ----------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000])
async def test_deeply_nested_body_is_a_clean_refusal(client, harness, raw):
    text = await refused(client, harness, CN, raw=raw)
    assert "body" in text


@pytest.mark.parametrize("proto", [[6], {"tcp": 6}])
async def test_portmap_proto_of_unhashable_type(client, harness, proto):
    text = await refused(client, harness, PEC, portmap(pm(Proto=proto)))
    assert "protocol" in text


async def test_sandbox_key_with_lone_surrogate(client, harness):
    text = await refused(client, harness, JOIN, join("/var/run/docker/netns/\udcff"))
    assert "SandboxKey" in text


async def test_ipv6_subnet_with_zone_is_refused(client, harness):
    text = await refused(client, harness, RP, {"Pool": "fd00::%eth0/64", "V6": True})
    assert "fd00::%eth0/64" in text


async def test_ipv6_pool_with_zone_never_reaches_the_firewall(client, harness):
    text = await refused(client, harness, CN, net6("fd00:7::%lo\n-A INPUT -j ACCEPT/64"))
    assert "IPv6Data.Pool" in text


async def test_address_with_zone_is_refused(client, harness):
    await ok(client, "IpamDriver.RequestPool", {"Pool": "fd00:1::/124", "V6": True})
    text = await refused(client, harness, RA, {"PoolID": "PynetLocal/fd00:1::/124", "Address": "fd00:1::5%eth0"})
    assert "fd00:1::5%eth0" in text


async def test_unknown_path_with_newline_gets_a_json_404(client):
    resp = await client.post("/NetworkDriver.CreateNetwork%0A", data=b"{}", headers=ACCEPT,
                             skip_auto_headers=["Content-Type"])
    assert resp.status == 404
    assert resp.headers["Content-Type"].split(";")[0] == CONTENT_TYPE
    assert "Err" in json.loads(await resp.text())
