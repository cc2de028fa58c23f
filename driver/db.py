"""The embedded SQLite database, used from asyncio without blocking the loop.

Every statement runs on one dedicated thread, so each `write()` is one whole
transaction that no other coroutine can interleave with, and writes land in
the order they were issued. WAL with synchronous=FULL: a committed decision
survives `kill -9` of pynet and a power cut of the host.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")


class Database:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self.created = False  # whether open() made a new database file
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pynet-db")

    async def open(self, schemas: Iterable[str | Callable[[sqlite3.Connection], None]]) -> None:
        """Create the tables (SQL scripts) and run migrations (callables), in order."""
        await self._call(self._open_sync, list(schemas))

    def _open_sync(self, schemas: list) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.created = not os.path.exists(self.path)
        old = os.umask(0o077)  # database, WAL and journal files: root only
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        finally:
            os.umask(old)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        for schema in schemas:
            if callable(schema):
                schema(conn)
            else:
                conn.executescript(schema)
        self._conn = conn

    async def _call(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"state database {self.path} is not open")
        return self._conn

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._require()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) as one transaction; it commits only if fn returns."""
        return await self._call(self._transaction, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) on the database thread, outside any write."""
        return await self._call(lambda: fn(self._require()))

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
