"""The one `pynet` driver in front of its modes: -o pynet.mode picks the
mode at CreateNetwork; every later call goes to the mode holding the network."""

import pytest

from driver import wire
from driver.errors import InvalidRequest
from driver.modes import GENERIC, MODE, Modes

from .test_wire import FakeDriver

NID = "1ed2" + "a" * 60
OTHER = "9ab0" + "b" * 60


class FakeMode(FakeDriver):
    def __init__(self) -> None:
        super().__init__()
        self.networks: set[str] = set()

    def holds(self, network_id: str) -> bool:
        return network_id in self.networks

    async def create_network(self, req):
        self.networks.add(req.NetworkID)
        return await super().create_network(req)

    async def holder_of(self, pool, addr):
        return None

    def network_using(self, pool):
        return None

    async def address_released(self, pool, addr):
        return None

    def holders(self):
        return {}


def create(nid: str, **generic) -> wire.CreateNetworkRequest:
    return wire.CreateNetworkRequest(NetworkID=nid, Options={GENERIC: generic, "com.docker.network.enable_ipv6": False})


async def test_the_default_mode_takes_a_network_without_the_option():
    bridge, other = FakeMode(), FakeMode()
    modes = Modes({"bridge": bridge, "other": other})
    await modes.create_network(create(NID, **{"com.docker.network.driver.mtu": "1400"}))
    assert bridge.holds(NID) and not other.holds(NID)
    (_, req), = bridge.calls
    assert req.Options[GENERIC] == {"com.docker.network.driver.mtu": "1400"}


async def test_the_option_picks_the_mode_and_is_not_passed_on():
    bridge, other = FakeMode(), FakeMode()
    modes = Modes({"bridge": bridge, "other": other})
    await modes.create_network(create(OTHER, **{MODE: "other", "x": "1"}))
    (_, req), = other.calls
    assert req.Options[GENERIC] == {"x": "1"} and req.Options["com.docker.network.enable_ipv6"] is False
    await modes.join(wire.JoinRequest(NetworkID=OTHER, EndpointID=NID, SandboxKey="/run/docker/netns/x"))
    await modes.delete_network(wire.NetworkRequest(NetworkID=OTHER))
    assert [name for name, _ in other.calls] == ["create_network", "join", "delete_network"]
    assert bridge.calls == []


async def test_a_network_no_mode_holds_goes_to_the_default_mode():
    bridge, other = FakeMode(), FakeMode()
    await Modes({"bridge": bridge, "other": other}).delete_network(wire.NetworkRequest(NetworkID=NID))
    assert [name for name, _ in bridge.calls] == ["delete_network"] and other.calls == []


@pytest.mark.parametrize("value", ["overlay", "", ["bridge"], {"a": 1}, 1])
async def test_an_unknown_mode_is_refused_with_the_known_ones(value):
    with pytest.raises(InvalidRequest, match=r"unknown -o pynet.mode=.* \(pynet's modes: bridge\)"):
        await Modes({"bridge": FakeMode()}).create_network(create(NID, **{MODE: value}))
