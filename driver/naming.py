"""Names and markers pynet gives kernel objects, derived from Docker's IDs.

Interface names are at most 15 characters (IFNAMSIZ - 1). Every link pynet
creates carries an ifalias naming its owner, so pynet can tell its own links
(including leftovers of a crash) from anybody else's.
"""

from __future__ import annotations

import hashlib
import re
from typing import Optional

IFNAME_MAX = 15
BRIDGE_PREFIX = "pn-"
HOST_VETH_PREFIX = "pnh"
PEER_VETH_PREFIX = "pnc"
ALIAS_PREFIX = "pynet:"

_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")


def short(object_id: str) -> str:
    """The 12-character form Docker prints."""
    return object_id[:12]


def bridge_name(network_id: str) -> str:
    return BRIDGE_PREFIX + short(network_id)


def veth_names(endpoint_id: str) -> tuple[str, str]:
    """(host end, container end) of an endpoint's veth pair."""
    return HOST_VETH_PREFIX + short(endpoint_id), PEER_VETH_PREFIX + short(endpoint_id)


def network_alias(network_id: str) -> str:
    return f"{ALIAS_PREFIX}network:{network_id}"


def endpoint_alias(endpoint_id: str) -> str:
    return f"{ALIAS_PREFIX}endpoint:{endpoint_id}"


def endpoint_mac(endpoint_id: str) -> str:
    """A stable, locally administered unicast MAC for an endpoint."""
    digest = hashlib.sha256(endpoint_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def check_ifname(name: str) -> str:
    """Raise ValueError unless `name` is a safe Linux interface name."""
    if not isinstance(name, str) or not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not a valid interface name (at most {IFNAME_MAX} characters"
                         " of letters, digits, '_', '.', '-', not starting with '.' or '-')")
    return name


def firewall_tag(network_id: str) -> str:
    """The comment on every firewall rule of a network."""
    return f"pynet:{short(network_id)}"


_TAGGED = re.compile(r'--comment "pynet:([0-9a-f]{12})"')
_DERIVED = re.compile(r"^(pn-|pnh|pnc)[0-9a-f]{12}$")


def tagged_network(rule_text: str) -> Optional[str]:
    """The short network ID a rule (as iptables -S prints it) is tagged with, if any."""
    m = _TAGGED.search(rule_text)
    return m.group(1) if m else None


def is_derived_name(name: str) -> bool:
    """Whether a link's name is one pynet derives from an ID (a bridge or a veth end)."""
    return bool(_DERIVED.match(name))
