"""A cluster network's definition: what every host that creates it must
agree on (its mode, subnets, gateways, MTU, ...), kept in etcd under its
name. CreateNetwork carries no network name, so the name comes from the
network's pynet.cluster option; Docker gives each host its own network ID.
The first host writes the definition; a host that asks for another one is
refused with the difference."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Optional

from ipam.service import CLUSTER_OPTION, cluster_name

from .. import naming
from ..errors import Conflict, InvalidRequest
from ..wire import GENERIC, CreateNetworkRequest
from .etcd import Etcd
from .keys import Keys

# The overlay came first and its definitions carry no mode.
DEFAULT_MODE = "overlay"


def requested(req: CreateNetworkRequest, mode: str) -> tuple[str, dict, dict]:
    """(cluster network name, options, generic options without the name) of a
    CreateNetwork in a cluster mode; refused without the name."""
    nid = naming.short(req.NetworkID)
    options = dict(req.Options or {})
    generic = dict(options.get(GENERIC) or {})
    name = cluster_name(generic, f"network {nid}")
    if name is None:
        raise InvalidRequest(f"network {nid}: the {mode} mode needs -o {CLUSTER_OPTION}=NAME (and --ipam-opt"
                             f" {CLUSTER_OPTION}=NAME), the same on every host")
    generic.pop(CLUSTER_OPTION)
    return name, options, generic


def requested_mtu(generic: dict, option: str, limit: int, subject: str, why: str) -> int:
    """The MTU a cluster network asks for (`option` in its generic options), or `limit`,
    the most its mode allows (`why` says why)."""
    if option not in generic:
        return limit
    value = generic[option]
    if not str(value).isdigit() or not 68 <= int(value) <= limit:
        raise InvalidRequest(f"{subject}: MTU {value!r}: it must be a number from 68 to {limit} ({why})")
    return int(value)


def definition_of(req: CreateNetworkRequest, mtu: int) -> dict[str, Any]:
    """What every host must agree on, from this host's CreateNetwork."""
    data = [*(req.IPv4Data or []), *(req.IPv6Data or [])]
    return {"subnets": sorted(d.Pool for d in data), "gateways": sorted(d.Gateway for d in data if d.Gateway),
            "mtu": mtu}


def differences(ours: dict, theirs: dict, claimed: tuple[str, ...] = ()) -> str:
    """What differs, but for what the first host claimed for all (e.g. the VNI)."""
    keys = sorted(set(ours) | set(theirs))
    return "; ".join(f"{k}: {ours.get(k)!r} here, {theirs.get(k)!r} in the cluster"
                     for k in keys if k not in claimed and ours.get(k) != theirs.get(k))


async def agree(etcd: Etcd, keys: Keys, name: str, mode: str, ours: dict, subject: str,
                claim: Optional[Callable[[], Awaitable[dict]]] = None, claimed: tuple[str, ...] = ()) -> dict:
    """The cluster's definition of `name`: ours if we are first (with what `claim`
    adds, such as a VNI: the keys `claimed`), else theirs if it matches."""
    key = keys.network(name)
    mine = ours if mode == DEFAULT_MODE else {**ours, "mode": mode}
    existing = await etcd.get(key)
    if existing is None:
        first = {**mine, **(await claim() if claim is not None else {})}
        tx = etcd.tx
        ok, answer = await etcd.transaction([tx.create(key) == 0], [tx.put(key, json.dumps(first).encode())],
                                            [tx.get(key)])
        if ok:
            return first
        existing = answer[0][0][0]
    theirs = json.loads(existing)
    if theirs.get("mode", DEFAULT_MODE) != mode:
        raise Conflict(f"{subject}: cluster network {name} is a {theirs.get('mode', DEFAULT_MODE)} network in the"
                       f" cluster; this host asks for a {mode} one")
    diff = differences(mine, theirs, claimed)
    if diff:
        raise Conflict(f"{subject}: cluster network {name} is defined differently in the cluster: {diff}")
    return theirs
