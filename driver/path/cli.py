"""`pynet path CONTAINER|ENDPOINT`: a container's packet path, as pynet's socket
answers it (GET /debug/path), named with Docker's names when Docker answers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

from ..client import ClientError
from .model import parse_destination

MARK = {True: "ok", False: "✗"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="CONTAINER|ENDPOINT", help="a container's name or ID (Docker), or an"
                        " endpoint ID or prefix (pynet)")
    parser.add_argument("--network", help="the container's network to follow (Docker name or ID prefix), when it"
                        " has several of pynet's")
    parser.add_argument("--to", metavar="ADDRESS[:PORT]", help="where a packet from the container to this address"
                        " goes next, and which rule passes, drops or rewrites it (read from the rules and routes;"
                        " nothing is sent)")
    parser.add_argument("--proto", default="tcp", choices=("tcp", "udp", "sctp"), help="with --to and a port")


def _endpoint_of(ctx, args, pynet_ids: set[str]) -> tuple[str, Optional[str]]:
    """(what to ask pynet for, the container's name if Docker named one)."""
    docker = ctx.docker
    if docker is None:
        return args.target, None
    mine = {eid: e for eid, e in docker["endpoints"].items()
            if e["container"] == args.target or (len(args.target) >= 4 and e["container_id"].startswith(args.target))}
    if not mine:
        return args.target, None
    container = next(iter(mine.values()))["container"]
    ours = {eid: e for eid, e in mine.items() if eid in pynet_ids}
    if args.network:
        ours = {eid: e for eid, e in ours.items()
                if args.network in (e["network"],) or e["network_id"].startswith(args.network)}
    if not ours:
        networks = ", ".join(sorted(e["network"] for e in mine.values()))
        raise ClientError(f"container {container} has no endpoint on "
                          + (f"pynet network {args.network!r}" if args.network else "a pynet network")
                          + f" (its networks: {networks})")
    if len(ours) > 1:
        raise ClientError(f"container {container} is on several of pynet's networks"
                          f" ({', '.join(sorted(e['network'] for e in ours.values()))}): pick one with --network")
    return next(iter(ours)), container


async def cmd_path(ctx, args) -> int:
    from urllib.parse import urlencode
    if args.to:
        try:
            parse_destination(args.to, args.proto)
        except ValueError as exc:
            print(f"pynet: --to: {exc}", file=sys.stderr)
            return 2
    state = await ctx.pynet.get("/debug/state")
    endpoint, container = _endpoint_of(ctx, args, {e["id"] for e in state["endpoints"]})
    query = {"endpoint": endpoint, **({"to": args.to, "proto": args.proto} if args.to else {})}
    status, body = await ctx.pynet.ask(f"/debug/path?{urlencode(query)}")
    if status != 200 or not isinstance(body, dict) or "Err" in body:
        why = body.get("Err") if isinstance(body, dict) else f"HTTP {status}: {body}"
        if status == 404 and ctx.docker is not None and container is None:
            why = f"no container {args.target!r} on this host's Docker, and {why}"
        print(f"pynet: {why}", file=sys.stderr)
        return 2
    body["container"] = container or ctx.container_of(body["endpoint"])
    body["network_name"] = ctx.network_name(body["network"])
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print(render(body))
    return 0 if body["ok"] else 1


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return ", ".join(map(str, v)) or "-"
    if isinstance(v, dict):
        return ", ".join(f"{k} {n}" for k, n in v.items()) or "-"
    return "-" if v in (None, "") else str(v)


def _item(kind: str, item: dict) -> str:
    if "rule" in item and "published" not in item:
        count = "MISSING" if not item["present"] else f"{item['packets']} pkts"
        return f"{count:>12}  {item['rule']}"
    if "published" in item:
        count = "MISSING" if not item["present"] else f"{item['packets']} pkts"
        socket = "socket held" if item["socket_held"] else "SOCKET NOT HELD"
        return f"{item['published']}  ({socket}; {count})  {item['rule']}"
    state = "ok" if item.get("in_kernel") and not item.get("unexpected") else (
        "UNEXPECTED" if item.get("unexpected") else "OFF-SEGMENT" if item.get("off_segment") else "MISSING")
    via = item.get("vtep") or item.get("via") or "-"
    mac = f" {item['mac']}" if item.get("mac") else ""
    return f"{item.get('host', '?'):<12} {item['ip']:<16}{mac} via {via}  {state}"


def render(body: dict) -> str:
    head = (f"container {body['container']}, " if body.get("container") not in (None, "-") else "") + \
        f"endpoint {body['endpoint'][:12]}, network " + \
        (f"{body['network_name']} ({body['network'][:12]})" if body.get("network_name") not in (None, "-")
         else body["network"][:12]) + f", {body['mode']} mode"
    lines = [head, ""]
    for n, hop in enumerate(body["hops"], 1):
        lines.append(f"{n:>2}. {hop['kind']:<10} {hop['name']:<28} {MARK[hop['ok']]}")
        holds = " · ".join(f"{k.replace('_', ' ')} {_value(v)}" for k, v in hop["holds"].items())
        if holds:
            lines.append(f"      {holds}")
        for problem in hop["problems"]:
            lines.append(f"      ✗ {problem['what']}")
            lines.append(f"        repair: {problem['repair']}")
        for item in hop["items"]:
            lines.append(f"      {_item(hop['kind'], item)}")
    if "to" in body:
        lines += ["", f"to {body['to']['destination']}:"]
        for step in body["to"]["steps"]:
            rule = f"  [{step['rule']}" + (f", {step['packets']} pkts" if step["packets"] is not None else "") + "]" \
                if step["rule"] else ""
            lines.append(f"  {step['at']:<10} {step['verdict'].upper():<8} {step['what']}{rule}")
    problems = sum(len(h["problems"]) for h in body["hops"])
    lines += ["", "every hop agrees with pynet's state" if not problems else
              f"{problems} problem(s); `pynet doctor --repair` fixes what it names"]
    return "\n".join(lines)
