"""Network options (`docker network create -o KEY=VALUE`): an allow-list.

Every option is parsed and checked here, before anything reaches the kernel
or the firewall. Names are those of Docker's built-in bridge driver, so an
operator's existing commands keep working.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Optional

from .. import naming
from ..errors import InvalidRequest
from ..wire import GENERIC

BRIDGE_NAME = "com.docker.network.bridge.name"
ENABLE_ICC = "com.docker.network.bridge.enable_icc"
ENABLE_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4"
INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"
GATEWAY_MODE_IPV6 = "com.docker.network.bridge.gateway_mode_ipv6"
MTU = "com.docker.network.driver.mtu"

# Top-level keys Docker itself puts in CreateNetwork's Options.
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
INTERNAL = "com.docker.network.internal"

_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool, as Docker reads them
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _bool(value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true or false")


def _mtu(value: str) -> int:
    try:
        mtu = int(value, 10)
    except ValueError:
        raise ValueError("expected a number") from None
    if not 68 <= mtu <= 65535:
        raise ValueError("must be between 68 and 65535")
    return mtu


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError("expected an IPv4 address") from None


def _gateway_mode(value: str) -> str:
    if value not in ("nat", "routed"):
        raise ValueError("expected nat or routed")
    return value


@dataclass(frozen=True)
class OptionSpec:
    field: str  # the NetworkOptions field it sets
    parse: Callable[[str], Any]
    default: str
    help: str


OPTIONS: dict[str, OptionSpec] = {
    BRIDGE_NAME: OptionSpec("bridge_name", naming.check_ifname,
                            "pn-<first 12 characters of the network ID>",
                            "name of the Linux bridge of the network"),
    ENABLE_ICC: OptionSpec("icc", _bool, "true",
                           "containers of the network may talk to each other"),
    ENABLE_MASQUERADE: OptionSpec("masquerade", _bool, "true",
                                  "outbound IPv4 traffic leaves with the host's address"),
    HOST_BINDING_IPV4: OptionSpec("host_binding_ipv4", _ipv4, "0.0.0.0",
                                  "host address of published ports that name none"),
    INHIBIT_IPV4: OptionSpec("inhibit_ipv4", _bool, "false",
                             "do not put the IPv4 gateway address on the bridge"),
    GATEWAY_MODE_IPV6: OptionSpec("gateway_mode_ipv6", _gateway_mode, "routed",
                                  "outbound IPv6: routed (containers' own addresses) or nat (masquerade)"),
    MTU: OptionSpec("mtu", _mtu, "the kernel's (1500)", "MTU of the bridge and of every container interface"),
}


@dataclass(frozen=True)
class NetworkOptions:
    bridge_name: Optional[str] = None
    ipv6: bool = False
    internal: bool = False
    icc: bool = True
    masquerade: bool = True
    host_binding_ipv4: Optional[str] = None
    inhibit_ipv4: bool = False
    gateway_mode_ipv6: str = "routed"
    mtu: Optional[int] = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "NetworkOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _flag(options: dict, key: str) -> bool:
    value = options.get(key, False)
    if isinstance(value, str):  # some engines send "true"
        try:
            return _bool(value) if value else False
        except ValueError:
            raise InvalidRequest(f"option {key}: {value!r} is not a boolean") from None
    if not isinstance(value, bool):
        raise InvalidRequest(f"option {key}: {value!r} is not a boolean")
    return value


def parse_network_options(options: dict[str, Any]) -> NetworkOptions:
    """Check CreateNetwork's Options; raise InvalidRequest naming the bad key."""
    generic = options.get(GENERIC) or {}
    if not isinstance(generic, dict):
        raise InvalidRequest(f"option {GENERIC}: expected an object, got {type(generic).__name__}")
    values: dict[str, Any] = {}
    for key, raw in generic.items():
        spec = OPTIONS.get(key)
        if spec is None:
            raise InvalidRequest(f"unknown option -o {key} (pynet's options: {', '.join(sorted(OPTIONS))})")
        if not isinstance(raw, str):
            raise InvalidRequest(f"option -o {key}: expected a string, got {raw!r}")
        try:
            values[spec.field] = spec.parse(raw)
        except ValueError as exc:
            raise InvalidRequest(f"option -o {key}={raw}: {exc}") from None
    opts = NetworkOptions(ipv6=_flag(options, ENABLE_IPV6), internal=_flag(options, INTERNAL), **values)
    if opts.mtu is not None and opts.ipv6 and opts.mtu < 1280:
        raise InvalidRequest(f"option -o {MTU}={opts.mtu}: IPv6 needs an MTU of at least 1280")
    return opts
