"""The Reconciler against a real namespace, a real state database and the real IPAM.

Everything is wired as driver/app.py wires it (one Database with every
schema, IpamService told of releases by the driver, Reconciler given
IpamService.reclaim), but inside the `ns` fixture's namespace: pyroute2 with
netns=NS, iptables and sysctl through `ip netns exec NS`, never the host's.
Networks and endpoints are made through the real handlers with wire models,
as Docker would make them.

Sandboxes (Docker's SandboxKey) are real network namespaces bind-mounted on
files of a directory under tmp_path (`unshare --net=FILE true`), which is
the driver's netns_dirs: one is alive while the file is a mount point;
unmounting and deleting it kills it. Joined endpoints get their container
end moved into their sandbox, as Docker does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import secrets
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import pytest
from pyroute2 import AsyncIPRoute

from driver import naming, wire
from driver.app import assemble, open_state
from driver.config import Config
from driver.bridge import repair as bridge_repair, store as driver_store
from driver.db import Database
from driver.firewall import Firewall
from driver.kernel.iptables import Iptables
from driver.kernel.sysctl import Sysctl
from driver.bridge import BridgeMode
from driver.reconcile import Reconciler
from driver.chains import (CHAINS, DNAT, FAMILIES, FORWARD, ISOLATION, POSTROUTING, base_chain_rules,
                          base_jumps)
from ipam import wire as ipam_wire
from ipam.store import sqlite as ipam_store
from ipam.addr import parse_address
from ipam.service import GATEWAY_TYPE, LOCAL_SPACE, IpamService

from .conftest import run

pytestmark = pytest.mark.kernel


DEFAULT_POOLS = "10.200.0.0/16/24"
PORTS = {"com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}
REBUILT = "endpoints rebuilt"
# What the first run writes into an empty namespace, per family: pynet's chains,
# the jumps into them, the isolation jump and the fixed isolation drops.
BASE_LINES = (len(FAMILIES) * sum(len(c) for c in CHAINS.values()) + len(base_jumps())
              + len(base_chain_rules()))


def new_id() -> str:
    return secrets.token_hex(32)


# --- sandboxes -----------------------------------------------------------------------------


def _mounts_under(directory: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(directory + "/")]


class Sandboxes:
    """Network namespaces bind-mounted on files of one directory (Docker's netns dir)."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory)

    def create(self) -> str:
        path = os.path.join(self.dir, secrets.token_hex(6))
        open(path, "w").close()
        run("unshare", f"--net={path}", "true")
        assert os.path.ismount(path)
        return path

    def kill(self, path: str) -> None:
        """The container is gone: its namespace (and every link in it) goes."""
        for _ in range(10):
            if not os.path.ismount(path):
                break
            run("umount", path)
        if os.path.exists(path):
            os.unlink(path)

    def link_names(self, path: str) -> list[str]:
        out = run("nsenter", f"--net={path}", "ip", "-j", "link", "show").stdout
        return sorted(e["ifname"] for e in json.loads(out) if e["ifname"] != "lo")

    def cleanup(self) -> None:
        for _ in range(10):
            points = _mounts_under(self.dir)
            if not points:
                break
            for p in sorted(set(points), reverse=True):
                run("umount", p, check=False)
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


@pytest.fixture
def sandboxes(tmp_path, _needs_root):
    sb = Sandboxes(str(tmp_path / "netns"))
    try:
        yield sb
    finally:
        sb.cleanup()
        assert _mounts_under(sb.dir) == [], "a sandbox mount was left behind"


# --- pynet, wired as driver/app.py does -----------------------------------------------------


@dataclass
class Pynet:
    db: Database
    ipr: AsyncIPRoute
    driver: BridgeMode
    ipam: IpamService
    reconciler: Reconciler
    closed: bool = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.db.close()
            self.ipr.close()


@pytest.fixture
async def pynet(ns, tmp_path, sandboxes):
    """start(min_age) -> a freshly loaded Pynet on the test's one state database."""
    started: list[Pynet] = []
    path = str(tmp_path / "state" / "pynet.db")
    prefix = ["ip", "netns", "exec", ns.name]

    async def start(min_age: float = 60.0) -> Pynet:
        db = await open_state(path)
        ipr = AsyncIPRoute(netns=ns.name, flags=0)
        config = Config(default_pools=DEFAULT_POOLS, netns_dirs=(sandboxes.dir,), stale_after=min_age)
        core = await assemble(config, db, ipr, Firewall(Iptables(prefix=prefix)), Sysctl(prefix=prefix))
        p = Pynet(db, ipr, core.mode("bridge"), core.ipam, core.reconciler)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            await p.close()


# --- Docker's calls --------------------------------------------------------------------------


@dataclass
class Net:
    nid: str
    bridge: str
    pool_id: str
    gateway: str                   # 10.200.0.1/24
    aux: dict[str, str]            # name -> 10.200.0.9/24
    pool6_id: str = ""
    gateway6: str = ""

    @property
    def tag(self) -> str:
        return naming.firewall_tag(self.nid)


@dataclass
class Ep:
    eid: str
    net: Net
    address: str                   # with its prefix length, as Docker passes it
    address6: str = ""
    sandbox: str = ""

    @property
    def host(self) -> str:
        return naming.veth_names(self.eid)[0]

    @property
    def peer(self) -> str:
        return naming.veth_names(self.eid)[1]

    @property
    def ip(self):
        return parse_address(self.address)

    @property
    def ip6(self):
        return parse_address(self.address6) if self.address6 else None


async def request_address(p: Pynet, pool_id: str, address: str = "", gateway: bool = False) -> str:
    options = {"RequestAddressType": GATEWAY_TYPE} if gateway else None
    reply = await p.ipam.request_address(
        ipam_wire.RequestAddressRequest(PoolID=pool_id, Address=address, Options=options))
    return reply.Address


async def release(p: Pynet, pool_id: str, address: str) -> None:
    """ReleaseAddress, with the plain address Docker sends."""
    await p.ipam.release_address(ipam_wire.ReleaseAddressRequest(PoolID=pool_id, Address=plain(address)))


async def create_network(p: Pynet, subnet: str = "", aux: Optional[dict[str, int]] = None,
                         v6: str = "", generic: Optional[dict[str, str]] = None,
                         internal: bool = False, nid: Optional[str] = None) -> Net:
    """RequestPool, RequestAddress (gateway, aux addresses), CreateNetwork: as Docker does.

    `aux` gives aux addresses as offsets into the subnet.
    """
    nid = nid or new_id()
    pool = await p.ipam.request_pool(ipam_wire.RequestPoolRequest(AddressSpace=LOCAL_SPACE, Pool=subnet))
    gateway = await request_address(p, pool.PoolID, gateway=True)
    network = pool.Pool
    aux_addresses = {}
    for name, offset in (aux or {}).items():
        base = ipaddress.ip_network(network).network_address
        aux_addresses[name] = await request_address(p, pool.PoolID, str(base + offset))
    ipv6, pool6_id, gateway6 = [], "", ""
    if v6:
        pool6 = await p.ipam.request_pool(ipam_wire.RequestPoolRequest(AddressSpace=LOCAL_SPACE, Pool=v6,
                                                                        V6=True))
        pool6_id = pool6.PoolID
        gateway6 = await request_address(p, pool6_id, gateway=True)
        ipv6 = [{"AddressSpace": LOCAL_SPACE, "Pool": pool6.Pool, "Gateway": gateway6}]
    await p.driver.create_network(wire.CreateNetworkRequest.model_validate({
        "NetworkID": nid,
        "Options": {"com.docker.network.enable_ipv6": bool(v6), "com.docker.network.internal": internal,
                    "com.docker.network.generic": generic or {}},
        "IPv4Data": [{"AddressSpace": LOCAL_SPACE, "Pool": network, "Gateway": gateway,
                      "AuxAddresses": aux_addresses}],
        "IPv6Data": ipv6}))
    bridge = (generic or {}).get("com.docker.network.bridge.name") or naming.bridge_name(nid)
    return Net(nid, bridge, pool.PoolID, gateway, aux_addresses, pool6_id, gateway6)


async def create_endpoint(p: Pynet, ns, net: Net, sandbox: str = "", v6: bool = False,
                          move: bool = True, eid: Optional[str] = None) -> Ep:
    """RequestAddress, CreateEndpoint, and (with a sandbox) Join, then the container end
    moved into the sandbox as Docker moves it."""
    eid = eid or new_id()
    address = await request_address(p, net.pool_id)
    address6 = await request_address(p, net.pool6_id) if v6 else ""
    await p.driver.create_endpoint(wire.CreateEndpointRequest.model_validate({
        "NetworkID": net.nid, "EndpointID": eid,
        "Interface": {"Address": address, "AddressIPv6": address6, "MacAddress": ""}, "Options": PORTS}))
    ep = Ep(eid, net, address, address6)
    if sandbox:
        await p.driver.join(wire.JoinRequest.model_validate({
            "NetworkID": net.nid, "EndpointID": eid, "SandboxKey": sandbox, "Options": PORTS}))
        ep.sandbox = sandbox
        if move:
            ns.ip("link", "set", ep.peer, "netns", sandbox)
    return ep


# --- looking at the result -------------------------------------------------------------------


def saved_rules(ns) -> dict[tuple[int, str], list[str]]:
    """(family, table) -> the -A lines of iptables-save / ip6tables-save."""
    result = {}
    for family in FAMILIES:
        tool = "iptables-save" if family == 4 else "ip6tables-save"
        for table in ("filter", "nat"):
            out = ns.exec(tool, "-t", table).stdout
            result[(family, table)] = [line for line in out.splitlines() if line.startswith("-A ")]
    return result


def tagged(ns, tag: str) -> list[str]:
    return [line for lines in saved_rules(ns).values() for line in lines if f'"{tag}"' in line]


def flush_pynet_chains(ns) -> None:
    for family in FAMILIES:
        for table, chains in CHAINS.items():
            for chain in chains:
                ns.iptables(family, "-t", table, "-F", chain)


def wait_gone(ns, name: str, timeout: float = 5.0) -> None:
    """A namespace's destruction is asynchronous: wait for its veth's host end to go."""
    deadline = time.monotonic() + timeout
    while ns.link(name) is not None:
        assert time.monotonic() < deadline, f"{name} is still there"
        time.sleep(0.02)


async def address_rows(p: Pynet, pool_id: str) -> dict[str, str]:
    rows = await p.db.read(lambda c: c.execute(
        "SELECT address, kind FROM ipam_addresses WHERE pool_id = ?", (pool_id,)).fetchall())
    return dict(rows)


async def saved_endpoints(p: Pynet) -> set[str]:
    _, endpoints = await p.db.read(driver_store.load)
    return {e.endpoint_id for e in endpoints}


def plain(address: str) -> str:
    return str(parse_address(address))


class Clock:
    """time for a module, `offset` seconds in the future (time.monotonic untouched)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self.monotonic = time.monotonic

    def time(self) -> float:
        return time.time() + self.offset


# --- a reboot --------------------------------------------------------------------------------


@pytest.mark.parametrize("firewall", ["flushed", "wiped"])
async def test_reboot_puts_back_networks_and_drops_dead_endpoints(ns, pynet, sandboxes, caplog, firewall):
    """flushed: pynet's chains emptied; wiped: every table of the namespace emptied, as after a boot."""
    p = await pynet()
    assert await p.reconciler.run() == Counter({"firewall rules restored": BASE_LINES})  # as build() does
    a = await create_network(p, aux={"printer": 250})
    b = await create_network(p, "10.77.0.0/24", v6="fd00:77::/64",
                             generic={"com.docker.network.bridge.enable_icc": "false"})
    c = await create_network(p, "10.78.0.0/24", generic={"com.docker.network.bridge.name": "pnt-inner"},
                             internal=True)
    eps = [await create_endpoint(p, ns, a, sandboxes.create()),
           await create_endpoint(p, ns, a, sandboxes.create()),
           await create_endpoint(p, ns, a),                         # created, never joined
           await create_endpoint(p, ns, b, sandboxes.create(), v6=True),
           await create_endpoint(p, ns, c, sandboxes.create())]
    rules_before = saved_rules(ns)
    assert len(tagged(ns, a.tag)) > 0 and len(tagged(ns, b.tag)) > 0 and len(tagged(ns, c.tag)) > 0
    await p.close()

    # The reboot: no link, no rule of pynet's, no container.
    for name in ns.pynet_links() + ["pnt-inner"]:
        ns.ip("link", "del", name, check=False)
    if firewall == "flushed":
        flush_pynet_chains(ns)
    else:
        for family in FAMILIES:
            for table in ("filter", "nat"):
                ns.iptables(family, "-t", table, "-F")
                ns.iptables(family, "-t", table, "-X")
        assert not any(saved_rules(ns).values())
    for ep in eps:
        if ep.sandbox:
            sandboxes.kill(ep.sandbox)
    assert ns.pynet_links() == [] and ns.link("pnt-inner") is None
    assert all(tagged(ns, n.tag) == [] for n in (a, b, c))

    p = await pynet(min_age=0)
    assert set(p.driver.endpoints) == {ep.eid for ep in eps}
    wanted = sum(len(g) for g in p.driver.wanted_rules())
    caplog.set_level(logging.INFO, logger="pynet")
    base = len(base_chain_rules()) if firewall == "flushed" else BASE_LINES
    done = await p.reconciler.run()
    assert done == Counter({"bridges recreated": 3,
                            "stale endpoints reclaimed": len(eps),
                            "addresses reclaimed": len(eps) + 1,  # b's endpoint has two
                            "firewall rules restored": base + wanted})

    # Bridges, gateways, settings: as before the reboot.
    found = ns.links()
    for net, gateways in ((a, [a.gateway]), (b, sorted([b.gateway, b.gateway6])), (c, [c.gateway])):
        link = found[net.bridge]
        assert ns.kind(link) == "bridge" and ns.is_up(link)
        assert link["ifalias"] == naming.network_alias(net.nid)
        assert ns.global_addresses(net.bridge) == gateways
        localnet = ns.exec("sysctl", "-n", f"net/ipv4/conf/{net.bridge}/route_localnet").stdout.strip()
        assert localnet == ("0" if net is c else "1")  # an internal network needs no way out
    assert sorted(n for n in found if n != "lo") == sorted([a.bridge, b.bridge, c.bridge])
    assert saved_rules(ns) == rules_before

    # Dead endpoints: gone from memory and state, their addresses back in the IPAM.
    assert p.driver.endpoints == {} and await saved_endpoints(p) == set()
    assert await address_rows(p, a.pool_id) == {plain(a.gateway): "gateway",
                                                 plain(a.aux["printer"]): "static"}
    for net in (b, c):
        assert await address_rows(p, net.pool_id) == {plain(net.gateway): "gateway"}
    assert await address_rows(p, b.pool6_id) == {plain(b.gateway6): "gateway"}
    assert p.ipam.pools[a.pool_id].allocator.used_total == 2  # gateway + aux
    assert p.ipam.pools[b.pool_id].allocator.used_total == 1
    assert p.ipam.pools[b.pool6_id].allocator.used_total == 1
    assert p.ipam.pools[c.pool_id].allocator.used_total == 1
    messages = caplog.text
    for ep in eps:
        assert f"endpoint {naming.short(ep.eid)} on network {naming.short(ep.net.nid)} reclaimed" in messages

    # Nothing left to do, now or after another restart.
    assert await p.reconciler.run() == Counter()
    assert p.reconciler.runs == 2 and p.reconciler.totals == done
    await p.close()
    p = await pynet(min_age=0)
    assert await p.reconciler.run() == Counter()
    assert p.ipam.pools[a.pool_id].allocator.used_total == 2
    assert saved_rules(ns) == rules_before


# --- endpoints whose veth is gone ------------------------------------------------------------


async def test_endpoint_of_a_running_container_is_rebuilt(ns, pynet, sandboxes, caplog):
    p = await pynet()
    await p.reconciler.run()
    net = await create_network(p)
    live = await create_endpoint(p, ns, net, sandboxes.create())
    dead = await create_endpoint(p, ns, net, sandboxes.create())
    assert sandboxes.link_names(live.sandbox) == [live.peer]
    ns.ip("link", "del", live.host)       # the veth goes; the container runs on
    sandboxes.kill(dead.sandbox)          # the container goes, and its veth with it
    wait_gone(ns, dead.host)

    # Looking changes nothing.
    findings = await p.reconciler.inspect()
    assert sorted(f.action for f in findings) == ["endpoints rebuilt", "stale endpoints reclaimed"]
    assert live.host not in ns.links()

    caplog.set_level(logging.WARNING)
    done = await p.reconciler.run()
    assert done == Counter({REBUILT: 1, "stale endpoints reclaimed": 1})
    assert set(p.driver.endpoints) == {live.eid} and await saved_endpoints(p) == {live.eid}
    assert ns.bridge_ports().get(live.host) == net.bridge
    inner = json.loads(run("nsenter", f"--net={live.sandbox}", "ip", "-j", "addr", "show").stdout)
    eth0 = next(i for i in inner if i["ifname"] == "eth0")
    assert eth0["address"] == naming.endpoint_mac(live.eid)
    assert f"{live.ip}" in {a["local"] for a in eth0["addr_info"]}
    assert "rebuilt its veth into the container as eth0" in caplog.text
    pool = p.ipam.pools[net.pool_id].allocator
    assert pool.is_used(live.ip)
    assert pool.is_used(dead.ip), "an address younger than min_age was released"

    assert await p.reconciler.run() == Counter()
    # Once the container is gone too, it goes.
    sandboxes.kill(live.sandbox)
    wait_gone(ns, live.host)
    assert await p.reconciler.run() == Counter({"stale endpoints reclaimed": 1})
    assert p.driver.endpoints == {} and await saved_endpoints(p) == set()


async def test_unjoined_endpoint_is_reclaimed_only_once_old_enough(ns, pynet, monkeypatch):
    p = await pynet(min_age=60)
    await p.reconciler.run()
    net = await create_network(p)
    gone = await create_endpoint(p, ns, net)
    kept = await create_endpoint(p, ns, net)     # its veth is there: never a candidate
    ns.ip("link", "del", gone.host)

    assert await p.reconciler.run() == Counter()  # may be a container being created right now
    assert set(p.driver.endpoints) == {gone.eid, kept.eid}

    clock = Clock(120)
    monkeypatch.setattr(bridge_repair, "time", clock)
    monkeypatch.setattr(ipam_store, "time", clock)
    assert await p.reconciler.run() == Counter({"stale endpoints reclaimed": 1, "addresses reclaimed": 1})
    assert set(p.driver.endpoints) == {kept.eid} and await saved_endpoints(p) == {kept.eid}
    pool = p.ipam.pools[net.pool_id].allocator
    assert not pool.is_used(gone.ip) and pool.is_used(kept.ip)
    assert await address_rows(p, net.pool_id) == {plain(net.gateway): "gateway",
                                                  plain(kept.address): "dynamic"}
    assert ns.link(kept.host) is not None and ns.link(kept.peer) is not None
    assert await p.reconciler.run() == Counter()


# --- orphan links ----------------------------------------------------------------------------


def add_bridge(ns, name: str, alias: str = "") -> None:
    ns.ip("link", "add", name, "type", "bridge")
    if alias:
        ns.ip("link", "set", name, "alias", alias)


def add_tun(ns, name: str) -> None:
    """A link of another kind (this kernel has no dummy module)."""
    ns.ip("tuntap", "add", "name", name, "mode", "tun")


def add_veth(ns, host: str, peer: str, alias: str = "") -> None:
    ns.ip("link", "add", host, "type", "veth", "peer", "name", peer)
    if alias:
        ns.ip("link", "set", host, "alias", alias)


async def test_orphan_links(ns, pynet):
    p = await pynet()
    await p.reconciler.run()
    net = await create_network(p)
    ep = await create_endpoint(p, ns, net)
    indexes = {n: ns.link(n)["ifindex"] for n in (net.bridge, ep.host, ep.peer)}

    # pynet's leftovers: marked with IDs pynet does not know, or unmarked with its names.
    u1, u2, u3 = new_id(), new_id(), new_id()
    add_bridge(ns, "pnbr-orphan", naming.network_alias(u1))
    h2, c2 = naming.veth_names(u2)
    add_veth(ns, h2, c2, naming.endpoint_alias(u2))
    add_bridge(ns, naming.bridge_name(u3))
    h3, c3 = naming.veth_names(u3)
    add_veth(ns, h3, c3)
    orphans = {"pnbr-orphan", h2, c2, naming.bridge_name(u3), h3, c3}

    # Not pynet's: other marks, other names, other kinds.
    add_bridge(ns, naming.bridge_name(new_id()), "docker:network:" + u1)   # pynet's name, another mark
    add_bridge(ns, "pnfoo")
    add_bridge(ns, "br0")
    add_bridge(ns, "pnh0123456789a")                                     # 11 hex: not a derived name
    add_veth(ns, "vethx0", "vethx1")
    add_tun(ns, "pn-0123456789ab")                                         # derived name, but a tun
    add_tun(ns, "pnhaaaaaaaaaaaa")
    ns.ip("link", "set", "pnhaaaaaaaaaaaa", "alias", "pynet:volume:" + u2)  # pynet's, but no owner kind
    foreign = set(ns.links()) - orphans - set(indexes) - {"lo"}
    assert len(foreign) == 8

    # Being created right now: marked or not yet marked.
    f1, f2, f3 = new_id(), new_id(), new_id()
    add_bridge(ns, naming.bridge_name(f1), naming.network_alias(f1))
    add_bridge(ns, naming.bridge_name(f2))
    fh, fc = naming.veth_names(f3)
    add_veth(ns, fh, fc, naming.endpoint_alias(f3))
    flying = {naming.bridge_name(f1), naming.bridge_name(f2), fh, fc}
    p.driver.in_flight |= {f1, f2, f3}

    assert await p.reconciler.run() == Counter({"orphan bridges deleted": 2, "orphan veths deleted": 2})
    found = ns.links()
    assert set(found) == {"lo"} | set(indexes) | foreign | flying
    assert {n: found[n]["ifindex"] for n in indexes} == indexes
    assert await p.reconciler.run() == Counter()

    # Their creation failed without cleaning up: now they are leftovers.
    p.driver.in_flight -= {f1, f2, f3}
    assert await p.reconciler.run() == Counter({"orphan bridges deleted": 2, "orphan veths deleted": 1})
    assert set(ns.links()) == {"lo"} | set(indexes) | foreign
    assert set(p.driver.endpoints) == {ep.eid} and list(p.driver.networks) == [net.nid]


# --- orphan rules ----------------------------------------------------------------------------


async def test_orphan_rules(ns, pynet):
    p = await pynet()
    await p.reconciler.run()
    n1 = await create_network(p)
    n2 = await create_network(p, "10.77.0.0/24", v6="fd00:77::/64")
    ours = {n.nid: sorted(tagged(ns, n.tag)) for n in (n1, n2)}

    unknown = secrets.token_hex(6)
    tag = f"pynet:{unknown}"
    br = f"pn-{unknown}"
    comment = ["-m", "comment", "--comment", tag]
    stale = [
        (4, "filter", FORWARD, ["-i", br, "-o", br, *comment, "-j", "ACCEPT"]),
        (6, "filter", ISOLATION, ["-i", br, "!", "-o", br, *comment, "-j", "PYNET-ISOLATION-2"]),
        (4, "nat", POSTROUTING, ["-s", "10.9.0.0/24", "!", "-o", br, *comment, "-j", "MASQUERADE"]),
        (4, "nat", DNAT, ["-p", "tcp", "-m", "tcp", "--dport", "8080", *comment, "-j", "DNAT",
                          "--to-destination", "10.9.0.2:80"]),
    ]
    ns.iptables(4, "-N", "OTHER-CHAIN")
    kept = [
        (4, "filter", "FORWARD", ["-o", br, *comment, "-j", "ACCEPT"]),          # not pynet's chain
        (6, "filter", "FORWARD", ["-o", br, *comment, "-j", "ACCEPT"]),
        (4, "nat", "POSTROUTING", ["-s", "10.9.0.0/24", *comment, "-j", "MASQUERADE"]),
        (4, "filter", "OTHER-CHAIN", [*comment, "-j", "ACCEPT"]),
        (4, "filter", FORWARD, ["-o", br, "-m", "comment", "--comment", f"other:{unknown}", "-j", "ACCEPT"]),
        (4, "filter", FORWARD, ["-o", br, "-m", "comment", "--comment", f"pynet:{unknown}0", "-j", "ACCEPT"]),
        (4, "filter", FORWARD, ["-o", "pnq", "-j", "ACCEPT"]),                   # no tag at all
    ]
    flying = new_id()
    kept.append((4, "filter", FORWARD, ["-o", naming.bridge_name(flying), "-m", "comment", "--comment",
                                        naming.firewall_tag(flying), "-j", "ACCEPT"]))
    p.driver.in_flight.add(flying)
    for family, table, chain, spec in stale + kept:
        ns.iptables(family, "-t", table, "-A", chain, *spec)
    before = saved_rules(ns)

    def lines_of(entries):
        out = set()
        for family, table, chain, spec in entries:
            text = " ".join(f'"{w}"' if w.startswith(("pynet:", "other:")) else w for w in spec)
            out.add((family, table, f"-A {chain} {text}"))
        return out

    stale_lines, kept_lines = lines_of(stale), lines_of(kept)
    present = {(f, t, line) for (f, t), lines in before.items() for line in lines}
    assert stale_lines <= present and kept_lines <= present  # written as iptables-save prints them

    assert await p.reconciler.run() == Counter({"orphan rules removed": len(stale)})
    after = saved_rules(ns)
    expected = {key: [line for line in lines if (key[0], key[1], line) not in stale_lines]
                for key, lines in before.items()}
    assert after == expected
    assert {n.nid: sorted(tagged(ns, n.tag)) for n in (n1, n2)} == ours
    assert await p.reconciler.run() == Counter()


async def test_orphan_rules_spare_a_network_created_during_the_run(ns, pynet):
    p = await pynet()
    await p.reconciler.run()
    await create_network(p)
    nid = new_id()
    pool = await p.ipam.request_pool(ipam_wire.RequestPoolRequest(AddressSpace=LOCAL_SPACE))
    gateway = await request_address(p, pool.PoolID, gateway=True)
    req = wire.CreateNetworkRequest.model_validate({
        "NetworkID": nid, "Options": {},
        "IPv4Data": [{"AddressSpace": LOCAL_SPACE, "Pool": pool.Pool, "Gateway": gateway}]})

    real_snapshot, real_write = p.driver.firewall.iptables.snapshot, p.db.write
    recording, release = asyncio.Event(), asyncio.Event()
    creating: list[asyncio.Task] = []

    async def slow_write(fn):
        if nid in p.driver.in_flight:  # its record: a slow disk
            recording.set()
            await release.wait()
        return await real_write(fn)

    async def snapshot(family, *args, **kwargs):
        if not creating:  # the run's first look at the firewall: Docker creates a network meanwhile
            creating.append(asyncio.create_task(p.driver.create_network(req)))
            await recording.wait()
        return await real_snapshot(family, *args, **kwargs)

    p.db.write = slow_write
    p.driver.firewall.iptables.snapshot = snapshot
    try:
        done = await p.reconciler.run()
    finally:
        release.set()
        p.db.write = real_write
        p.driver.firewall.iptables.snapshot = real_snapshot
    await creating[0]
    assert nid in p.driver.networks
    tag = naming.firewall_tag(nid)
    wanted = [r for g in p.driver.wanted_rules() for r in g if f'"{tag}"' in r.spec]
    assert len(tagged(ns, tag)) == len(wanted), f"the new network's rules are missing ({done})"
    assert "orphan rules removed" not in done, done


async def test_failed_repair_is_not_counted_as_recreated(ns, pynet):
    p = await pynet()
    await p.reconciler.run()
    net = await create_network(p)
    ns.ip("link", "del", net.bridge)
    add_tun(ns, net.bridge)  # somebody else's link took the name
    done = await p.reconciler.run()
    assert done["network repairs failed"] == 1
    assert ns.kind(ns.link(net.bridge)) == "tun"
    assert "bridges recreated" not in done, done


# --- IPAM ------------------------------------------------------------------------------------


async def test_unheld_addresses_are_released(ns, pynet, sandboxes, caplog):
    p = await pynet(min_age=60)
    await p.reconciler.run()
    net = await create_network(p, "10.66.0.0/24", aux={"printer": 10}, v6="fd00:66::/64")
    live = await create_endpoint(p, ns, net, sandboxes.create(), v6=True)
    idle = await create_endpoint(p, ns, net)
    # Addresses Docker took and never gave back (its endpoint never came, or went unheard).
    leaked = [await request_address(p, net.pool_id), await request_address(p, net.pool_id),
              await request_address(p, net.pool_id, "10.66.0.200"), await request_address(p, net.pool6_id)]
    # A pool no pynet network uses (another driver's network, or one being created).
    other = await p.ipam.request_pool(ipam_wire.RequestPoolRequest(AddressSpace=LOCAL_SPACE,
                                                                    Pool="10.55.0.0/24"))
    other_addresses = [await request_address(p, other.PoolID, gateway=True),
                       await request_address(p, other.PoolID),
                       await request_address(p, other.PoolID, "10.55.0.77")]
    other_rows = await address_rows(p, other.PoolID)

    assert await p.reconciler.run() == Counter()  # all younger than min_age
    p.reconciler.min_age = 0
    caplog.set_level(logging.WARNING, logger="pynet.reconcile")
    assert await p.reconciler.run() == Counter({"addresses reclaimed": len(leaked)})

    v4, v6 = p.ipam.pools[net.pool_id].allocator, p.ipam.pools[net.pool6_id].allocator
    for address in (net.gateway, net.aux["printer"], live.address, idle.address):
        assert v4.is_used(parse_address(address)), address
    assert v6.is_used(parse_address(net.gateway6)) and v6.is_used(live.ip6)
    for address in leaked:
        assert not (v4.is_used(parse_address(address)) or v6.is_used(parse_address(address))), address
        assert f"address {plain(address)} released: no endpoint holds it" in caplog.text
    assert await address_rows(p, net.pool_id) == {
        plain(net.gateway): "gateway", plain(net.aux["printer"]): "static",
        plain(live.address): "dynamic", plain(idle.address): "dynamic"}
    assert await address_rows(p, net.pool6_id) == {plain(net.gateway6): "gateway",
                                                   plain(live.address6): "dynamic"}
    assert await address_rows(p, other.PoolID) == other_rows
    assert p.ipam.pools[other.PoolID].allocator.used_total == len(other_addresses)
    # Releasing them told the driver, which dropped nobody.
    assert set(p.driver.endpoints) == {live.eid, idle.eid}
    assert await saved_endpoints(p) == {live.eid, idle.eid}
    assert ns.link(live.host) is not None and ns.link(idle.host) is not None
    assert await p.reconciler.run() == Counter()


async def test_release_address_drops_the_endpoint_holding_it(ns, pynet, sandboxes):
    p = await pynet()
    await p.reconciler.run()
    net = await create_network(p, "10.66.0.0/24", v6="fd00:66::/64")
    gone = await create_endpoint(p, ns, net, sandboxes.create(), v6=True)
    stays = await create_endpoint(p, ns, net, sandboxes.create())
    leaked = await request_address(p, net.pool_id)

    # Docker, restarted, forgot the container and only releases its address.
    await release(p, net.pool_id, gone.address)
    assert set(p.driver.endpoints) == {stays.eid} and await saved_endpoints(p) == {stays.eid}
    assert ns.link(gone.host) is None
    assert sandboxes.link_names(gone.sandbox) == []      # its container end went with it
    assert sandboxes.link_names(stays.sandbox) == [stays.peer]
    assert ns.bridge_ports() == {stays.host: net.bridge}
    assert not p.ipam.pools[net.pool_id].allocator.is_used(gone.ip)

    # The rest of its release, and an address nobody holds: nobody else is dropped.
    await release(p, net.pool6_id, gone.address6)
    await release(p, net.pool_id, leaked)
    assert set(p.driver.endpoints) == {stays.eid}
    assert await p.reconciler.run() == Counter()
    assert await address_rows(p, net.pool_id) == {plain(net.gateway): "gateway",
                                                  plain(stays.address): "dynamic"}


# --- bounded ---------------------------------------------------------------------------------


async def test_reconcile_of_500_endpoints_in_place_is_fast(ns, pynet, sandboxes):
    p = await pynet()
    await p.reconciler.run()
    nets = [await create_network(p) for _ in range(4)]
    boxes = [sandboxes.create() for _ in range(10)]

    eps: list[Ep] = []

    async def fill(k: int, net: Net) -> None:
        for i in range(125):
            eps.append(await create_endpoint(p, ns, net, boxes[(k * 125 + i) % len(boxes)], move=False))

    started = time.monotonic()
    await asyncio.gather(*(fill(k, net) for k, net in enumerate(nets)))
    # Docker moves each container end into its container: in one `ip -batch`, for speed.
    moves = "".join(f"link set {ep.peer} netns {ep.sandbox}\n" for ep in eps)
    proc = subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input=moves, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    built = time.monotonic() - started
    assert len(p.driver.endpoints) == 500
    assert sum(len(sandboxes.link_names(b)) for b in boxes) == 500
    rules = saved_rules(ns)
    await p.close()

    started = time.monotonic()
    p = await pynet(min_age=0)  # every address is old enough to be looked at
    done = await p.reconciler.run()
    took = time.monotonic() - started
    print(f"\n500 endpoints: built in {built:.2f} s; load + reconcile in {took:.3f} s")
    assert done == Counter()
    assert len(p.driver.endpoints) == 500
    assert len([n for n in ns.links() if n.startswith("pnh")]) == 500
    assert saved_rules(ns) == rules
    assert took < 2.0, f"load + reconcile of 500 endpoints took {took:.2f} s"


async def test_the_pass_before_serving_puts_networks_back_and_leaves_endpoints_for_later(ns, pynet, sandboxes):
    p = await pynet()
    await p.reconciler.run()
    net = await create_network(p)
    dead = await create_endpoint(p, ns, net, sandboxes.create())
    sandboxes.kill(dead.sandbox)
    wait_gone(ns, dead.host)
    ns.ip("link", "del", net.bridge)
    done = await p.reconciler.run(full=False)
    assert done["bridges recreated"] == 1 and "stale endpoints reclaimed" not in done
    assert net.bridge in ns.links() and dead.eid in p.driver.endpoints
    assert (await p.reconciler.run())["stale endpoints reclaimed"] == 1


# --- inside a managed plugin -----------------------------------------------------------------


async def test_in_a_plugin_sandboxes_are_found_where_the_netns_directory_is_mounted(ns, pynet, sandboxes):
    """Docker names /var/run/docker/netns/<id> (or its own --exec-root); the plugin sees that
    directory mounted at PYNET_NETNS_MOUNT: the namespace is found there by its name."""
    p = await pynet()
    p.driver.netns_dirs = ("/srv/docker-exec/netns",)
    p.driver.netns_mount = sandboxes.dir
    await p.reconciler.run()
    net = await create_network(p)
    local = sandboxes.create()
    named = "/srv/docker-exec/netns/" + os.path.basename(local)
    ep = await create_endpoint(p, ns, net, named, move=False)
    ns.ip("link", "set", ep.peer, "netns", local)
    assert await p.reconciler.inspect() == []
    ns.ip("link", "del", ep.host)
    assert await p.reconciler.run() == Counter({REBUILT: 1})
    assert [i["ifname"] for i in json.loads(run("nsenter", f"--net={local}", "ip", "-j", "link").stdout)
            if i["ifname"] != "lo"] == ["eth0"]
    sandboxes.kill(local)
    wait_gone(ns, ep.host)
    assert await p.reconciler.run() == Counter({"stale endpoints reclaimed": 1})


async def test_namespaces_pynet_cannot_see_are_reported_not_guessed(ns, pynet, sandboxes):
    """A plugin without the netns mount (or one that misses new mounts) would take every
    container whose veth goes for a stopped one: the doctor says so."""
    p = await pynet(min_age=3600)
    p.driver.netns_mount = str(sandboxes.dir) + "-not-mounted"
    await p.reconciler.run()
    net = await create_network(p)
    joined = await create_endpoint(p, ns, net, sandboxes.create(), move=False)
    assert await p.reconciler.inspect() == [], "a container end still here: not started yet"
    ns.ip("link", "set", joined.peer, "netns", joined.sandbox)
    running = await create_endpoint(p, ns, net, sandboxes.create())
    findings = await p.reconciler.inspect()
    assert [(f.action, f.subject) for f in findings] == [("host problems", "host")]
    assert "no namespace of the 2 running container(s) is visible" in findings[0].problem
    assert "-not-mounted/" in findings[0].problem
    assert await p.reconciler.run() == Counter(), "nothing to repair: it is the host's to fix"
    ns.ip("link", "del", running.host)  # gone: stopped or not, pynet cannot tell, so it keeps it
    assert await p.reconciler.run() == Counter()
    assert running.eid in p.driver.endpoints


async def test_read_only_kernel_settings_are_reported_with_the_way_out(ns, pynet, tmp_path):
    """As in a managed plugin without its /proc/sys/net mount: a setting that is wrong and
    cannot be changed is a finding that says what to do; one that can be is put right."""
    root = tmp_path / "sys"
    (root / "net" / "ipv4").mkdir(parents=True)
    (root / "net" / "ipv4" / "ip_forward").write_text("0\n")
    p = await pynet()
    p.driver.sysctl = Sysctl(root=str(root))
    net = await create_network(p)  # sets ip_forward (writable then); route_localnet has no file
    (root / "net" / "ipv4" / "ip_forward").write_text("0\n")
    run("mount", "--bind", str(root), str(root))
    try:
        run("mount", "-o", "remount,bind,ro", str(root))
        findings = await p.reconciler.inspect()
        (f,) = [f for f in findings if f.action == "settings restored"]
        assert f.subject == f"network {naming.short(net.nid)}"
        assert f.problem.startswith("net.ipv4.ip_forward, net.ipv4.conf.") and f.problem.endswith(" not 1")
        assert "is read-only here" in f.fix and "sysctl -w net.ipv4.ip_forward=1" in f.fix
        assert "settings restored" not in await p.reconciler.run()
    finally:
        run("umount", str(root))
    (root / "net" / "ipv4" / "conf" / net.bridge).mkdir(parents=True)
    (root / "net" / "ipv4" / "conf" / net.bridge / "route_localnet").write_text("0\n")
    assert (await p.reconciler.run())["settings restored"] == 1
    assert (root / "net" / "ipv4" / "ip_forward").read_text() == "1"
    assert [f.action for f in await p.reconciler.inspect()] == []


async def test_a_new_or_empty_state_keeps_what_it_cannot_explain(ns, pynet):
    """An upgrade that forgot the plugin's state.source starts pynet on an empty state: the
    host's pynet bridges and rules are then someone's networks, not leftovers."""
    p = await pynet()
    net = await create_network(p)
    await p.close()
    other = await pynet()              # the same host, but a state that knows nothing
    other.driver.networks.clear()
    other.driver.endpoints.clear()
    findings = await other.reconciler.inspect()
    kept = sorted(f.subject for f in findings if f.action == "leftovers kept")
    assert f"bridge {net.bridge}" in kept and any(s.endswith(f"pynet:{net.tag[6:]}") for s in kept), kept
    assert "orphan" not in " ".join(await other.reconciler.run())
    assert ns.link(net.bridge) is not None and tagged(ns, net.tag)
    # A fresh database file is spared too, even once it holds a network of its own.
    other.reconciler.fresh_state = True
    await create_network(other, "10.78.0.0/24")
    assert "orphan" not in " ".join(await other.reconciler.run())
    assert ns.link(net.bridge) is not None


async def test_a_container_stopped_while_pynet_was_away_gives_its_endpoint_back(ns, pynet, sandboxes):
    """With pynet down (or the plugin disabled) Docker's Leave and DeleteEndpoint fail when a
    container stops; libnetwork still moves the container end back to the host and the
    namespace goes. Such an endpoint used to hold its address and veth for ever."""
    p = await pynet(min_age=3600)
    await p.reconciler.run()
    net = await create_network(p)
    stopped = await create_endpoint(p, ns, net, sandboxes.create())
    run("nsenter", f"--net={stopped.sandbox}", "ip", "link", "set", stopped.peer, "netns", f"/run/netns/{ns.name}")
    sandboxes.kill(stopped.sandbox)
    p.driver.joined_at[stopped.eid] = time.time() - 600  # it ran for ten minutes
    # Joined a moment ago, its namespace not there yet (Docker mounts it, then moves
    # the container end in): a container starting, however old its endpoint.
    starting = await create_endpoint(p, ns, net, os.path.join(sandboxes.dir, secrets.token_hex(6)), move=False)
    assert ns.link(stopped.host) is not None and ns.link(stopped.peer) is not None
    assert await p.reconciler.run() == Counter(), "younger than min_age"
    p.reconciler.min_age = 0  # both old enough now: only the stopped one goes
    done = await p.reconciler.run()
    assert done["stale endpoints reclaimed"] == 1, done
    assert ns.link(stopped.host) is None and ns.link(stopped.peer) is None
    assert set(p.driver.endpoints) == {starting.eid} and await saved_endpoints(p) == {starting.eid}
    pool = p.ipam.pools[net.pool_id].allocator
    assert not pool.is_used(stopped.ip) and pool.is_used(starting.ip)
    # Still not moved in a minute after its Join: no container is starting there.
    p.driver.joined_at[starting.eid] -= bridge_repair.JOIN_GRACE
    assert (await p.reconciler.run())["stale endpoints reclaimed"] == 1
    assert p.driver.endpoints == {}
