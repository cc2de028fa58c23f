import ipaddress

import pytest

from ipam.errors import InvalidRequest, PoolExhausted
from ipam.pools import DefaultPool, choose_pool, parse_default_pools

N = ipaddress.ip_network


def test_parse():
    pools = parse_default_pools("10.200.0.0/13/24, fd70:796e:6574::/48/64")
    assert [str(p) for p in pools] == ["10.200.0.0/13/24", "fd70:796e:6574::/48/64"]
    for bad in ("10.200.0.0/13", "10.200.0.1/13/24", "10.200.0.0/13/8", "x/24"):
        with pytest.raises(InvalidRequest):
            DefaultPool.parse(bad)


def test_first_free_candidate_in_order():
    d = parse_default_pools("10.200.0.0/16/24")
    assert choose_pool(d, 4, []) == N("10.200.0.0/24")
    assert choose_pool(d, 4, [N("10.200.0.0/24")]) == N("10.200.1.0/24")


def test_skips_host_routes_and_wide_overlaps():
    d = parse_default_pools("10.200.0.0/16/24,10.201.0.0/16/24")
    taken = [N("10.200.0.0/17"), N("10.200.128.5/32"), N("10.200.129.0/24")]
    assert choose_pool(d, 4, taken) == N("10.200.130.0/24")
    assert choose_pool(d, 4, [N("10.200.0.0/16")]) == N("10.201.0.0/24")


def test_exhaustion_is_an_error_naming_the_pools():
    d = parse_default_pools("10.200.0.0/23/24")
    with pytest.raises(PoolExhausted, match="10.200.0.0/23/24"):
        choose_pool(d, 4, [N("10.200.0.0/24"), N("10.200.1.0/24")])
    with pytest.raises(PoolExhausted, match="IPv6"):
        choose_pool(d, 6, [])


def test_ipv6():
    d = parse_default_pools("fd70:796e:6574::/48/64")
    assert choose_pool(d, 6, [N("fd70:796e:6574::/64")]) == N("fd70:796e:6574:1::/64")


def test_many_taken_is_fast():
    d = parse_default_pools("10.0.0.0/8/24")
    taken = [N(f"10.{i // 256}.{i % 256}.0/24") for i in range(50_000)]
    assert choose_pool(d, 4, taken) == N("10.195.80.0/24")
