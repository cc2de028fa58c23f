"""The IPAM's store in this host's SQLite database (the one pynet's driver
shares): each verb is one transaction, durable before it returns."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Callable, Optional, Protocol, TypeVar

from . import PoolRow

T = TypeVar("T")

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


class Transactions(Protocol):
    """driver.db.Database: runs a function on the connection, in one transaction, off the loop."""

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class SqliteIpamStore:
    def __init__(self, db: Transactions) -> None:
        self.db = db

    async def load_pools(self) -> list[PoolRow]:
        return await self.db.read(_load_pools)

    async def insert_pool(self, pool_id: str, address_space: str, pool: str, sub_pool: str,
                          options: dict) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT OR REPLACE INTO ipam_pools (pool_id, address_space, pool, sub_pool, options, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (pool_id, address_space, pool, sub_pool, json.dumps(options, sort_keys=True), time.time())))

    async def delete_pool(self, pool_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM ipam_addresses WHERE pool_id = ?", (pool_id,))
            conn.execute("DELETE FROM ipam_pools WHERE pool_id = ?", (pool_id,))
        await self.db.write(delete)

    async def claim_address(self, pool_id: str, address: str, kind: str, cursor: Optional[int]) -> None:
        def claim(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO ipam_addresses (pool_id, address, kind, created) VALUES (?, ?, ?, ?)",
                         (pool_id, address, kind, time.time()))
            if cursor is not None:
                conn.execute("UPDATE ipam_pools SET cursor = ? WHERE pool_id = ?", (str(cursor), pool_id))
        await self.db.write(claim)

    async def release_address(self, pool_id: str, address: str) -> None:
        await self.db.write(lambda c: c.execute(
            "DELETE FROM ipam_addresses WHERE pool_id = ? AND address = ?", (pool_id, address)))

    async def addresses_older_than(self, pool_id: str, seconds: float) -> list[tuple[str, str]]:
        return await self.db.read(lambda c: c.execute(
            "SELECT address, kind FROM ipam_addresses WHERE pool_id = ? AND created < ?",
            (pool_id, time.time() - seconds)).fetchall())

    async def all_addresses(self) -> list[tuple[str, str, str]]:
        return await self.db.read(lambda c: c.execute(
            "SELECT pool_id, address, kind FROM ipam_addresses ORDER BY pool_id").fetchall())


def _load_pools(conn: sqlite3.Connection) -> list[PoolRow]:
    rows = {r[0]: PoolRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], [])
            for r in conn.execute("SELECT pool_id, address_space, pool, sub_pool, options, cursor"
                                  " FROM ipam_pools ORDER BY created")}
    for pool_id, address, kind in conn.execute("SELECT pool_id, address, kind FROM ipam_addresses"):
        if pool_id in rows:
            rows[pool_id].addresses.append((address, kind))
    return list(rows.values())
