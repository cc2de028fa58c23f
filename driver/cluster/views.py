"""The cluster as `pynet cluster` shows it, read through pynet's socket:
every host (alive, epoch, underlay address, version), every cluster network
(its mode, VNI if any, MTU, subnets, blocks by host) and, for this host's
networks, what the mode holding it says of its peers (each remote container
and whether the kernel holds its entries or route)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from .keys import subnet_of_key

if TYPE_CHECKING:
    from .assembly import Cluster


async def cluster_view(cluster: "Cluster") -> dict:
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
    for key, value in (await etcd.get_prefix(keys.all("networks")))[0]:
        name, definition = keys.parts(key)[1], json.loads(value)
        entry = {"name": name, **definition, "blocks": {h: sorted(b) for h, b in blocks[name].items()},
                 "here": False}
        for local_view in cluster.local_views:
            local = await local_view(name)
            if local is not None:  # {"device", "peers", "problems"?} of the mode that holds it here
                entry.update(local, here=True)
                break
        networks.append(entry)
    return {"host": cluster.membership.host, "registered": cluster.membership.alive.is_set(),
            "etcd": cluster.etcd.settings.describe(), "hosts": hosts, "networks": networks}
