"""Shared fixtures of the kernel tier: a throwaway network namespace per test.

Results are checked with iproute2 and iptables (`ip -n NS -j ...`,
`bridge -n NS -j link`, `ip netns exec NS iptables -S`), never with pyroute2,
so a pyroute2 misunderstanding cannot hide behind itself. pyroute2 is only
the handle under test, opened with flags=0 so it never creates a namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess

import pytest
from pyroute2 import AsyncIPRoute

NETNS_PREFIX = "pynet-t-"
TOOLS = ("ip", "bridge", "iptables", "ip6tables")


@pytest.fixture(autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root (network namespaces, bridges, iptables)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"kernel tests need {', '.join(missing)}")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Netns:
    """One test namespace, and how to look at it with iproute2 and iptables."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the namespace."""
        return run("ip", "netns", "exec", self.name, *argv, check=check)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`ip -n NS ARGS`, e.g. ns.ip("link", "add", "d0", "type", "dummy")."""
        return run("ip", "-n", self.name, *args, check=check)

    def ip_json(self, *args: str) -> list[dict]:
        out = run("ip", "-n", self.name, "-j", *args).stdout
        return json.loads(out) if out.strip() else []

    def links(self) -> dict[str, dict]:
        """ifname -> `ip -d -j link` entry."""
        return {entry["ifname"]: entry for entry in self.ip_json("-d", "link", "show")}

    def link(self, name: str) -> dict | None:
        return self.links().get(name)

    def addresses(self, name: str) -> list[dict]:
        """addr_info of one link: [{'family', 'local', 'prefixlen', ...}]."""
        entries = self.ip_json("addr", "show", "dev", name)
        return entries[0]["addr_info"] if entries else []

    def global_addresses(self, name: str) -> list[str]:
        return sorted(f"{a['local']}/{a['prefixlen']}" for a in self.addresses(name)
                      if a.get("scope") == "global")

    def bridge_ports(self) -> dict[str, str]:
        """port ifname -> its bridge, from `bridge -j link`."""
        out = run("bridge", "-n", self.name, "-j", "link").stdout
        return {p["ifname"]: p.get("master") for p in (json.loads(out) if out.strip() else [])}

    def iptables(self, family: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.exec("iptables" if family == 4 else "ip6tables", *args, check=check)

    def rules(self, family: int = 4, table: str = "filter") -> list[str]:
        """`iptables -S` lines (ip6tables for family 6)."""
        return self.iptables(family, "-t", table, "-S").stdout.splitlines()

    def chain(self, chain: str, family: int = 4) -> list[str]:
        """The -A lines of one chain, in order."""
        return [r for r in self.rules(family) if r.startswith(f"-A {chain} ")]

    @staticmethod
    def kind(entry: dict) -> str | None:
        """info_kind of an `ip -d -j link` entry (bridge, veth, dummy...)."""
        return entry.get("linkinfo", {}).get("info_kind")

    @staticmethod
    def is_up(entry: dict) -> bool:
        return "UP" in entry.get("flags", [])

    def pynet_links(self) -> list[str]:
        return sorted(n for n in self.links() if n.startswith(("pn-", "pnh", "pnc")))


@pytest.fixture
def ns(_needs_root):
    """A fresh namespace `pynet-t-<random>`, deleted afterwards whatever happens."""
    name = NETNS_PREFIX + secrets.token_hex(4)
    run("ip", "netns", "add", name)
    try:
        yield Netns(name)
    finally:
        # Deleting the namespace takes its links and its iptables tables with it.
        run("ip", "netns", "del", name, check=False)


@pytest.fixture
async def ipr(ns):
    """pyroute2's handle in the namespace; flags=0: never create one."""
    handle = AsyncIPRoute(netns=ns.name, flags=0)
    try:
        yield handle
    finally:
        handle.close()



@pytest.fixture(scope="session")
def etcd_server():
    """One private etcd on loopback for the session (each test takes its own key prefix)."""
    from tests.support.etcd import TestEtcd, etcd_available
    if not etcd_available():
        if os.environ.get("PYNET_E2E") == "required":
            pytest.fail("etcd is not installed (apt-get install etcd-server): the cluster tests cannot run")
        pytest.skip("cluster tests need etcd (apt-get install etcd-server)")
    server = TestEtcd()
    try:
        server.start()
        yield server
    finally:
        server.close()
