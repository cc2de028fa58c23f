"""The HTTP side: Docker's transport rules, request parsing and error mapping.

The app is driver.server.make_app with a real IpamService (state database in
tmp_path) and a fake network driver that records calls and can be told to fail.
"""

import asyncio
import json

import pytest
from aiohttp import web

from driver import wire
from driver.db import Database
from driver.errors import Conflict
from driver.contract import NetworkApi
from driver.server import CONTENT_TYPE, MAX_BODY, make_app
from ipam.store import sqlite as ipam_store
from ipam.pools import parse_default_pools
from ipam.service import IpamService

NID = "1ed2" + "a" * 60
EID = "b8b9" + "c" * 60
ACCEPT = {"Accept": "application/vnd.docker.plugins.v1.2+json"}
PORTS_OPTIONS = {"com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
                 "com.docker.network.portmap": []}


class FakeDriver:
    """A NetworkApi with canned answers, recording its calls."""

    def __init__(self):
        self.calls = []
        self.fail = {}  # method name -> exception to raise

    def _record(self, name, req):
        self.calls.append((name, req))
        if name in self.fail:
            raise self.fail[name]

    async def capabilities(self):
        return wire.CapabilitiesResponse(Scope="local", ConnectivityScope="local")

    async def create_network(self, req):
        self._record("create_network", req)
        return wire.Empty()

    async def delete_network(self, req):
        self._record("delete_network", req)
        return wire.Empty()

    async def create_endpoint(self, req):
        self._record("create_endpoint", req)
        if req.Interface and req.Interface.MacAddress:
            return wire.CreateEndpointResponse()
        return wire.CreateEndpointResponse(Interface=wire.InterfaceReply(MacAddress="02:00:00:00:00:01"))

    async def delete_endpoint(self, req):
        self._record("delete_endpoint", req)
        return wire.Empty()

    async def oper_info(self, req):
        self._record("oper_info", req)
        return wire.OperInfoResponse(Value={"HostInterface": "pnh" + req.EndpointID[:12]})

    async def join(self, req):
        self._record("join", req)
        return wire.JoinResponse(InterfaceName=wire.InterfaceName(SrcName="pnc" + req.EndpointID[:12],
                                                                  DstPrefix="eth"),
                                 Gateway="10.1.0.1")

    async def leave(self, req):
        self._record("leave", req)
        return wire.Empty()

    async def program_external_connectivity(self, req):
        self._record("program_external_connectivity", req)
        return wire.Empty()

    async def revoke_external_connectivity(self, req):
        self._record("revoke_external_connectivity", req)
        return wire.Empty()

    async def discover_new(self, req):
        self._record("discover_new", req)
        return wire.Empty()

    async def discover_delete(self, req):
        self._record("discover_delete", req)
        return wire.Empty()


def _typed(driver: FakeDriver) -> NetworkApi:
    return driver  # mypy checks the fake against the server's contract


@pytest.fixture
async def ipam(tmp_path):
    db = Database(str(tmp_path / "pynet.db"))
    await db.open([ipam_store.SCHEMA])
    service = IpamService(ipam_store.SqliteIpamStore(db), parse_default_pools("10.200.0.0/16/24,fd70:796e:6574::/48/64"))
    await service.load()
    yield service
    await db.close()


@pytest.fixture
def driver():
    return FakeDriver()


@pytest.fixture
async def client(aiohttp_client, driver, ipam):
    return await aiohttp_client(make_app(driver, ipam))


async def call(client, method, body=None, raw=None, status=200):
    """POST the way Docker does: no Content-Type, the plugin Accept header."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    resp = await client.post(f"/{method}", data=data, headers=ACCEPT,
                             skip_auto_headers=["Content-Type"])
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].split(";")[0] == CONTENT_TYPE
    return json.loads(await resp.text())


async def err(client, method, body=None, raw=None):
    reply = await call(client, method, body, raw, status=500)
    assert set(reply) == {"Err"}
    return reply["Err"]


# --- handshake -----------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, b"", b"  \n"])
async def test_activate_with_empty_body(client, raw):
    assert await call(client, "Plugin.Activate", raw=raw) == {"Implements": ["NetworkDriver", "IpamDriver"]}


async def test_activate_ignores_a_body(client):
    reply = await call(client, "Plugin.Activate", raw=b"not json")
    assert reply == {"Implements": ["NetworkDriver", "IpamDriver"]}


async def test_request_carries_no_content_type(aiohttp_client, driver, ipam):
    """Guard for the helpers: the requests really arrive without a Content-Type."""
    seen = []

    @web.middleware
    async def spy(request, handler):
        seen.append(request.headers.get("Content-Type"))
        return await handler(request)

    app = make_app(driver, ipam)
    app.middlewares.append(spy)
    cl = await aiohttp_client(app)
    await call(cl, "Plugin.Activate")
    await call(cl, "Plugin.Activate", raw=b"")
    await call(cl, "NetworkDriver.CreateNetwork", {"NetworkID": NID})
    assert seen == [None, None, None]


async def test_network_capabilities(client):
    assert await call(client, "NetworkDriver.GetCapabilities") == {"Scope": "local",
                                                                   "ConnectivityScope": "local"}


async def test_ipam_capabilities_and_spaces(client):
    assert await call(client, "IpamDriver.GetCapabilities") == {"RequiresMACAddress": False,
                                                                "RequiresRequestReplay": False}
    assert await call(client, "IpamDriver.GetDefaultAddressSpaces") == {
        "LocalDefaultAddressSpace": "PynetLocal", "GlobalDefaultAddressSpace": "PynetGlobal"}


@pytest.mark.parametrize("path", ["/NetworkDriver.Nope", "/plugin.activate", "/", "/Plugin.Activate/x",
                                  "/IpamDriver.RequestPool.", "/NetworkDriver"])
async def test_unknown_path_is_404(client, path):
    resp = await client.post(path, headers=ACCEPT)
    assert resp.status == 404
    assert "Err" in json.loads(await resp.text())


async def test_get_is_404(client):
    resp = await client.get("/Plugin.Activate")
    assert resp.status == 404


# --- request parsing -------------------------------------------------------------


@pytest.mark.parametrize("raw,text", [
    (b"{", "not valid JSON"),
    (b'{"NetworkID": "' + b"a" * 64 + b'",}', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b'"x"', "must be a JSON object"),
])
async def test_malformed_body(client, driver, raw, text):
    assert text in await err(client, "NetworkDriver.CreateNetwork", raw=raw)
    assert driver.calls == []


@pytest.mark.parametrize("method,body,field", [
    ("NetworkDriver.CreateNetwork", {}, "NetworkID"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": 5}, "NetworkID"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": "../../etc"}, "NetworkID"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": "A" * 64}, "NetworkID"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Gateway": "10.1.0.1/24"}]},
     "IPv4Data.0.Pool"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": {"Pool": "10.1.0.0/24"}}, "IPv4Data"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NID, "Options": []}, "Options"),
    ("NetworkDriver.CreateEndpoint", {"NetworkID": NID}, "EndpointID"),
    ("NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": 1}},
     "Interface.Address"),
    ("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID}, "SandboxKey"),
    ("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID, "SandboxKey": None}, "SandboxKey"),
    ("NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": [EID]}, "EndpointID"),
    ("NetworkDriver.DeleteNetwork", {"NetworkID": True}, "NetworkID"),
    ("IpamDriver.RequestPool", {"Pool": "10.1.0.0/24", "V6": "false"}, "V6"),
    ("IpamDriver.RequestPool", {"Pool": 10}, "Pool"),
    ("IpamDriver.RequestPool", {"Options": {"a": 1}}, "Options.a"),
    ("IpamDriver.RequestAddress", {"Address": "10.1.0.2"}, "PoolID"),
    ("IpamDriver.ReleaseAddress", {"PoolID": "x"}, "Address"),
    ("IpamDriver.ReleasePool", {}, "PoolID"),
])
async def test_bad_fields_are_named(client, driver, method, body, field):
    text = await err(client, method, body)
    assert f"field {field}" in text
    assert driver.calls == []


async def test_extra_fields_tolerated(client, driver):
    await call(client, "NetworkDriver.DeleteNetwork", {"NetworkID": NID, "NewField": {"x": 1}})
    assert driver.calls[0][0] == "delete_network"


async def test_body_over_one_mib_refused(client, driver):
    body = json.dumps({"NetworkID": NID, "Options": {"x": "y" * (MAX_BODY + 10)}}).encode()
    await err(client, "NetworkDriver.CreateNetwork", raw=body)
    assert driver.calls == []
    # and the server is still there
    assert await call(client, "NetworkDriver.GetCapabilities")


async def post_in_pieces(client, method, body, pieces):
    """POST with a Content-Length, the body written in `pieces` parts with pauses
    in between, as a socket may deliver it."""

    async def chunks():
        step = -(-len(body) // pieces)
        for i in range(0, len(body), step):
            yield body[i:i + step]
            await asyncio.sleep(0.01)

    resp = await client.post(f"/{method}", data=chunks(),
                             headers={**ACCEPT, "Content-Length": str(len(body))},
                             skip_auto_headers=["Content-Type"])
    return resp.status, json.loads(await resp.text())


async def test_body_arriving_in_pieces_is_read_whole(client, driver):
    body = json.dumps({"NetworkID": NID, "EndpointID": EID, "Options": PORTS_OPTIONS}).encode()
    status, reply = await post_in_pieces(client, "NetworkDriver.ProgramExternalConnectivity", body, 2)
    assert (status, reply) == (200, {}), reply


async def test_body_over_one_mib_error_says_so(client):
    body = json.dumps({"NetworkID": NID, "Options": {"x": "y" * (MAX_BODY + 10)}}).encode()
    status, reply = await post_in_pieces(client, "NetworkDriver.CreateNetwork", body, 20)
    assert status == 500
    assert "larger than" in reply["Err"], reply


async def test_large_valid_body_under_the_limit_accepted(client, driver):
    portmap = [{"Proto": 6, "IP": "", "Port": p, "HostIP": "", "HostPort": p, "HostPortEnd": p}
               for p in range(1, 3000)]
    body = json.dumps({"NetworkID": NID, "EndpointID": EID,
                       "Options": {"com.docker.network.portmap": portmap}}).encode()
    assert 200 * 1024 < len(body) < MAX_BODY
    status, reply = await post_in_pieces(client, "NetworkDriver.ProgramExternalConnectivity", body, 4)
    assert (status, reply) == (200, {}), reply


# --- replies and errors ----------------------------------------------------------


async def test_create_network_reaches_the_driver(client, driver):
    body = {"NetworkID": NID,
            "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "PynetLocal", "Pool": "10.1.0.0/24",
                          "Gateway": "10.1.0.1/24", "AuxAddresses": {"h": "10.1.0.5/24"}}],
            "IPv6Data": []}
    assert await call(client, "NetworkDriver.CreateNetwork", body) == {}
    (name, req), = driver.calls
    assert name == "create_network"
    assert isinstance(req, wire.CreateNetworkRequest)
    assert req.IPv4Data and req.IPv4Data[0].AuxAddresses == {"h": "10.1.0.5/24"}


async def test_endpoint_calls(client, driver):
    iface = {"Address": "10.1.0.2/24", "AddressIPv6": "", "MacAddress": ""}
    reply = await call(client, "NetworkDriver.CreateEndpoint",
                       {"NetworkID": NID, "EndpointID": EID, "Interface": iface, "Options": {}})
    assert reply == {"Interface": {"MacAddress": "02:00:00:00:00:01"}}  # None fields left out
    reply = await call(client, "NetworkDriver.CreateEndpoint",
                       {"NetworkID": NID, "EndpointID": EID,
                        "Interface": dict(iface, MacAddress="02:aa:bb:cc:dd:ee")})
    assert reply == {}
    assert (await call(client, "NetworkDriver.EndpointOperInfo", {"NetworkID": NID, "EndpointID": EID})
            == {"Value": {"HostInterface": "pnh" + EID[:12]}})
    reply = await call(client, "NetworkDriver.Join", {
        "NetworkID": NID, "EndpointID": EID, "SandboxKey": "/var/run/docker/netns/dea40fc6f528",
        "Options": {"com.docker.network.portmap": []}})
    assert reply["InterfaceName"] == {"SrcName": "pnc" + EID[:12], "DstPrefix": "eth"}
    assert reply["Gateway"] == "10.1.0.1"
    for method in ("ProgramExternalConnectivity", "RevokeExternalConnectivity", "Leave", "DeleteEndpoint"):
        assert await call(client, f"NetworkDriver.{method}", {"NetworkID": NID, "EndpointID": EID}) == {}
    assert await call(client, "NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == {}
    assert [c[0] for c in driver.calls] == [
        "create_endpoint", "create_endpoint", "oper_info", "join", "program_external_connectivity",
        "revoke_external_connectivity", "leave", "delete_endpoint", "delete_network"]


@pytest.mark.parametrize("method", ["NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete"])
async def test_discovery_is_accepted(client, method):
    assert await call(client, method) == {}
    assert await call(client, method, {"DiscoveryType": 1, "DiscoveryData": {"x": 1}}) == {}


async def test_driver_error_text_is_passed_on(client, driver):
    driver.fail["create_network"] = Conflict("network 1ed2aaaaaaaa already exists with another definition")
    assert await err(client, "NetworkDriver.CreateNetwork", {"NetworkID": NID}) == \
        "network 1ed2aaaaaaaa already exists with another definition"


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyError("k"), ZeroDivisionError("zero"),
                                 asyncio.TimeoutError()])
async def test_unexpected_exception_is_internal_error(client, driver, exc):
    driver.fail["create_network"] = exc
    text = await err(client, "NetworkDriver.CreateNetwork", {"NetworkID": NID})
    assert text.startswith("pynet internal error in NetworkDriver.CreateNetwork: ")
    assert type(exc).__name__ in text
    # the server keeps serving, also the call that failed
    del driver.fail["create_network"]
    assert await call(client, "NetworkDriver.CreateNetwork", {"NetworkID": NID}) == {}
    assert await call(client, "Plugin.Activate")


async def test_unexpected_exception_in_a_sync_handler(client, driver):
    driver.fail["oper_info"] = ValueError("bad state")
    text = await err(client, "NetworkDriver.EndpointOperInfo", {"NetworkID": NID, "EndpointID": EID})
    assert text == "pynet internal error in NetworkDriver.EndpointOperInfo: ValueError: bad state"


async def test_concurrent_calls(client):
    """Docker calls over several connections at once."""
    replies = await asyncio.gather(*(call(client, "NetworkDriver.EndpointOperInfo",
                                          {"NetworkID": NID, "EndpointID": f"{i:012x}" + "0" * 52})
                                     for i in range(40)))
    assert [r["Value"]["HostInterface"] for r in replies] == [f"pnh{i:012x}" for i in range(40)]


# --- the IPAM over HTTP ------------------------------------------------------------


async def test_ipam_flow(client):
    pool = await call(client, "IpamDriver.RequestPool",
                      {"AddressSpace": "PynetLocal", "Pool": "10.1.0.0/24", "SubPool": "",
                       "Options": None, "V6": False})
    assert pool == {"PoolID": "PynetLocal/10.1.0.0/24", "Pool": "10.1.0.0/24", "Data": {}}
    gw = await call(client, "IpamDriver.RequestAddress",
                    {"PoolID": pool["PoolID"], "Address": "",
                     "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    assert gw == {"Address": "10.1.0.1/24", "Data": {}}
    addr = await call(client, "IpamDriver.RequestAddress",
                      {"PoolID": pool["PoolID"], "Address": "", "Options": None})
    assert addr["Address"] == "10.1.0.2/24"
    # errors are refusals with the IPAM's own text
    text = await err(client, "IpamDriver.RequestAddress",
                     {"PoolID": pool["PoolID"], "Address": "10.1.0.1", "Options": None})
    assert text == "address 10.1.0.1 is already in use by the gateway (pool 10.1.0.0/24)"
    assert "overlaps" in await err(client, "IpamDriver.RequestPool", {"Pool": "10.1.0.0/16"})
    assert "did you mean 10.2.0.0/24" in await err(client, "IpamDriver.RequestPool", {"Pool": "10.2.0.1/24"})
    assert "unknown --ipam-opt" in await err(client, "IpamDriver.RequestPool",
                                             {"Pool": "10.3.0.0/24", "Options": {"x": "y"}})
    # releases, twice
    for _ in range(2):
        assert await call(client, "IpamDriver.ReleaseAddress",
                          {"PoolID": pool["PoolID"], "Address": "10.1.0.2"}) == {}
        assert await call(client, "IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]}) == {}
    auto = await call(client, "IpamDriver.RequestPool", {"AddressSpace": "PynetLocal", "V6": True})
    assert auto["Pool"] == "fd70:796e:6574::/64"
