"""What this host keeps of the cluster in its own SQLite database: the
cluster pools and addresses it holds (so a restart writes nothing to etcd),
its blocks, the releases and unpublished endpoint records etcd has not taken
yet, its epoch, and the endpoint records it published, each with the epoch
it was published under (one of an earlier epoch is stale: the host was
reclaimed since)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from typing import Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster_pools (
    pool_id  TEXT PRIMARY KEY,
    name     TEXT NOT NULL,
    subnet   TEXT NOT NULL,
    gateway  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_addresses (
    pool_id  TEXT NOT NULL,
    address  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    created  REAL NOT NULL,
    PRIMARY KEY (pool_id, address)
);
CREATE TABLE IF NOT EXISTS cluster_blocks (
    pool_id  TEXT NOT NULL,
    block    TEXT NOT NULL,
    PRIMARY KEY (pool_id, block)
);
CREATE TABLE IF NOT EXISTS cluster_releases (
    name     TEXT NOT NULL,
    address  TEXT NOT NULL,
    PRIMARY KEY (name, address)
);
CREATE TABLE IF NOT EXISTS cluster_unpublished (
    key      TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS cluster_published (
    endpoint_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    ips         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass
class PoolRecord:
    pool_id: str
    name: str
    subnet: str
    gateway: str
    addresses: dict[str, str] = field(default_factory=dict)  # address -> kind
    blocks: set[str] = field(default_factory=set)


def load_pools(conn: sqlite3.Connection) -> dict[str, PoolRecord]:
    pools = {r[0]: PoolRecord(*r) for r in conn.execute(
        "SELECT pool_id, name, subnet, gateway FROM cluster_pools")}
    for pool_id, address, kind in conn.execute("SELECT pool_id, address, kind FROM cluster_addresses"):
        if pool_id in pools:
            pools[pool_id].addresses[address] = kind
    for pool_id, block in conn.execute("SELECT pool_id, block FROM cluster_blocks"):
        if pool_id in pools:
            pools[pool_id].blocks.add(block)
    return pools


def insert_pool(conn: sqlite3.Connection, pool: PoolRecord) -> None:
    conn.execute("INSERT OR REPLACE INTO cluster_pools VALUES (?, ?, ?, ?)",
                 (pool.pool_id, pool.name, pool.subnet, pool.gateway))


def delete_pool(conn: sqlite3.Connection, pool_id: str) -> None:
    for table in ("cluster_addresses", "cluster_blocks", "cluster_pools"):
        conn.execute(f"DELETE FROM {table} WHERE pool_id = ?", (pool_id,))


def insert_address(conn: sqlite3.Connection, pool_id: str, address: str, kind: str) -> None:
    conn.execute("INSERT OR REPLACE INTO cluster_addresses VALUES (?, ?, ?, ?)",
                 (pool_id, address, kind, time.time()))


def delete_address(conn: sqlite3.Connection, pool_id: str, address: str) -> None:
    conn.execute("DELETE FROM cluster_addresses WHERE pool_id = ? AND address = ?", (pool_id, address))


def insert_block(conn: sqlite3.Connection, pool_id: str, block: str) -> None:
    conn.execute("INSERT OR IGNORE INTO cluster_blocks VALUES (?, ?)", (pool_id, block))


def journal_release(conn: sqlite3.Connection, name: str, address: str) -> None:
    conn.execute("INSERT OR IGNORE INTO cluster_releases VALUES (?, ?)", (name, address))


def pending_releases(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT name, address FROM cluster_releases").fetchall()


def forget_release(conn: sqlite3.Connection, name: str, address: str) -> None:
    conn.execute("DELETE FROM cluster_releases WHERE name = ? AND address = ?", (name, address))


def journal_unpublish(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("INSERT OR IGNORE INTO cluster_unpublished VALUES (?)", (key,))


def pending_unpublish(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT key FROM cluster_unpublished")]


def forget_unpublish(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM cluster_unpublished WHERE key = ?", (key,))


def insert_published(conn: sqlite3.Connection, endpoint_id: str, name: str, epoch: int, ips: list[str]) -> None:
    conn.execute("INSERT OR REPLACE INTO cluster_published VALUES (?, ?, ?, ?)",
                 (endpoint_id, name, epoch, ",".join(ips)))


def delete_published(conn: sqlite3.Connection, endpoint_id: str) -> None:
    conn.execute("DELETE FROM cluster_published WHERE endpoint_id = ?", (endpoint_id,))


def load_published(conn: sqlite3.Connection) -> dict[str, tuple[str, int, list[str]]]:
    return {r[0]: (r[1], int(r[2]), [ip for ip in r[3].split(",") if ip])
            for r in conn.execute("SELECT endpoint_id, name, epoch, ips FROM cluster_published")}


def saved_epoch(conn: sqlite3.Connection) -> Optional[int]:
    row = conn.execute("SELECT value FROM cluster_settings WHERE key = 'epoch'").fetchone()
    return int(row[0]) if row else None


def save_epoch(conn: sqlite3.Connection, epoch: int) -> None:
    conn.execute("INSERT OR REPLACE INTO cluster_settings VALUES ('epoch', ?)", (str(epoch),))


def forget_holds(conn: sqlite3.Connection) -> None:
    """What a reclaimed host held: gone (the gateways stay: they are everyone's)."""
    conn.execute("DELETE FROM cluster_addresses WHERE kind != 'gateway'")
    conn.execute("DELETE FROM cluster_blocks")
