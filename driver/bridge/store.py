"""Network driver tables, and the records they hold.

Functions take an open sqlite3 connection; callers run them through
`Database.write`, one transaction per decision.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional

from ipam.addr import IPAddress, IPInterface, IPNetwork, parse_address, parse_interface, parse_network

from .. import naming
from .options import NetworkOptions
from ..publish.portmap import Binding

SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    network_id TEXT PRIMARY KEY,
    bridge     TEXT NOT NULL UNIQUE,
    options    TEXT NOT NULL,
    ipv4       TEXT NOT NULL,
    ipv6       TEXT NOT NULL,
    created    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint_id  TEXT PRIMARY KEY,
    network_id   TEXT NOT NULL,
    host_if      TEXT NOT NULL,
    peer_if      TEXT NOT NULL,
    mac          TEXT NOT NULL,
    mac_reported INTEGER NOT NULL,
    address      TEXT NOT NULL DEFAULT '',
    address6     TEXT NOT NULL DEFAULT '',
    sandbox      TEXT NOT NULL DEFAULT '',
    created      REAL NOT NULL,
    ports        TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS endpoints_by_network ON endpoints(network_id);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a database written by an earlier pynet up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(endpoints)")}
    if "ports" not in columns:
        conn.execute("ALTER TABLE endpoints ADD COLUMN ports TEXT NOT NULL DEFAULT '[]'")


@dataclass(frozen=True)
class Subnet:
    """One IPv4Data/IPv6Data entry of CreateNetwork."""

    pool: IPNetwork
    gateway: Optional[IPInterface] = None
    aux: dict[str, IPAddress] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"pool": str(self.pool), "gateway": str(self.gateway) if self.gateway else "",
                "aux": {k: str(v) for k, v in self.aux.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "Subnet":
        return cls(parse_network(data["pool"]),
                   parse_interface(data["gateway"]) if data.get("gateway") else None,
                   {k: parse_address(v) for k, v in data.get("aux", {}).items()})


@dataclass
class Network:
    network_id: str
    bridge: str
    options: NetworkOptions
    ipv4: list[Subnet]
    ipv6: list[Subnet]
    created: float = field(default_factory=time.time)

    @property
    def subnets(self) -> list[Subnet]:
        return self.ipv4 + self.ipv6

    @property
    def bridge_gateways(self) -> list[IPInterface]:
        """The gateway addresses the bridge carries (no IPv4 one with inhibit_ipv4)."""
        subnets = self.ipv6 if self.options.inhibit_ipv4 else self.subnets
        return [s.gateway for s in subnets if s.gateway]

    @property
    def gateway4(self) -> Optional[IPInterface]:
        return next((s.gateway for s in self.ipv4 if s.gateway), None)

    @property
    def gateway6(self) -> Optional[IPInterface]:
        return next((s.gateway for s in self.ipv6 if s.gateway), None)

    def same_definition(self, other: "Network") -> bool:
        return (self.bridge, self.options, self.ipv4, self.ipv6) == \
            (other.bridge, other.options, other.ipv4, other.ipv6)


@dataclass
class Endpoint:
    endpoint_id: str
    network_id: str
    host_if: str
    peer_if: str
    mac: str
    mac_reported: bool  # pynet chose the MAC and told Docker
    address: Optional[IPInterface] = None
    address6: Optional[IPInterface] = None
    sandbox: str = ""
    created: float = field(default_factory=time.time)
    bindings: list[Binding] = field(default_factory=list)  # published ports, while programmed

    def same_definition(self, other: "Endpoint") -> bool:
        return (self.network_id, self.mac, self.address, self.address6) == \
            (other.network_id, other.mac, other.address, other.address6)


def insert_network(conn: sqlite3.Connection, net: Network) -> None:
    conn.execute(
        "INSERT INTO networks (network_id, bridge, options, ipv4, ipv6, created) VALUES (?, ?, ?, ?, ?, ?)",
        (net.network_id, net.bridge, json.dumps(net.options.to_json()),
         json.dumps([s.to_json() for s in net.ipv4]), json.dumps([s.to_json() for s in net.ipv6]),
         net.created))


def delete_network(conn: sqlite3.Connection, network_id: str) -> None:
    conn.execute("DELETE FROM endpoints WHERE network_id = ?", (network_id,))
    conn.execute("DELETE FROM networks WHERE network_id = ?", (network_id,))


def insert_endpoint(conn: sqlite3.Connection, ep: Endpoint) -> None:
    conn.execute(
        "INSERT INTO endpoints (endpoint_id, network_id, host_if, peer_if, mac, mac_reported,"
        " address, address6, sandbox, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (ep.endpoint_id, ep.network_id, ep.host_if, ep.peer_if, ep.mac, int(ep.mac_reported),
         str(ep.address or ""), str(ep.address6 or ""), ep.sandbox, ep.created))


def set_sandbox(conn: sqlite3.Connection, endpoint_id: str, sandbox: str) -> None:
    conn.execute("UPDATE endpoints SET sandbox = ? WHERE endpoint_id = ?", (sandbox, endpoint_id))


def set_bindings(conn: sqlite3.Connection, endpoint_id: str, bindings: list[Binding]) -> None:
    conn.execute("UPDATE endpoints SET ports = ? WHERE endpoint_id = ?",
                 (json.dumps([b.to_json() for b in bindings]), endpoint_id))


def delete_endpoint(conn: sqlite3.Connection, endpoint_id: str) -> None:
    conn.execute("DELETE FROM endpoints WHERE endpoint_id = ?", (endpoint_id,))


def load(conn: sqlite3.Connection) -> tuple[list[Network], list[Endpoint]]:
    networks = [
        Network(r[0], r[1], NetworkOptions.from_json(json.loads(r[2])),
                [Subnet.from_json(s) for s in json.loads(r[3])],
                [Subnet.from_json(s) for s in json.loads(r[4])], r[5])
        for r in conn.execute("SELECT network_id, bridge, options, ipv4, ipv6, created FROM networks")]
    endpoints = [
        Endpoint(r[0], r[1], r[2], r[3], r[4], bool(r[5]),
                 parse_interface(r[6]) if r[6] else None, parse_interface(r[7]) if r[7] else None,
                 r[8], r[9], [Binding.from_json(b) for b in json.loads(r[10])])
        for r in conn.execute("SELECT endpoint_id, network_id, host_if, peer_if, mac, mac_reported,"
                              " address, address6, sandbox, created, ports FROM endpoints")]
    return networks, endpoints


def holders(networks: Iterable[Network], endpoints: Iterable[Endpoint]) -> dict[IPAddress, tuple[str, str]]:
    """Every address pynet's networks and endpoints hold: address -> (network ID, who)."""
    held: dict[IPAddress, tuple[str, str]] = {}
    for net in networks:
        nid = naming.short(net.network_id)
        for s in net.subnets:
            if s.gateway:
                held[s.gateway.ip] = (net.network_id, f"the gateway of network {nid}")
            for name, aux in s.aux.items():
                held[aux] = (net.network_id, f"aux address {name!r} of network {nid}")
    for ep in endpoints:
        for a in (ep.address, ep.address6):
            if a is not None:
                held[a.ip] = (ep.network_id, f"endpoint {naming.short(ep.endpoint_id)} on network"
                                             f" {naming.short(ep.network_id)}")
    return held
