"""A host where ip6tables cannot run (IPv6 disabled at boot) still runs pynet for IPv4."""

import pytest

from driver.errors import KernelError
from driver.firewall import Firewall
from driver.kernel.iptables import Snapshot


class NoIPv6:
    def __init__(self):
        self.applied = []

    async def snapshot(self, family):
        if family == 6:
            raise KernelError("ip6tables-save: can't initialize ip6tables table `filter'")
        return Snapshot(family)

    async def apply(self, family, batch):
        self.applied.append((family, batch))


async def test_ipv6_left_out_when_ip6tables_cannot_run():
    ipt = NoIPv6()
    fw = Firewall(ipt)
    with pytest.raises(KernelError):  # without the probe, every firewall call fails
        await fw.ensure()
    ipt.applied.clear()
    await fw.probe(need_ipv6=False)
    assert fw.families == [4]
    assert await fw.ensure() > 0
    assert {family for family, _ in ipt.applied} == {4}


async def test_a_saved_ipv6_network_makes_it_an_error():
    with pytest.raises(KernelError, match="ip6tables"):
        await Firewall(NoIPv6()).probe(need_ipv6=True)
