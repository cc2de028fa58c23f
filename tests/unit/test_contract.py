"""The server is typed against two contracts, and the IPAM against its
store's; these check that what stands behind them (the bridge driver, the
IPAM service, the tests' fake, the SQLite store) offers every call, async,
with the same parameters. mypy checks the types."""

import inspect

import pytest

from driver.contract import NetworkApi
from driver.bridge import BridgeMode
from driver.bridge.api import BridgeNetworks
from driver.server import routes
from ipam.contract import IpamApi
from ipam.service import IpamService
from ipam.store import IpamStore
from ipam.store.sqlite import SqliteIpamStore

from .test_wire import FakeDriver


def calls(protocol) -> list[str]:
    return [name for name, fn in vars(protocol).items() if inspect.iscoroutinefunction(fn)]


@pytest.mark.parametrize("impl, protocol", [(BridgeMode, NetworkApi), (FakeDriver, NetworkApi),
                                            (BridgeMode, BridgeNetworks),
                                            (IpamService, IpamApi), (SqliteIpamStore, IpamStore)])
def test_every_call_of_the_contract_is_there_and_async(impl, protocol):
    assert calls(protocol)
    for name in calls(protocol):
        method = getattr(impl, name)
        assert inspect.iscoroutinefunction(method), f"{impl.__name__}.{name} is not async"
        assert list(inspect.signature(method).parameters) == list(inspect.signature(getattr(protocol, name)).parameters)
    for name, fn in vars(protocol).items():  # and the plain methods
        if inspect.isfunction(fn) and not name.startswith("_") and not inspect.iscoroutinefunction(fn):
            assert list(inspect.signature(getattr(impl, name)).parameters) == list(inspect.signature(fn).parameters)


def test_the_server_routes_a_path_to_every_call():
    class Recorder:
        def __getattr__(self, name):
            return name
    table = routes(Recorder(), Recorder())
    assert {r.handler for r in table.values() if isinstance(r.handler, str)} >= \
        set(calls(NetworkApi)) - {"capabilities"} | {"request_pool", "release_pool", "request_address",
                                                    "release_address"}
