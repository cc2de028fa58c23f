"""In-memory stand-ins for the kernel, the firewall, sysctl and host ports, and
a Harness wiring the real driver, IPAM and database to them: for unit tests
that drive the whole plugin without root."""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import itertools
import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Optional

from pyroute2.netlink.exceptions import NetlinkError

import driver.kernel.ports as kernel_ports
from driver.db import Database
from driver.errors import Conflict, InvalidRequest
from driver.bridge import BridgeMode
from driver.app import assemble, open_state
from driver.config import Config
from driver.modes import Modes
from driver.kernel.netns import DEFAULT_NETNS_DIRS
from driver.kernel.link_reader import Link
from driver.server import make_app
from ipam.addr import make_address
from ipam.service import IpamService


def _id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


NID_A = _id("net-a")  # 10.1.0.0/24, gateway .1, aux "printer" .5, endpoint EID_A .2
NID_I = _id("net-internal")  # internal, 10.3.0.0/24, endpoint EID_I .2
NID_NEW = _id("net-new")  # never created by the base state
EID_A = _id("ep-a")
EID_I = _id("ep-internal")
EID_NEW = _id("ep-new")
POOL_A = "PynetLocal/10.1.0.0/24"
POOL_I = "PynetLocal/10.3.0.0/24"
POOL_TINY = "PynetLocal/10.9.0.0/30"  # both usable addresses held
SANDBOX = "/var/run/docker/netns/dea40fc6f528"


# --- fake kernel handles -------------------------------------------------------------

# The kernel's rule (dev_valid_name) plus what no shell, iptables line or log
# should ever see in an interface name.
_SHELLISH = set(";$`|&()<>'\"\\*?!{}[]~#%^=,@+ ")


def _check_kernel_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > 15 or name in (".", "..") \
            or "/" in name or ":" in name or any(c.isspace() for c in name):
        raise AssertionError(f"invalid interface name reached the kernel: {name!r}")
    if any(c in _SHELLISH or not c.isascii() or not c.isprintable() for c in name):
        raise AssertionError(f"interface name with shell metacharacters reached the kernel: {name!r}")


class Msg(dict):
    """A netlink message: .get() also takes pyroute2's nested keys, e.g. ("linkinfo", "kind")."""

    def get(self, key, default=None):
        if isinstance(key, tuple):
            key = key[-1]
        return super().get(key, default)


async def _agen(items):
    for item in items:
        yield item


class FakeIPRoute:
    """The part of pyroute2's AsyncIPRoute that driver/kernel/links.py uses, in memory."""

    def __init__(self) -> None:
        self._last_index = 0
        self.links: dict[str, Msg] = {}
        self.addrs: dict[int, set[tuple[str, int]]] = {}
        self.brports: dict[int, int] = {}
        self._new("lo", None, up=True)
        self._new("eth0", "dummy", up=True)  # somebody else's interface

    def _new(self, name: str, kind: Optional[str], up: bool = False, mtu: int = 1500, **extra) -> Msg:
        self._last_index += 1
        msg = Msg(index=self._last_index, ifname=name, kind=kind, ifalias=None, master=None,
                  flags=1 if up else 0, mtu=mtu, **extra)
        self.links[name] = msg
        return msg

    def _by(self, kw) -> Msg:
        if "index" in kw:
            for msg in self.links.values():
                if msg["index"] == kw["index"]:
                    return msg
        elif kw.get("ifname") in self.links:
            return self.links[kw["ifname"]]
        raise NetlinkError(errno.ENODEV, "No such device")

    async def link(self, cmd: str, **kw):
        if cmd == "dump":
            return _agen([Msg(m) for m in list(self.links.values())])
        if cmd == "get":
            return [Msg(self._by(kw))]
        if cmd == "add":
            name, kind = kw["ifname"], kw.get("kind")
            _check_kernel_name(name)
            if kind not in ("bridge", "veth"):
                raise AssertionError(f"unexpected link kind {kind!r}")
            if name in self.links:
                raise NetlinkError(errno.EEXIST, "File exists")
            if kind == "veth":
                peer = kw["peer"]
                _check_kernel_name(peer["ifname"])
                if peer["ifname"] in self.links:
                    raise NetlinkError(errno.EEXIST, "File exists")
                host = self._new(name, "veth", mtu=kw.get("mtu", 1500), up=kw.get("state") == "up")
                if "master" in kw:
                    if not any(m["index"] == kw["master"] for m in self.links.values()):
                        self.links.pop(name)
                        raise NetlinkError(errno.ENODEV, "No such device")
                    host["master"] = kw["master"]
                self._new(peer["ifname"], "veth", mtu=peer.get("mtu", 1500), peer=name,
                          address=peer.get("address"))
                host["peer"] = peer["ifname"]
            else:
                self._new(name, kind)
            return []
        if cmd == "set":
            msg = self._by(kw)
            for key, value in kw.items():
                if key == "state":
                    msg["flags"] = 1 if value == "up" else 0
                elif key == "ifalias":
                    if not isinstance(value, str) or "\n" in value or "\x00" in value:
                        raise AssertionError(f"bad ifalias {value!r}")
                    msg["ifalias"] = value
                elif key == "IFLA_LINKINFO":
                    slave = dict(value["attrs"])
                    if slave.get("IFLA_INFO_SLAVE_KIND") != "bridge" or msg["master"] is None:
                        raise NetlinkError(errno.EOPNOTSUPP, "Operation not supported")
                    self.brports[msg["index"]] = dict(slave["IFLA_INFO_SLAVE_DATA"]["attrs"])["IFLA_BRPORT_MODE"]
                elif key in ("mtu", "master"):
                    if not isinstance(value, int):
                        raise AssertionError(f"bad {key} {value!r}")
                    msg[key] = value
            return []
        if cmd == "del":
            msg = self._by(kw)
            doomed = [msg["ifname"]] + ([msg["peer"]] if msg.get("peer") in self.links else [])
            for name in doomed:
                gone = self.links.pop(name)
                self.addrs.pop(gone["index"], None)
                self.brports.pop(gone["index"], None)
                for other in self.links.values():
                    if other["master"] == gone["index"]:
                        other["master"] = None
            return []
        raise AssertionError(f"unexpected link command {cmd!r}")

    async def addr(self, cmd: str, **kw):
        index = kw["index"]
        if not any(m["index"] == index for m in self.links.values()):
            raise NetlinkError(errno.ENODEV, "No such device")
        if cmd == "dump":
            return _agen([Msg(index=index, address=a, prefixlen=p)
                          for a, p in sorted(self.addrs.get(index, ()))])
        if cmd == "add":
            address, prefixlen = kw["address"], kw["prefixlen"]
            ip = ipaddress.ip_address(address)  # a zone or junk would raise
            if str(ip) != address or not 0 <= prefixlen <= ip.max_prefixlen:
                raise AssertionError(f"bad address {address!r}/{prefixlen!r}")
            held = self.addrs.setdefault(index, set())
            if (address, prefixlen) in held:
                raise NetlinkError(errno.EEXIST, "File exists")
            held.add((address, prefixlen))
            return []
        raise AssertionError(f"unexpected addr command {cmd!r}")

    async def route(self, cmd: str, **kw):
        assert cmd == "dump"
        routes_ = [Msg(dst="192.168.77.0", dst_len=24)] if kw.get("family") == 2 else []
        return _agen(routes_)

    async def brport(self, cmd: str, **kw):
        assert cmd == "set"
        if not any(m["index"] == kw["index"] for m in self.links.values()):
            raise NetlinkError(errno.ENODEV, "No such device")
        self.brports[kw["index"]] = kw.get("mode")
        return []

    @property
    def link_reader(self) -> "FakeLinkReader":
        return FakeLinkReader(self)

    def close(self) -> None:
        pass

    def state(self):
        return (sorted((m["ifname"], m["kind"], m["ifalias"], m["master"], m["flags"], m["mtu"])
                       for m in self.links.values()),
                sorted((i, sorted(a)) for i, a in self.addrs.items()))


class FakeLinkReader:
    """driver/kernel/link_reader.py's LinkReader over the fake's tables."""

    def __init__(self, ipr: FakeIPRoute) -> None:
        self.ipr = ipr

    @staticmethod
    def _link(m: Msg) -> Link:
        return Link(index=m["index"], name=m["ifname"], kind=m["kind"], alias=m["ifalias"],
                    master=m["master"], up=bool(m["flags"] & 1), mtu=m["mtu"], mac=m.get("address") or "")

    async def get(self, name: str) -> Optional[Link]:
        msg = self.ipr.links.get(name)
        return self._link(msg) if msg is not None else None

    async def dump(self) -> list[Link]:
        return [self._link(m) for m in self.ipr.links.values()]

    def index(self, name: str) -> Optional[int]:
        msg = self.ipr.links.get(name)
        return msg["index"] if msg is not None else None


_FIREWALL_ARG = re.compile(r'^[A-Za-z0-9_.:/,!+\-\[\]"]+$')


class FakeFirewall:
    """driver.firewall.Firewall's interface; records rules, refuses arguments that
    would split an iptables-restore line or smuggle anything into it."""

    def __init__(self) -> None:
        self.sources: list = []
        self.families = [4, 6]
        self.calls: list[tuple[str, list]] = []

    def add_source(self, wanted, refresh=None) -> None:
        self.sources.append(wanted)

    def wanted(self) -> list:
        return [group for source in self.sources for group in source()]

    @staticmethod
    def _check(rules) -> None:
        for rule in rules:
            for arg in rule.spec:
                if not isinstance(arg, str) or not _FIREWALL_ARG.fullmatch(arg):
                    raise AssertionError(f"firewall rule argument {arg!r} in {rule}")

    async def ensure(self, groups=()) -> int:
        groups = [list(g) for g in groups]
        for group in groups:
            self._check(group)
        self.calls.append(("ensure", groups))
        return 0

    async def remove(self, rules) -> None:
        rules = list(rules)
        self._check(rules)
        self.calls.append(("remove", rules))

    async def check(self) -> int:
        return 0


class FakeSysctl:
    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []
        self.values: dict[str, str] = {}
        self.read_only = ""  # why settings cannot be changed, as Sysctl.writable says

    async def ensure(self, key: str, value: str) -> str | None:
        if ".." in key.split("/") or any(c.isspace() for c in key):
            raise AssertionError(f"sysctl key {key!r}")
        self.keys.append((key, value))
        if self.read_only:
            return f"cannot set {key.replace('/', '.')} to {value}: Read-only file system"
        self.values[key] = value
        return None

    def read(self, key: str) -> str | None:
        return self.values.get(key, "0")

    def writable(self) -> str | None:
        return self.read_only or None


class FakeSocket:
    def __init__(self, ports: "FakePorts", key) -> None:
        self.ports, self.key = ports, key

    def close(self) -> None:
        self.ports.held.pop(id(self), None)


class FakePorts:
    """driver.kernel.ports.reserve/port_of without binding real sockets."""

    LOCAL = {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.10")}

    def __init__(self) -> None:
        self.held: dict[int, tuple[str, Any, int]] = {}
        self._next = itertools.count(40000)

    def reserve(self, proto, host_ip, port):
        assert proto in ("tcp", "udp", "sctp"), proto
        if not host_ip.is_unspecified and host_ip not in self.LOCAL:
            raise InvalidRequest(f"cannot publish on {host_ip}: not an address of this host")
        if port == 0:
            port = next(self._next)
        for p, ip, n in self.held.values():
            if p == proto and n == port and ip.version == host_ip.version and (
                    ip.is_unspecified or host_ip.is_unspecified or ip == host_ip):
                raise Conflict(f"host port {host_ip}:{port}/{proto} is already in use on the host")
        sock = FakeSocket(self, (proto, host_ip, port))
        sock.port = port
        self.held[id(sock)] = (proto, host_ip, port)
        return sock

    @staticmethod
    def port_of(sock) -> int:
        return sock.port

    def state(self):
        return sorted((p, str(ip), n) for p, ip, n in self.held.values())


# --- the harness ---------------------------------------------------------------------


@dataclass
class Harness:
    path: str
    db: Database
    driver: BridgeMode
    ipam: IpamService
    ipr: FakeIPRoute
    firewall: FakeFirewall
    sysctl: FakeSysctl
    ports: FakePorts
    modes: Modes
    _reader: Optional[sqlite3.Connection] = None

    def app(self):
        return make_app(self.modes, self.ipam)

    def dump_db(self) -> dict[str, list]:
        """Every row of every table (and the schema), read through a second connection."""
        if self._reader is None:
            self._reader = sqlite3.connect(self.path)
        conn = self._reader
        dump = {"sqlite_master": conn.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY rowid").fetchall()}
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
        for (table,) in tables:
            dump[table] = conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
        return dump

    def memory(self):
        """The driver's and the IPAM's state in memory (records are frozen, or copied here)."""
        d, i = self.driver, self.ipam
        nets = {n.network_id: (n.bridge, n.options, tuple(n.ipv4), tuple(n.ipv6))
                for n in d.networks.values()}
        eps = {e.endpoint_id: (e.network_id, e.host_if, e.peer_if, e.mac, e.address, e.address6,
                               e.sandbox, tuple(e.bindings)) for e in d.endpoints.values()}
        pools = {p.pool_id: (p.network, p.allocator.sub_pool, p.allocator.cursor, p.allocator._used.runs(),
                             dict(p.kinds)) for p in i.pools.values()}
        return nets, eps, pools

    def snapshot(self):
        return {"db": self.dump_db(), "memory": self.memory(), "kernel": self.ipr.state(),
                "ports": self.ports.state()}

    def check_consistency(self, db: Optional[dict] = None) -> None:
        """What is in memory is what is on disk, and what the kernel has."""
        db = db if db is not None else self.dump_db()
        d, i = self.driver, self.ipam
        assert {r[0] for r in db["networks"]} == set(d.networks)
        saved_eps = {r[0]: (r[8], r[10]) for r in db["endpoints"]}  # sandbox, ports
        assert saved_eps == {e.endpoint_id: (e.sandbox, json.dumps([b.to_json() for b in e.bindings]))
                             for e in d.endpoints.values()}
        assert {r[0] for r in db["ipam_pools"]} == set(i.pools)
        saved_addrs: dict[str, set[str]] = {}
        for pool_id, address, *_ in db["ipam_addresses"]:
            saved_addrs.setdefault(pool_id, set()).add(address)
        for pool in i.pools.values():
            held = {str(make_address(v, pool.network.version))
                    for start, end in pool.allocator._used.runs() for v in range(start, end)}
            assert saved_addrs.get(pool.pool_id, set()) == held, pool.pool_id
        for net in d.networks.values():
            link = self.ipr.links.get(net.bridge)
            assert link is not None and link["kind"] == "bridge", net.bridge
        for ep in d.endpoints.values():
            assert ep.host_if in self.ipr.links, ep.host_if

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        await self.db.close()


async def build_harness(tmp_path, monkeypatch, ipr: Optional[FakeIPRoute] = None) -> Harness:
    path = str(tmp_path / "pynet.db")
    db = await open_state(path)
    # No fsync per commit: the tests are about what is committed, not about power cuts.
    await db.read(lambda c: c.execute("PRAGMA synchronous=OFF"))
    ipr, firewall, sysctl, ports = ipr or FakeIPRoute(), FakeFirewall(), FakeSysctl(), FakePorts()
    monkeypatch.setattr(kernel_ports, "reserve", ports.reserve)
    monkeypatch.setattr(kernel_ports, "port_of", ports.port_of)
    # Small automatic pools keep the state (and its snapshots) small.
    config = Config(default_pools="10.200.0.0/26/28,fd70:796e:6574::/122/124", netns_dirs=DEFAULT_NETNS_DIRS)
    core = await assemble(config, db, ipr, firewall, sysctl)
    return Harness(path, db, core.mode("bridge"), core.ipam, ipr, firewall, sysctl, ports, core.modes)
