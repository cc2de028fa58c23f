"""CreateNetwork's Options: the -o allow-list and Docker's own flags."""

import pytest

from driver import naming
from driver.errors import InvalidRequest
from driver.bridge.options import (BRIDGE_NAME, ENABLE_IPV6, GENERIC, INTERNAL, OPTIONS, NetworkOptions,
                            parse_network_options)


def generic(**values):
    return {GENERIC: values}


def with_bridge(name):
    return {GENERIC: {BRIDGE_NAME: name}}


def test_empty_options():
    assert parse_network_options({}) == NetworkOptions()
    assert parse_network_options({GENERIC: None}) == NetworkOptions()
    assert parse_network_options({GENERIC: {}, ENABLE_IPV6: False}) == NetworkOptions()


@pytest.mark.parametrize("name", ["br0", "pynet_1", "a", "x" * 15, "br-lan.10", "_b", "9a"])
def test_bridge_name_ok(name):
    assert parse_network_options(with_bridge(name)).bridge_name == name


@pytest.mark.parametrize("name", ["x" * 16, "averyveryverylongbridgename"])
def test_bridge_name_too_long(name):
    with pytest.raises(InvalidRequest, match=f"-o {BRIDGE_NAME}") as err:
        parse_network_options(with_bridge(name))
    assert "at most 15 characters" in str(err.value)


@pytest.mark.parametrize("name", ["", "-br", ".br", ".", "..", "br/0", "br:0", "br 0", "bré",
                                  "br\t0", "br\x00"])
def test_bridge_name_bad_characters(name):
    with pytest.raises(InvalidRequest, match="not a valid interface name"):
        parse_network_options(with_bridge(name))


@pytest.mark.parametrize("name", ["br;reboot", "br$(id)", "`id`", "br|sh", "br&", "a>b", "b'r",
                                  'b"r', "br*", "br\nx", "\nbr"])
def test_bridge_name_shell_metacharacters(name):
    with pytest.raises(InvalidRequest):
        parse_network_options(with_bridge(name))


@pytest.mark.parametrize("name", ["br0\n", "x" * 15 + "\n"])
def test_bridge_name_with_trailing_newline_refused(name):
    with pytest.raises(InvalidRequest):
        parse_network_options(with_bridge(name))


def test_check_ifname_refuses_trailing_newline():
    with pytest.raises(ValueError):
        naming.check_ifname("pn-abc\n")


def test_unknown_option_lists_valid_keys():
    with pytest.raises(InvalidRequest) as err:
        parse_network_options(generic(**{"com.docker.network.bridge.enable_icx": "true"}))
    text = str(err.value)
    assert "unknown option -o com.docker.network.bridge.enable_icx" in text
    for key in OPTIONS:
        assert key in text


@pytest.mark.parametrize("value", [1, True, None, ["br0"], {"n": "br0"}])
def test_non_string_value_refused(value):
    with pytest.raises(InvalidRequest, match=f"-o {BRIDGE_NAME}: expected a string"):
        parse_network_options({GENERIC: {BRIDGE_NAME: value}})


@pytest.mark.parametrize("value", ["br0", ["br0"], 3])
def test_generic_must_be_an_object(value):
    with pytest.raises(InvalidRequest, match=GENERIC):
        parse_network_options({GENERIC: value})


@pytest.mark.parametrize("value,expected", [
    (True, True), (False, False), ("true", True), ("True", True), ("1", True),
    ("false", False), ("0", False), ("", False),
])
def test_enable_ipv6_flag(value, expected):
    assert parse_network_options({ENABLE_IPV6: value}).ipv6 is expected


@pytest.mark.parametrize("value", ["yes", "on", 1, 0, None, [], {}])
def test_enable_ipv6_flag_must_be_a_boolean(value):
    with pytest.raises(InvalidRequest, match=ENABLE_IPV6):
        parse_network_options({ENABLE_IPV6: value})


def test_internal_flag():
    assert parse_network_options({INTERNAL: False}).internal is False
    assert parse_network_options({INTERNAL: True}).internal is True
    with pytest.raises(InvalidRequest, match="not a boolean"):
        parse_network_options({INTERNAL: "maybe"})


@pytest.mark.parametrize("key,value,field,expected", [
    ("com.docker.network.bridge.enable_icc", "false", "icc", False),
    ("com.docker.network.bridge.enable_icc", "1", "icc", True),
    ("com.docker.network.bridge.enable_ip_masquerade", "False", "masquerade", False),
    ("com.docker.network.bridge.host_binding_ipv4", "127.0.0.1", "host_binding_ipv4", "127.0.0.1"),
    ("com.docker.network.bridge.inhibit_ipv4", "true", "inhibit_ipv4", True),
    ("com.docker.network.bridge.gateway_mode_ipv6", "nat", "gateway_mode_ipv6", "nat"),
    ("com.docker.network.driver.mtu", "1400", "mtu", 1400),
])
def test_bridge_driver_options(key, value, field, expected):
    assert getattr(parse_network_options(generic(**{key: value})), field) == expected


@pytest.mark.parametrize("key,value,why", [
    ("com.docker.network.bridge.enable_icc", "yes", "expected true or false"),
    ("com.docker.network.bridge.host_binding_ipv4", "::1", "expected an IPv4 address"),
    ("com.docker.network.bridge.host_binding_ipv4", "1.2.3.4; rm -rf /", "expected an IPv4 address"),
    ("com.docker.network.bridge.gateway_mode_ipv6", "bridged", "expected nat or routed"),
    ("com.docker.network.driver.mtu", "67", "between 68 and 65535"),
    ("com.docker.network.driver.mtu", "1500x", "expected a number"),
])
def test_bad_values_name_the_option(key, value, why):
    with pytest.raises(InvalidRequest, match=f"-o {key}=.*{why}"):
        parse_network_options(generic(**{key: value}))


def test_ipv6_needs_mtu_1280():
    with pytest.raises(InvalidRequest, match="at least 1280"):
        parse_network_options({ENABLE_IPV6: True, GENERIC: {"com.docker.network.driver.mtu": "1200"}})


def test_unknown_top_level_keys_ignored():
    # Newer engines add top-level keys (e.g. enable_ipv4); only -o values are checked.
    opts = parse_network_options({"com.docker.network.enable_ipv4": True, "something.new": 1,
                                  GENERIC: {BRIDGE_NAME: "br7"}, ENABLE_IPV6: True})
    assert opts == NetworkOptions(bridge_name="br7", ipv6=True)


def test_options_round_trip_through_json():
    opts = NetworkOptions(bridge_name="br7", ipv6=True)
    assert NetworkOptions.from_json(opts.to_json()) == opts
    assert NetworkOptions.from_json({}) == NetworkOptions()
