"""The cluster's endpoint records as the modes follow them: the newest
record of an address wins, this host's own are left out, and a change
reaches only the followers holding that network."""

from types import SimpleNamespace

from driver.cluster.endpoints import Endpoints
from driver.cluster.keys import Keys

KEYS = Keys("/pynet")


def endpoints() -> Endpoints:
    return Endpoints(etcd=None, keys=KEYS, membership=SimpleNamespace(host="h1"), db=None)  # type: ignore[arg-type]


def record(e: Endpoints, name: str, eid: str, revision: int, host: str, *ips: str) -> None:
    e.records[KEYS.endpoint(name, eid).decode()] = (revision, {"host": host, "vtep": f"vtep-{host}", "ips": list(ips)})


def test_remote_takes_the_newest_record_of_each_address_on_other_hosts():
    e = endpoints()
    record(e, "web", "a", 5, "h2", "10.0.0.2")
    record(e, "web", "b", 9, "h3", "10.0.0.2")  # the address moved to h3 later
    record(e, "web", "c", 3, "h1", "10.0.0.3")  # this host's own
    record(e, "db", "d", 4, "h2", "10.1.0.2")
    assert {ip: r["host"] for ip, r in e.remote("web").items()} == {"10.0.0.2": "h3"}
    assert list(e.remote("db")) == ["10.1.0.2"]


def test_an_address_whose_newest_record_is_this_hosts_is_local_whatever_stale_ones_say():
    e = endpoints()
    record(e, "web", "old", 5, "h2", "10.0.0.7")  # h2's record, not yet deleted
    record(e, "web", "new", 8, "h1", "10.0.0.7")  # the address is this host's now
    assert e.remote("web") == {}


class Follower:
    def __init__(self, *names: str) -> None:
        self.names, self.synced = set(names), []

    def networks(self):
        return self.names

    async def sync(self, name: str) -> None:
        self.synced.append(name)


async def test_a_change_reaches_the_followers_holding_its_network():
    e = endpoints()
    overlay, routed = Follower("web"), Follower("db", "cache")
    e.follow(overlay)
    e.follow(routed)
    await e.sync("db")
    assert overlay.synced == [] and routed.synced == ["db"]
    await e.sync()  # after a snapshot: every network of every follower
    assert overlay.synced == ["web"] and sorted(routed.synced) == ["cache", "db", "db"]


def test_endpoints_published_under_an_earlier_epoch_are_stale():
    from driver.overlay.quarantine import Quarantine
    e = endpoints()
    e.membership = SimpleNamespace(host="h1", epoch=None)  # type: ignore[assignment]
    e.published = {"a" * 64: ("web", 1, ["10.0.0.2"]), "b" * 64: ("web", 2, ["10.0.0.3"]),
                   "c" * 64: ("db", 1, ["10.1.0.2"])}
    assert e.stale() == {}  # not registered yet: nothing says which epoch is this host's
    e.membership.epoch = 2
    assert set(e.stale()) == {"a" * 64, "c" * 64}
    q = Quarantine(e, ipr=None)
    (stale,) = q.stale(["web"])  # only the overlay's networks
    assert stale.veth == "pnh" + "a" * 12 and stale.ips == ("10.0.0.2",)
    (problem,) = q.problems(["web"])
    assert problem.startswith("endpoint aaaaaaaaaaaa (10.0.0.2) on cluster network web: quarantined: this host was"
                              " reclaimed while away (epoch 1 -> 2)")
    assert "docker restart" in problem
