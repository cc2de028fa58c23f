"""The cluster as `pynet cluster` shows it, read through pynet's socket:
every host (alive, epoch, VTEP, version), every cluster network (VNI, MTU,
subnets, blocks by host) and, for this host's networks, each remote
container with whether the kernel's neighbour and forwarding entries match."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from ..kernel import vxlan
from ..cluster.keys import subnet_of_key

if TYPE_CHECKING:
    from .assembly import Overlay


async def cluster_view(overlay: "Overlay") -> dict:
    cluster = overlay.cluster
    etcd, keys = cluster.etcd, cluster.keys
    alive = {keys.parts(k)[1]: json.loads(v) for k, v in (await etcd.get_prefix(keys.all("hosts")))[0]}
    epochs = {keys.parts(k)[1]: int(v) for k, v in (await etcd.get_prefix(keys.all("epochs")))[0]}
    now = time.time()
    hosts = []
    for name in sorted(set(alive) | set(epochs)):
        record = alive.get(name, {})
        away = cluster.reaper.away_since.get(name)
        hosts.append({"host": name, "alive": name in alive, "epoch": epochs.get(name), "vtep": record.get("vtep"),
                      "version": record.get("version"), "this": name == cluster.membership.host,
                      "away_seconds": round(now - away, 1) if away is not None and name not in alive else None})
    blocks: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for key, value in (await etcd.get_prefix(keys.all("blocks")))[0]:
        parts = keys.parts(key)
        blocks[parts[1]][json.loads(value).get("host", "?")].append(subnet_of_key(parts[2]))
    networks = []
    local = {n.name: n for n in overlay.mode.networks.values()}
    for key, value in (await etcd.get_prefix(keys.all("networks")))[0]:
        name, definition = keys.parts(key)[1], json.loads(value)
        entry = {"name": name, **definition, "blocks": {h: sorted(b) for h, b in blocks[name].items()},
                 "here": name in local}
        if name in local:
            entry["device"] = local[name].device
            entry["peers"] = await _peers(overlay, name, local[name].device)
        networks.append(entry)
    return {"host": cluster.membership.host, "registered": cluster.membership.alive.is_set(),
            "etcd": cluster.etcd.settings.describe(), "hosts": hosts, "networks": networks}


async def _peers(overlay: "Overlay", name: str, device: str) -> list[dict]:
    neigh, fdb = await vxlan.peers(overlay.peers.ipr, device)
    out = []
    wanted = overlay.peers.wanted(name)
    for ip, peer in sorted(wanted.items()):
        out.append({"ip": ip, "mac": peer.mac, "vtep": peer.vtep,
                    "in_kernel": neigh.get(ip) == peer.mac and fdb.get(peer.mac) == peer.vtep})
    out += [{"ip": ip, "mac": mac, "vtep": fdb.get(mac), "in_kernel": True, "unexpected": True}
            for ip, mac in sorted(neigh.items()) if ip not in wanted]
    return out
