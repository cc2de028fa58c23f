"""`pynet cluster`: the cluster as this host's pynet sees it."""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import table
from .settings import NEEDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remove-host", metavar="NAME", help="reclaim a host lost for good, now (never a live one)")


async def cmd_cluster(ctx, args) -> int:
    if args.remove_host:
        data = await ctx.pynet.post("/debug/cluster/remove-host", {"host": args.remove_host}, missing=None)
    else:
        data = await ctx.pynet.get("/debug/cluster", missing=None)
    if data is None:  # no such endpoint: the cluster is off
        print(f"pynet: this pynet runs without {NEEDS}", file=sys.stderr)
        return 2
    if args.remove_host:
        print(data["done"])
        return 0
    if "Err" in data:
        print(f"pynet: {data['Err']}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"host {data['host']} ({'registered' if data['registered'] else 'NOT registered'}), etcd {data['etcd']}")
    print(table([[h["host"] + (" *" if h["this"] else ""), "yes" if h["alive"] else
                  f"no ({h['away_seconds']} s)" if h["away_seconds"] is not None else "no",
                  h["epoch"], h["vtep"] or "-", h["version"] or "-"] for h in data["hosts"]],
                ["HOST", "ALIVE", "EPOCH", "UNDERLAY", "VERSION"]))
    for net in data["networks"]:
        kind = f"VNI {net['vni']}" if "vni" in net else net.get("mode", "?")
        print(f"\nnetwork {net['name']}: {kind}, MTU {net['mtu']}, {', '.join(net['subnets'])}"
              + (f", device {net['device']} here" if net["here"] else ", not on this host"))
        for problem in net.get("problems", []):
            print(f"  PROBLEM: {problem}")
        for host, blocks in sorted(net["blocks"].items()):
            print(f"  blocks of {host}: {', '.join(blocks)}")
        if net.get("peers"):
            print(table([["  " + p["ip"], p.get("host") or "-", p.get("via") or "-", p.get("mac") or "-",
                          "unexpected" if p.get("unexpected") else "OFF-SEGMENT" if p.get("off_segment")
                          else "ok" if p["in_kernel"] else "MISSING"]
                         for p in net["peers"]], ["  PEER", "HOST", "VIA", "MAC", "KERNEL"]))
    return 0
