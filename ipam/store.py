"""IPAM tables. Functions take an open sqlite3 connection inside a transaction."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS ipam_pools (
    pool_id       TEXT PRIMARY KEY,
    address_space TEXT NOT NULL,
    pool          TEXT NOT NULL,
    sub_pool      TEXT NOT NULL DEFAULT '',
    options       TEXT NOT NULL DEFAULT '{}',
    cursor        TEXT NOT NULL DEFAULT '',
    created       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ipam_addresses (
    pool_id  TEXT NOT NULL REFERENCES ipam_pools(pool_id) ON DELETE CASCADE,
    address  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    created  REAL NOT NULL,
    PRIMARY KEY (pool_id, address)
);
"""


@dataclass
class PoolRow:
    pool_id: str
    address_space: str
    pool: str
    sub_pool: str
    options: dict
    cursor: str
    addresses: list[tuple[str, str]]  # (address, kind)


def insert_pool(conn: sqlite3.Connection, pool_id: str, address_space: str, pool: str,
                sub_pool: str, options: dict) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO ipam_pools (pool_id, address_space, pool, sub_pool, options, created)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (pool_id, address_space, pool, sub_pool, json.dumps(options, sort_keys=True), time.time()))


def delete_pool(conn: sqlite3.Connection, pool_id: str) -> None:
    conn.execute("DELETE FROM ipam_addresses WHERE pool_id = ?", (pool_id,))
    conn.execute("DELETE FROM ipam_pools WHERE pool_id = ?", (pool_id,))


def insert_address(conn: sqlite3.Connection, pool_id: str, address: str, kind: str,
                   cursor: Optional[int]) -> None:
    conn.execute("INSERT INTO ipam_addresses (pool_id, address, kind, created) VALUES (?, ?, ?, ?)",
                 (pool_id, address, kind, time.time()))
    if cursor is not None:
        conn.execute("UPDATE ipam_pools SET cursor = ? WHERE pool_id = ?", (str(cursor), pool_id))


def delete_address(conn: sqlite3.Connection, pool_id: str, address: str) -> None:
    conn.execute("DELETE FROM ipam_addresses WHERE pool_id = ? AND address = ?", (pool_id, address))


def address_kind(conn: sqlite3.Connection, pool_id: str, address: str) -> Optional[str]:
    row = conn.execute("SELECT kind FROM ipam_addresses WHERE pool_id = ? AND address = ?",
                       (pool_id, address)).fetchone()
    return row[0] if row else None


def addresses_older_than(conn: sqlite3.Connection, pool_id: str, seconds: float) -> list[tuple[str, str]]:
    return conn.execute("SELECT address, kind FROM ipam_addresses WHERE pool_id = ? AND created < ?",
                        (pool_id, time.time() - seconds)).fetchall()


def all_addresses(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return conn.execute("SELECT pool_id, address, kind FROM ipam_addresses ORDER BY pool_id").fetchall()


def load_pools(conn: sqlite3.Connection) -> list[PoolRow]:
    rows = {r[0]: PoolRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], [])
            for r in conn.execute("SELECT pool_id, address_space, pool, sub_pool, options, cursor"
                                  " FROM ipam_pools ORDER BY created")}
    for pool_id, address, kind in conn.execute("SELECT pool_id, address, kind FROM ipam_addresses"):
        if pool_id in rows:
            rows[pool_id].addresses.append((address, kind))
    return list(rows.values())
