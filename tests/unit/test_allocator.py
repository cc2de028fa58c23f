import ipaddress
import random
import tracemalloc

import pytest

from ipam.allocator import IntervalSet, PoolAllocator
from ipam.errors import AddressInUse, AddressOutOfPool, PoolExhausted

A = ipaddress.ip_address
N = ipaddress.ip_network


def test_interval_set_merges_and_splits():
    s = IntervalSet()
    for x in (5, 7, 6, 4):
        assert s.add(x)
    assert not s.add(6)
    assert s.runs() == [(4, 8)]
    assert s.discard(6)
    assert s.runs() == [(4, 6), (7, 8)]
    assert not s.discard(6)
    assert s.first_free(4, 100) == 6
    assert s.first_free(7, 8) is None
    assert s.count_in(0, 100) == 3
    assert s.count_in(5, 8) == 2


def test_interval_set_matches_a_plain_set():
    rng = random.Random(7)
    s, model = IntervalSet(), set()
    for _ in range(5000):
        x = rng.randrange(200)
        if rng.random() < 0.6:
            assert s.add(x) == (x not in model)
            model.add(x)
        else:
            assert s.discard(x) == (x in model)
            model.discard(x)
        lo = rng.randrange(200)
        free = next((y for y in range(lo, 200) if y not in model), None)
        assert s.first_free(lo, 200) == free
    assert s.count_in(0, 200) == len(model)
    runs = s.runs()
    assert all(a[1] < b[0] for a, b in zip(runs, runs[1:], strict=False)), "runs are merged"


def test_automatic_allocation_stays_in_range_and_skips_held():
    p = PoolAllocator(N("10.231.0.0/24"), N("10.231.0.128/25"))
    p.reserve(A("10.231.0.1"))       # gateway, outside the range
    p.reserve(A("10.231.0.200"))     # aux address, inside the range
    got = [p.allocate() for _ in range(126)]
    assert all(a in N("10.231.0.128/25") for a in got)
    assert A("10.231.0.200") not in got
    assert A("10.231.0.255") not in got, "broadcast is never handed out"
    assert len(set(got)) == 126
    with pytest.raises(PoolExhausted):
        p.allocate()


def test_released_address_is_not_reused_at_once():
    p = PoolAllocator(N("10.0.0.0/24"))
    a, b, c = p.allocate(), p.allocate(), p.allocate()
    assert (a, b, c) == (A("10.0.0.1"), A("10.0.0.2"), A("10.0.0.3"))
    p.release(b)
    assert p.allocate() == A("10.0.0.4")


def test_allocation_wraps_round():
    p = PoolAllocator(N("10.0.0.0/29"))  # .1 to .6
    got = [p.allocate() for _ in range(6)]
    p.release(got[1])
    assert p.allocate() == got[1]


def test_explicit_addresses():
    p = PoolAllocator(N("10.0.0.0/24"), N("10.0.0.128/25"))
    p.reserve(A("10.0.0.5"))  # outside the range but inside the pool: allowed
    with pytest.raises(AddressInUse):
        p.reserve(A("10.0.0.5"))
    with pytest.raises(AddressOutOfPool):
        p.reserve(A("10.0.1.5"))
    with pytest.raises(AddressOutOfPool):
        p.reserve(A("10.0.0.0"))
    with pytest.raises(AddressOutOfPool):
        p.reserve(A("10.0.0.255"))
    with pytest.raises(AddressOutOfPool):
        p.reserve(A("fd00::1"))
    assert p.release(A("10.0.0.5")) and not p.release(A("10.0.0.5"))


def test_counts():
    p = PoolAllocator(N("10.0.0.0/24"), N("10.0.0.128/25"))
    assert p.size == 127  # .128 to .254
    p.reserve(A("10.0.0.1"))
    p.allocate()
    assert p.used_total == 2 and p.used_in_range == 1 and p.free == 126


def test_ipv6_pool():
    p = PoolAllocator(N("fd00:1::/64"))
    assert p.allocate() == A("fd00:1::1")
    p.reserve(A("fd00:1::ffff:ffff:ffff:fffe"))
    assert p.size == 2**64 - 1


def test_small_prefixes():
    assert PoolAllocator(N("10.0.0.0/31")).size == 2
    assert PoolAllocator(N("10.0.0.7/32")).allocate() == A("10.0.0.7")


def test_a_slash_8_costs_kilobytes():
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    p = PoolAllocator(N("10.0.0.0/8"))
    for _ in range(100_000):
        p.allocate()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert p.used_total == 100_000 and p.runs == 1
    assert used < 64 * 1024, f"{used} bytes for 100k addresses of a /8"


def test_cursor_survives_reload():
    p = PoolAllocator(N("10.0.0.0/24"))
    for _ in range(3):
        p.allocate()
    q = PoolAllocator(N("10.0.0.0/24"), cursor=p.cursor)
    assert q.allocate() == A("10.0.0.4")


def test_load_sorted_is_the_same_set_as_adding_one_by_one():
    rng = random.Random(7)
    values = sorted(set(rng.randrange(0, 5000) for _ in range(3000)))
    loaded, added = IntervalSet(), IntervalSet()
    loaded.load_sorted(values)
    for v in values:
        added.add(v)
    assert loaded.runs() == added.runs()
    with pytest.raises(ValueError):
        loaded.load_sorted([1])


def test_hold_saved_holds_the_usable_and_returns_the_rest():
    alloc = PoolAllocator(ipaddress.ip_network("10.1.0.0/24"))
    base = int(ipaddress.ip_address("10.1.0.0"))
    rejected = alloc.hold_saved([base + 5, base + 1, base + 0, base + 255, base + 5, base + 256, base + 2])
    assert sorted(rejected) == [base + 0, base + 5, base + 255, base + 256]  # network, twice, broadcast, outside
    assert [alloc.is_used(ipaddress.ip_address(base + i)) for i in (1, 2, 3, 5)] == [True, True, False, True]
    # Into an allocator that holds some already: one by one.
    assert alloc.hold_saved([base + 2, base + 9]) == [base + 2]
    assert alloc.used_total == 4
