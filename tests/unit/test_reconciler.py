"""The Reconciler asks every mode the same questions; a second mode plugs in
by addition. (The bridge's own decisions: test_bridge_repair.py.)"""

from collections import Counter

from driver.findings import Decision, Finding
from driver.reconcile import Reconciler

from .fakes import FakeFirewall


class FakeMode:
    def __init__(self, name: str, networks: int) -> None:
        self.name, self.networks, self.fixed = name, networks, []

    def counts(self):
        return self.networks, 0

    def known_networks(self):
        return set()

    async def observe(self, full):
        return {"seen": self.name}

    def decide(self, snapshot, full, min_age, spare_leftovers):
        async def fix():
            self.fixed.append(snapshot["seen"])
        return [Decision(Finding(f"{self.name} repaired", self.name, "off", "it matters", "fix it"), fix),
                Decision(Finding("host problems", "host", "unseen", "it matters", "by hand"), None,
                         warn=f"{self.name}: cannot see")]

    def expected_rules(self):
        return []

    def held_subnets(self):
        return []


async def test_every_modes_decisions_are_applied_in_turn(caplog):
    bridge, overlay = FakeMode("bridge", 1), FakeMode("overlay", 0)
    reconciler = Reconciler([bridge, overlay], FakeFirewall())
    done = await reconciler.run(full=False)
    assert done == Counter({"bridge repaired": 1, "overlay repaired": 1})
    assert bridge.fixed == ["bridge"] and overlay.fixed == ["overlay"]
    assert "bridge: cannot see" in caplog.text and "overlay: cannot see" in caplog.text


def test_leftovers_are_spared_while_no_mode_holds_a_network():
    assert Reconciler([FakeMode("bridge", 0), FakeMode("overlay", 0)], FakeFirewall()).spare_leftovers
    assert not Reconciler([FakeMode("bridge", 0), FakeMode("overlay", 2)], FakeFirewall()).spare_leftovers
