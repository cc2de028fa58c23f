"""IpamService against a real state database (no kernel, no root).

Host routes, holders and network users are simple fakes: the service only
sees them through its callbacks.
"""

import contextlib
import ipaddress

import pytest

from driver.db import Database
from ipam.store import sqlite as store
from ipam.errors import AddressInUse, AddressOutOfPool, InvalidRequest, PoolExhausted, PoolOverlap
from ipam.pools import parse_default_pools
from ipam.service import GATEWAY_TYPE, GLOBAL_SPACE, LOCAL_SPACE, IpamService, pool_id_for
from ipam.wire import (ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest,
                       RequestPoolRequest)

N = ipaddress.ip_network
A = ipaddress.ip_address

# Four IPv4 and four IPv6 candidates: small enough to exhaust in a test.
DEFAULTS = "10.200.0.0/22/24,fd70:796e:6574::/62/64"
GW = {"RequestAddressType": GATEWAY_TYPE}


class Routes:
    """A fake host routing table for automatic pool choice."""

    def __init__(self, *nets):
        self.nets = [N(n) for n in nets]
        self.calls = 0

    async def __call__(self):
        self.calls += 1
        return list(self.nets)


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "state" / "pynet.db")


@pytest.fixture
async def db(db_path):
    database = Database(db_path)
    await database.open([store.SCHEMA])
    yield database
    await database.close()


@pytest.fixture
async def ipam(db):
    service = IpamService(store.SqliteIpamStore(db), parse_default_pools(DEFAULTS))
    await service.load()
    return service


def pool_req(pool="", sub_pool="", options=None, v6=False, space=LOCAL_SPACE):
    return RequestPoolRequest(AddressSpace=space, Pool=pool, SubPool=sub_pool, Options=options, V6=v6)


async def request(ipam, pool_id, address="", options=None):
    reply = await ipam.request_address(RequestAddressRequest(PoolID=pool_id, Address=address,
                                                             Options=options))
    return reply.Address


async def rows(db):
    return {r.pool_id: r for r in await store.SqliteIpamStore(db).load_pools()}


# --- RequestPool -----------------------------------------------------------


async def test_request_pool_with_subnet(ipam, db):
    reply = await ipam.request_pool(pool_req("10.1.0.0/24"))
    assert reply.Pool == "10.1.0.0/24"
    assert reply.PoolID == pool_id_for(LOCAL_SPACE, N("10.1.0.0/24"), None)
    saved = (await rows(db))[reply.PoolID]
    assert (saved.pool, saved.sub_pool, saved.address_space) == ("10.1.0.0/24", "", LOCAL_SPACE)


async def test_request_pool_with_sub_pool(ipam, db):
    reply = await ipam.request_pool(pool_req("10.1.0.0/16", "10.1.5.0/24"))
    assert reply.Pool == "10.1.0.0/16"
    assert reply.PoolID != pool_id_for(LOCAL_SPACE, N("10.1.0.0/16"), None)
    assert (await rows(db))[reply.PoolID].sub_pool == "10.1.5.0/24"
    # Automatic addresses come from the range, whose first address is a host
    # address of the /16 (as with Docker's own IPAM).
    assert await request(ipam, reply.PoolID) == "10.1.5.0/16"


@pytest.mark.parametrize("pool,sub_pool,text", [
    ("10.1.0.0/24", "10.2.0.0/25", "not inside subnet"),
    ("", "10.2.0.0/25", "needs a --subnet"),
    ("10.1.0.0/24", "fd00::/64", "not inside subnet"),
])
async def test_request_pool_bad_sub_pool(ipam, pool, sub_pool, text):
    with pytest.raises(InvalidRequest, match=text):
        await ipam.request_pool(pool_req(pool, sub_pool))
    assert ipam.pools == {}


async def test_pool_id_is_deterministic(tmp_path):
    """Two independent services (two hosts, or a lost state) answer the same PoolIDs."""
    answers = []
    for name in ("a.db", "b.db"):
        database = Database(str(tmp_path / name))
        await database.open([store.SCHEMA])
        try:
            service = IpamService(store.SqliteIpamStore(database), parse_default_pools(DEFAULTS))
            explicit = await service.request_pool(pool_req("10.1.0.0/24", "10.1.0.128/25"))
            auto = await service.request_pool(pool_req())
            answers.append((explicit.PoolID, auto.PoolID))
        finally:
            await database.close()
    assert answers[0] == answers[1]
    assert answers[0][0] == pool_id_for(LOCAL_SPACE, N("10.1.0.0/24"), N("10.1.0.128/25"))


async def test_auto_pools_are_new_each_call_while_held(ipam):
    seen = []
    for _ in range(4):
        reply = await ipam.request_pool(pool_req())
        assert reply.Pool not in seen
        seen.append(reply.Pool)
    assert seen == ["10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24", "10.200.3.0/24"]
    with pytest.raises(PoolExhausted, match="10.200.0.0/22/24"):
        await ipam.request_pool(pool_req())
    # Releasing one makes it the next candidate again.
    await ipam.release_pool(ReleasePoolRequest(PoolID=pool_id_for(LOCAL_SPACE, N(seen[1]), None)))
    assert (await ipam.request_pool(pool_req())).Pool == seen[1]


async def test_auto_pool_skips_host_routes(db):
    routes = Routes("10.200.0.0/23", "192.168.1.0/24", "fd70:796e:6574::/64")
    service = IpamService(store.SqliteIpamStore(db), parse_default_pools(DEFAULTS), host_routes=routes)
    assert (await service.request_pool(pool_req())).Pool == "10.200.2.0/24"
    assert (await service.request_pool(pool_req())).Pool == "10.200.3.0/24"
    with pytest.raises(PoolExhausted):
        await service.request_pool(pool_req())
    assert (await service.request_pool(pool_req(v6=True))).Pool == "fd70:796e:6574:1::/64"
    assert routes.calls == 4


async def test_auto_pool_exhausted_when_routes_cover_everything(db):
    service = IpamService(store.SqliteIpamStore(db), parse_default_pools(DEFAULTS), host_routes=Routes("10.0.0.0/8"))
    with pytest.raises(PoolExhausted, match="--subnet"):
        await service.request_pool(pool_req())
    assert service.pools == {}


async def test_auto_pool_skips_explicit_pools(ipam):
    await ipam.request_pool(pool_req("10.200.0.0/23"))
    assert (await ipam.request_pool(pool_req())).Pool == "10.200.2.0/24"


async def test_overlap_refused_naming_the_pool(ipam):
    first = await ipam.request_pool(pool_req("10.1.0.0/16"))
    with pytest.raises(PoolOverlap) as err:
        await ipam.request_pool(pool_req("10.1.2.0/24"))
    assert first.PoolID in str(err.value)
    assert "10.1.0.0/16" in str(err.value)
    with pytest.raises(PoolOverlap):  # a supernet, or the same subnet with another range
        await ipam.request_pool(pool_req("10.0.0.0/8"))
    with pytest.raises(PoolOverlap):
        await ipam.request_pool(pool_req("10.1.0.0/16", "10.1.1.0/24"))
    with pytest.raises(PoolOverlap):  # another address space does not help
        await ipam.request_pool(pool_req("10.1.0.0/16", space=GLOBAL_SPACE))


async def test_overlap_refused_naming_the_network(db):
    net_id = "ab" * 32
    users = {}
    service = IpamService(store.SqliteIpamStore(db), parse_default_pools(DEFAULTS),
                          network_using=lambda net: users.get(net))
    reply = await service.request_pool(pool_req("10.1.0.0/24"))
    users[N(reply.Pool)] = net_id  # CreateNetwork happened
    with pytest.raises(PoolOverlap, match=f"network {net_id[:12]}") as err:
        await service.request_pool(pool_req("10.1.0.0/24"))
    assert net_id not in str(err.value)  # the short form only


async def test_a_held_pool_is_never_given_twice(ipam, db):
    """Even before any network uses it (e.g. the IPAM serving another driver, or
    two networks created at once): two networks sharing a pool would lose it together."""
    first = await ipam.request_pool(pool_req("10.1.0.0/24", "10.1.0.0/25"))
    await request(ipam, first.PoolID, options=GW)
    with pytest.raises(PoolOverlap, match="overlaps pool PynetLocal/10.1.0.0/24/10.1.0.0/25"):
        await ipam.request_pool(pool_req("10.1.0.0/24", "10.1.0.0/25"))
    assert len(ipam.pools) == 1
    assert ipam.pools[first.PoolID].allocator.is_used(A("10.1.0.1"))
    assert len(await rows(db)) == 1


async def test_v6_pool(ipam):
    reply = await ipam.request_pool(pool_req("fd00:1::/64", v6=True))
    assert reply.Pool == "fd00:1::/64"
    assert await request(ipam, reply.PoolID, options=GW) == "fd00:1::1/64"
    assert await request(ipam, reply.PoolID) == "fd00:1::2/64"
    auto = await ipam.request_pool(pool_req(v6=True))
    assert auto.Pool == "fd70:796e:6574::/64"
    # v4 and v6 pools never overlap each other
    assert (await ipam.request_pool(pool_req())).Pool == "10.200.0.0/24"


@pytest.mark.parametrize("pool,v6", [("fd00::/64", False), ("10.1.0.0/24", True)])
async def test_pool_of_the_wrong_family_refused(ipam, pool, v6):
    with pytest.raises(InvalidRequest, match="is not an IPv"):
        await ipam.request_pool(pool_req(pool, v6=v6))


@pytest.mark.parametrize("pool,sub_pool,canonical", [
    ("10.1.0.5/24", "", "10.1.0.0/24"),
    ("10.1.0.0/24", "10.1.0.9/25", "10.1.0.0/25"),
    ("fd00:0::/64", "", "fd00::/64"),
])
async def test_non_canonical_cidr_rejected(ipam, pool, sub_pool, canonical):
    with pytest.raises(InvalidRequest, match=f"did you mean {canonical}"):
        await ipam.request_pool(pool_req(pool, sub_pool, v6=":" in pool))
    assert ipam.pools == {}


@pytest.mark.parametrize("pool", ["10.1.0.0", "10.1.0.0/33", "nonsense/8"])
async def test_invalid_cidr_rejected(ipam, pool):
    with pytest.raises(InvalidRequest):
        await ipam.request_pool(pool_req(pool))


async def test_unknown_ipam_opt_rejected(ipam):
    with pytest.raises(InvalidRequest, match="unknown --ipam-opt 'color'"):
        await ipam.request_pool(pool_req("10.1.0.0/24", options={"color": "blue"}))
    assert ipam.pools == {}
    reply = await ipam.request_pool(pool_req("10.1.0.0/24", options={
        "com.docker.network.ipam.serial": "true", "com.docker.network.gateway": "10.1.0.1/24"}))
    assert reply.Pool == "10.1.0.0/24"
    assert ipam.pools[reply.PoolID].options == {}


async def test_unknown_address_space_rejected(ipam):
    with pytest.raises(InvalidRequest, match="address space"):
        await ipam.request_pool(pool_req("10.1.0.0/24", space="Elsewhere"))


async def test_release_pool_is_idempotent(ipam, db):
    reply = await ipam.request_pool(pool_req("10.1.0.0/24"))
    await request(ipam, reply.PoolID, options=GW)
    await ipam.release_pool(ReleasePoolRequest(PoolID=reply.PoolID))
    await ipam.release_pool(ReleasePoolRequest(PoolID=reply.PoolID))
    await ipam.release_pool(ReleasePoolRequest(PoolID="PynetLocal/192.0.2.0/24"))
    assert ipam.pools == {} and await rows(db) == {}
    count = await db.read(lambda c: c.execute("SELECT count(*) FROM ipam_addresses").fetchone()[0])
    assert count == 0


# --- RequestAddress ----------------------------------------------------------


@pytest.fixture
async def pool24(ipam):
    """10.1.0.0/24 with --ip-range 10.1.0.128/26."""
    return (await ipam.request_pool(pool_req("10.1.0.0/24", "10.1.0.128/26"))).PoolID


async def test_gateway_explicit_and_automatic(ipam, pool24):
    assert await request(ipam, pool24, "10.1.0.1", GW) == "10.1.0.1/24"
    other = (await ipam.request_pool(pool_req("10.2.0.0/24"))).PoolID
    assert await request(ipam, other, "", GW) == "10.2.0.1/24"
    assert ipam.pools[other].kinds[A("10.2.0.1")] == "gateway"


async def test_gateway_with_prefix_length_accepted(ipam, pool24):
    # Docker's gateway and aux values may carry a /len.
    assert await request(ipam, pool24, "10.1.0.1/24", GW) == "10.1.0.1/24"


async def test_explicit_and_aux_address_outside_sub_pool_accepted(ipam, pool24):
    assert await request(ipam, pool24, "10.1.0.5") == "10.1.0.5/24"  # aux: Options null
    assert await request(ipam, pool24, "10.1.0.250", {}) == "10.1.0.250/24"
    assert ipam.pools[pool24].kinds[A("10.1.0.5")] == "static"


@pytest.mark.parametrize("address,error", [
    ("10.2.0.5", AddressOutOfPool),
    ("10.1.0.0", AddressOutOfPool),
    ("10.1.0.255", AddressOutOfPool),
    ("fd00::1", AddressOutOfPool),
    ("10.1.0.300", InvalidRequest),
])
async def test_address_outside_pool_refused(ipam, pool24, address, error):
    with pytest.raises(error, match=pool24):
        await request(ipam, pool24, address)


async def test_duplicate_address_refused_naming_holder(ipam, pool24):
    await request(ipam, pool24, "10.1.0.1", GW)
    await request(ipam, pool24, "10.1.0.5")
    dyn = (await request(ipam, pool24)).split("/")[0]
    with pytest.raises(AddressInUse, match="10.1.0.1 is already in use by the gateway"):
        await request(ipam, pool24, "10.1.0.1")
    with pytest.raises(AddressInUse, match="explicitly requested"):
        await request(ipam, pool24, "10.1.0.5")
    with pytest.raises(AddressInUse, match="automatically allocated"):
        await request(ipam, pool24, dyn)


async def test_duplicate_address_names_holder_from_lookup(db):
    async def holder_of(pool, addr):
        return f"endpoint 0123456789ab on network {pool}" if addr == A("10.1.0.7") else None

    service = IpamService(store.SqliteIpamStore(db), parse_default_pools(DEFAULTS), holder_of=holder_of)
    pool_id = (await service.request_pool(pool_req("10.1.0.0/24"))).PoolID
    await request(service, pool_id, "10.1.0.7")
    with pytest.raises(AddressInUse, match="in use by endpoint 0123456789ab on network 10.1.0.0/24"):
        await request(service, pool_id, "10.1.0.7")


async def test_automatic_allocation_stays_in_ip_range(ipam, pool24):
    await request(ipam, pool24, "10.1.0.1", GW)
    got = [await request(ipam, pool24) for _ in range(64)]
    assert got == [f"10.1.0.{i}/24" for i in range(128, 192)]
    with pytest.raises(PoolExhausted, match="10.1.0.128/26"):
        await request(ipam, pool24)
    # explicit addresses outside the range still work
    assert await request(ipam, pool24, "10.1.0.2") == "10.1.0.2/24"


async def test_unknown_pool_refused(ipam):
    with pytest.raises(Exception, match="not found"):
        await request(ipam, "PynetLocal/192.0.2.0/24")


async def test_release_address_is_idempotent(ipam, pool24, db):
    addr = (await request(ipam, pool24)).split("/")[0]
    await ipam.release_address(ReleaseAddressRequest(PoolID=pool24, Address=addr))
    await ipam.release_address(ReleaseAddressRequest(PoolID=pool24, Address=addr))
    await ipam.release_address(ReleaseAddressRequest(PoolID=pool24, Address="10.1.0.77"))
    await ipam.release_address(ReleaseAddressRequest(PoolID="PynetLocal/192.0.2.0/24",
                                                     Address="192.0.2.1"))
    assert not ipam.pools[pool24].allocator.is_used(A(addr))
    assert (await rows(db))[pool24].addresses == []


async def test_released_address_not_reused_at_once(ipam, pool24):
    first = await request(ipam, pool24)
    await ipam.release_address(ReleaseAddressRequest(PoolID=pool24, Address=first.split("/")[0]))
    second = await request(ipam, pool24)
    assert second != first
    assert second == "10.1.0.129/24"


async def test_released_gateway_can_be_requested_again(ipam, pool24):
    await request(ipam, pool24, "10.1.0.1", GW)
    await ipam.release_address(ReleaseAddressRequest(PoolID=pool24, Address="10.1.0.1"))
    assert A("10.1.0.1") not in ipam.pools[pool24].kinds
    assert await request(ipam, pool24, "10.1.0.1", GW) == "10.1.0.1/24"


# --- persistence -------------------------------------------------------------


async def test_state_survives_a_restart(db_path):
    database = Database(db_path)
    await database.open([store.SCHEMA])
    service = IpamService(store.SqliteIpamStore(database), parse_default_pools(DEFAULTS))
    explicit = (await service.request_pool(pool_req("10.1.0.0/24", "10.1.0.128/26"))).PoolID
    auto = (await service.request_pool(pool_req())).PoolID
    v6 = (await service.request_pool(pool_req("fd00:1::/64", v6=True))).PoolID
    released = (await service.request_pool(pool_req("10.9.0.0/24"))).PoolID
    await service.release_pool(ReleasePoolRequest(PoolID=released))
    await request(service, explicit, "10.1.0.1", GW)
    await request(service, explicit, "10.1.0.5")
    dynamic = [await request(service, explicit) for _ in range(3)]
    await service.release_address(ReleaseAddressRequest(PoolID=explicit, Address="10.1.0.129"))
    await request(service, auto, "", GW)
    await request(service, v6, "", GW)
    await request(service, v6)
    cursor = service.pools[explicit].allocator.cursor
    await database.close()

    async with reloaded(db_path) as again:
        assert set(again.pools) == {explicit, auto, v6}
        pool = again.pools[explicit]
        assert (pool.network, pool.allocator.sub_pool) == (N("10.1.0.0/24"), N("10.1.0.128/26"))
        assert pool.allocator.cursor == cursor
        held = {str(a) for a in map(A, ["10.1.0.1", "10.1.0.5", "10.1.0.128", "10.1.0.129",
                                        "10.1.0.130"]) if pool.allocator.is_used(a)}
        assert held == {"10.1.0.1", "10.1.0.5", "10.1.0.128", "10.1.0.130"}
        assert dynamic == ["10.1.0.128/24", "10.1.0.129/24", "10.1.0.130/24"]
        assert pool.kinds == {A("10.1.0.1"): "gateway", A("10.1.0.5"): "static"}
        assert again.pools[auto].allocator.is_used(A("10.200.0.1"))
        assert again.pools[v6].allocator.used_total == 2
        # The cursor carried over: the released .129 is not handed out next.
        assert await request(again, explicit) == "10.1.0.131/24"
        # Held pools and addresses are still refused.
        with pytest.raises(PoolOverlap):
            await again.request_pool(pool_req("10.1.0.0/25"))
        with pytest.raises(AddressInUse, match="the gateway"):
            await request(again, explicit, "10.1.0.1")
        # The automatic choice does not hand out the held pool again.
        assert (await again.request_pool(pool_req())).Pool == "10.200.1.0/24"
        # The released pool is free.
        assert (await again.request_pool(pool_req("10.9.0.0/24"))).PoolID == released


async def test_state_written_before_the_reply(ipam, db, pool24):
    await request(ipam, pool24, "10.1.0.1", GW)
    await request(ipam, pool24)
    row = (await rows(db))[pool24]
    assert sorted(row.addresses) == [("10.1.0.1", "gateway"), ("10.1.0.128", "dynamic")]
    assert row.cursor == str(int(A("10.1.0.128")))


async def test_failed_write_undoes_the_decision(ipam, db, pool24):
    real_write = db.write

    async def failing_write(fn):
        raise OSError("disk full")

    db.write = failing_write
    try:
        with pytest.raises(OSError):
            await request(ipam, pool24, "10.1.0.9")
        with pytest.raises(OSError):
            await ipam.request_pool(pool_req("10.5.0.0/24"))
    finally:
        db.write = real_write
    assert not ipam.pools[pool24].allocator.is_used(A("10.1.0.9"))
    assert list(ipam.pools) == [pool24]
    assert await request(ipam, pool24, "10.1.0.9") == "10.1.0.9/24"


async def test_a_restart_skips_saved_rows_it_cannot_hold_and_says_so(db_path, caplog):
    database = Database(db_path)
    await database.open([store.SCHEMA])
    service = IpamService(store.SqliteIpamStore(database), parse_default_pools(DEFAULTS))
    pool = (await service.request_pool(pool_req("10.1.0.0/24"))).PoolID
    await request(service, pool, "10.1.0.1", GW)
    await request(service, pool, "10.1.0.7")
    # Rows no pynet writes: another family, junk, the broadcast address.
    await database.write(lambda c: c.executemany(
        "INSERT INTO ipam_addresses (pool_id, address, kind, created) VALUES (?, ?, 'dynamic', 0)",
        [(pool, "fd00::1"), (pool, "not-an-ip"), (pool, "10.1.0.255")]))
    await database.close()

    async with reloaded(db_path) as again:
        alloc = again.pools[pool].allocator
        assert alloc.used_total == 2 and alloc.is_used(A("10.1.0.7"))
        assert again.pools[pool].kinds == {A("10.1.0.1"): "gateway", A("10.1.0.7"): "static"}
        skipped = " ".join(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
        assert "fd00::1" in skipped and "not-an-ip" in skipped and "10.1.0.255" in skipped


@contextlib.asynccontextmanager
async def reloaded(db_path):
    """The IPAM as a restarted pynet loads it from the database at db_path."""
    database = Database(db_path)
    await database.open([store.SCHEMA])
    try:
        again = IpamService(store.SqliteIpamStore(database), parse_default_pools(DEFAULTS))
        await again.load()
        yield again
    finally:
        await database.close()
