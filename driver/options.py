"""Network options (`docker network create -o KEY=VALUE`): an allow-list.

Every option is parsed and checked here, before anything reaches the kernel
or the firewall. Names are those of Docker's built-in bridge driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import naming
from .errors import InvalidRequest

BRIDGE_NAME = "com.docker.network.bridge.name"

# Top-level keys Docker itself puts in CreateNetwork's Options.
GENERIC = "com.docker.network.generic"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
ENABLE_IPV4 = "com.docker.network.enable_ipv4"
INTERNAL = "com.docker.network.internal"


@dataclass(frozen=True)
class OptionSpec:
    parse: Callable[[str], Any]
    default: str
    help: str


def _bridge_name(value: str) -> str:
    return naming.check_ifname(value)


OPTIONS: dict[str, OptionSpec] = {
    BRIDGE_NAME: OptionSpec(_bridge_name, "pn-<first 12 characters of the network ID>",
                            "name of the Linux bridge of the network"),
}


@dataclass(frozen=True)
class NetworkOptions:
    bridge_name: Optional[str] = None
    ipv6: bool = False
    internal: bool = False

    def to_json(self) -> dict:
        return {"bridge_name": self.bridge_name, "ipv6": self.ipv6, "internal": self.internal}

    @classmethod
    def from_json(cls, data: dict) -> "NetworkOptions":
        return cls(**{k: data[k] for k in ("bridge_name", "ipv6", "internal") if k in data})


def _flag(options: dict, key: str) -> bool:
    value = options.get(key, False)
    if isinstance(value, str):  # some engines send "true"
        if value.lower() not in ("true", "false", "1", "0", ""):
            raise InvalidRequest(f"option {key}: {value!r} is not a boolean")
        return value.lower() in ("true", "1")
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
            values[key] = spec.parse(raw)
        except ValueError as exc:
            raise InvalidRequest(f"option -o {key}={raw}: {exc}") from None
    internal = _flag(options, INTERNAL)
    if internal:
        raise InvalidRequest("--internal networks are not supported by this version of pynet")
    return NetworkOptions(bridge_name=values.get(BRIDGE_NAME), ipv6=_flag(options, ENABLE_IPV6),
                          internal=internal)
