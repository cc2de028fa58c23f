"""The `pynet` command: run the plugin, or ask a running one what it knows."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Optional

from . import __version__, registry
from .config import add_serve_arguments, config_from_args
from .path import cli as path_cli


def table(rows: list[list[str]], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def show(args, data, rows: list[list], header: list[str]) -> int:
    """JSON with --json, else a table."""
    print(json.dumps(data, indent=2) if args.json else table(rows, header))
    return 0


def host_port(p: dict) -> str:
    host = f"[{p['host_ip']}]" if ":" in p["host_ip"] else p["host_ip"]
    return f"{host}:{p['host_port']}"


def short(object_id: Optional[str]) -> str:
    return (object_id or "-")[:12]


class Context:
    def __init__(self, pynet, docker_view: Optional[dict]) -> None:
        self.pynet = pynet
        self.docker = docker_view

    def network_name(self, network_id: str) -> str:
        if self.docker and network_id in self.docker["networks"]:
            return self.docker["networks"][network_id]["Name"]
        return "-"

    def container_of(self, endpoint_id: str) -> str:
        if self.docker and endpoint_id in self.docker["endpoints"]:
            return self.docker["endpoints"][endpoint_id]["container"]
        return "-"

    def named(self, subject: str) -> str:
        """A finding's subject with the container's name, when it is an endpoint Docker knows."""
        parts = subject.split()
        if not self.docker or len(parts) < 2 or parts[0] != "endpoint":
            return subject
        names = {e["container"] for eid, e in self.docker["endpoints"].items() if eid.startswith(parts[1])}
        return f"{subject}, container {names.pop()}" if len(names) == 1 else subject

    def resolve(self, state: dict, arg: Optional[str]) -> Optional[str]:
        """A network named by Docker name, ID or ID prefix -> its ID."""
        if not arg:
            return None
        ids = [n["id"] for n in state["networks"]]
        by_name = [i for i in ids if self.network_name(i) == arg]
        matches = by_name or [i for i in ids if i.startswith(arg)]
        if len(matches) != 1:
            raise SystemExit(f"pynet: network {arg!r} is {'ambiguous' if matches else 'unknown to pynet'}")
        return matches[0]


# --- commands ----------------------------------------------------------------

async def cmd_status(ctx: Context, args) -> int:
    health = await ctx.pynet.get("/healthz")
    if args.json:
        print(json.dumps(health, indent=2))
    else:
        print(f"pynet {health['version']}: {'ready' if health['ready'] else 'NOT READY'}"
              f" (up {health['uptime_seconds']} s)")
        print(f"socket   {ctx.pynet.socket}")
        print(f"state    {health['state_dir']}")
        print(f"networks {health['networks']}, endpoints {health['endpoints']}")
        for check, result in health["checks"].items():
            print(f"  {check:<11}{result}")
        settings = health.get("settings", {})
        print("settings " + ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}"
                                      for k, v in settings.items() if v != ""))
    return 0 if health["ready"] else 1


async def cmd_networks(ctx: Context, args) -> int:
    state = await ctx.pynet.get("/debug/state")
    rows = [[short(n["id"]), ctx.network_name(n["id"]), n["bridge"],
             ", ".join(s["pool"] for s in n["subnets"]) or "-",
             ", ".join(s["gateway"] for s in n["subnets"] if s["gateway"]) or "-",
             n["mode"], n["endpoints"]] for n in state["networks"]]
    return show(args, state["networks"], rows,
                ["NETWORK", "NAME", "BRIDGE", "SUBNETS", "GATEWAYS", "MODE", "ENDPOINTS"])


async def cmd_endpoints(ctx: Context, args) -> int:
    state = await ctx.pynet.get("/debug/state")
    wanted = ctx.resolve(state, args.network)
    eps = [e for e in state["endpoints"] if wanted in (None, e["network"])]
    rows = [[short(e["id"]), ctx.container_of(e["id"]), short(e["network"]), e["host_interface"],
             ", ".join(e["addresses"]) or "-", e["mac"],
             ", ".join(f"{host_port(p)}->{p['port']}/{p['proto']}" for p in e["published"]) or "-"]
            for e in eps]
    return show(args, eps, rows, ["ENDPOINT", "CONTAINER", "NETWORK", "HOST IF", "ADDRESSES", "MAC", "PORTS"])


async def cmd_ports(ctx: Context, args) -> int:
    state = await ctx.pynet.get("/debug/state")
    rows, data = [], []
    for e in state["endpoints"]:
        for p in e["published"]:
            data.append({**p, "endpoint": e["id"], "network": e["network"], "container": ctx.container_of(e["id"])})
            rows.append([host_port(p), p["proto"], f"{p['container_ip']}:{p['port']}",
                         ctx.container_of(e["id"]), short(e["id"]), short(e["network"])])
    return show(args, data, rows, ["HOST", "PROTO", "CONTAINER ADDRESS", "CONTAINER", "ENDPOINT", "NETWORK"])


async def cmd_ipam(ctx: Context, args) -> int:
    state = await ctx.pynet.get("/debug/state")
    wanted = ctx.resolve(state, args.network)
    pools = [p for p in state["pools"] if wanted in (None, p["network"])]
    if args.json:
        print(json.dumps(pools, indent=2))
        return 0
    rows = [[p["id"], short(p["network"]), p["range"], p["used"], p["free"], f"{p['utilisation']:.1%}"]
            for p in pools]
    print(table(rows, ["POOL", "NETWORK", "RANGE", "USED", "FREE", "UTILISATION"]))
    for p in pools:
        if p["addresses"]:
            print(f"\n{p['id']}")
            print(table([[a, holder] for a, holder in sorted(p["addresses"].items())], ["ADDRESS", "HELD BY"]))
    return 0


def docker_findings(state: dict, view: Optional[dict]) -> list[dict]:
    """Differences between pynet's state and Docker's (when Docker answers)."""
    if view is None:
        return []
    findings: list[dict[str, Any]] = []
    known = {n["id"] for n in state["networks"]}
    for nid, net in view["networks"].items():
        if "pynet" in (net.get("Driver") or "") and nid not in known:
            findings.append({"subject": f"network {short(nid)} ({net['Name']})",
                             "problem": "Docker has it, pynet has no record of it",
                             "meaning": "containers cannot join it (network not found)",
                             "fix": f"recreate it: docker network rm {net['Name']} && docker network create ..."})
    for n in state["networks"]:
        if n["id"] not in view["networks"]:
            findings.append({"subject": f"network {short(n['id'])}", "problem": "pynet has it, Docker does not",
                             "meaning": "a bridge and rules nobody uses",
                             "fix": "pynet doctor --repair deletes it (DeleteNetwork)",
                             "repair": ("/NetworkDriver.DeleteNetwork", {"NetworkID": n["id"]})})
    for e in state["endpoints"]:
        if e["sandbox"] and e["id"] not in view["endpoints"] and e["network"] in view["networks"]:
            findings.append({"subject": f"endpoint {short(e['id'])}", "problem": "no Docker container has it",
                             "meaning": "an address and a veth held for nothing",
                             "fix": "reconciliation drops it once its sandbox is gone; else restart the container"})
    return findings


async def cmd_doctor(ctx: Context, args) -> int:
    async def look() -> list[dict]:
        report = await ctx.pynet.get("/debug/doctor")
        state = await ctx.pynet.get("/debug/state")
        return report["findings"] + docker_findings(state, ctx.docker)

    findings = [{**f, "subject": ctx.named(f["subject"])} for f in await look()]
    if args.repair and findings:
        done = (await ctx.pynet.post("/debug/reconcile"))["done"]
        for f in findings:
            if f.get("repair"):
                path, body = f["repair"]
                await ctx.pynet.post(path, body)
                done[f"{f['subject']}: deleted"] = 1
        if not args.json:
            print("repaired: " + (", ".join(f"{n} {what}" for what, n in done.items()) or "nothing"))
        findings = [{**f, "subject": ctx.named(f["subject"])} for f in await look()]
    if args.json:
        print(json.dumps([{k: v for k, v in f.items() if k != "repair"} for f in findings], indent=2))
    elif not findings:
        print("pynet doctor: state, kernel, firewall" + (" and Docker" if ctx.docker else "") + " agree")
    else:
        for f in findings:
            print(f"✗ {f['subject']}: {f['problem']}\n    means: {f['meaning']}\n    fix:   {f['fix']}")
        print(f"{len(findings)} problem(s)" + ("" if args.repair else "; `pynet doctor --repair` fixes"
                                                " what is safe to fix"))
    return 1 if findings else 0


COMMANDS = {"status": cmd_status, "networks": cmd_networks, "endpoints": cmd_endpoints,
            "ports": cmd_ports, "ipam": cmd_ipam, "doctor": cmd_doctor, "path": path_cli.cmd_path}


def all_commands() -> dict:
    """pynet's commands and those each mode adds."""
    return {**COMMANDS, **{c.name: c.run for spec in registry.specs() for c in spec.commands}}


async def run_command(args) -> int:
    from .client import ClientError, Pynet, docker_view, find_socket
    try:
        pynet = Pynet(find_socket(args.socket))
        view = await docker_view() if args.command in ("networks", "endpoints", "ports", "ipam", "doctor",
                                                      "path") else None
        return await all_commands()[args.command](Context(pynet, view), args)
    except ClientError as exc:
        print(f"pynet: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynet", description="Docker network and IPAM plugin")
    parser.add_argument("--version", action="version", version=f"pynet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the plugin")
    add_serve_arguments(serve)
    helps = {"status": "health, version, counts, store path",
             "networks": "networks pynet holds",
             "endpoints": "endpoints (of one network)",
             "ports": "published ports (Docker cannot show them)",
             "ipam": "pools: used, free, and who holds each address",
             "doctor": "compare state, kernel, firewall and Docker; --repair fixes what is safe",
             "path": "a container's packet path, hop by hop, checked against pynet's state"}
    extra = {c.name: c for spec in registry.specs() for c in spec.commands}  # what the modes add
    for name, text in [*helps.items(), *((c.name, c.help) for c in extra.values())]:
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--socket", help="pynet's socket (default: found by itself)")
        sub.add_argument("--json", action="store_true", help="JSON for scripts")
        if name in ("endpoints", "ipam"):
            sub.add_argument("network", nargs="?", help="Docker name, ID or ID prefix")
        if name == "doctor":
            sub.add_argument("--repair", action="store_true", help="fix what is safe to fix")
        if name == "path":
            path_cli.add_arguments(sub)
        if name in extra:
            extra[name].add_arguments(sub)
    args = parser.parse_args(argv)

    if args.command == "serve":
        from .app import serve as run, setup_logging
        try:
            config = config_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
        setup_logging(config.log_level, config.log_format)
        asyncio.run(run(config))
        return 0
    return asyncio.run(run_command(args))


if __name__ == "__main__":
    sys.exit(main())
