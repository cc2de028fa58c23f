"""The embedded SQLite database, used from asyncio without blocking the loop.

Every statement runs on one dedicated thread, and writes land in the order
they were issued. WAL with synchronous=FULL: a committed decision survives
`kill -9` of pynet and a power cut of the host, and each `write()` returns
only once it is committed.

Group commit: the writes waiting when the thread takes the next one are
committed together, each in a savepoint of its own (one that fails is rolled
back alone, the others stand), so a burst pays one fsync per group rather
than one per write.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")
# A piece of the database's shape: an SQL script of CREATE ... IF NOT EXISTS, or a migration.
Schema = str | Callable[[sqlite3.Connection], None]


class Database:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self.created = False  # whether open() made a new database file
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pynet-db")
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], Future]] = []
        self._pending_lock = threading.Lock()

    async def open(self, schemas: Iterable[Schema]) -> None:
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

    def _commit_pending(self) -> None:
        """On the database thread: every write queued so far, in one transaction."""
        with self._pending_lock:
            group, self._pending = self._pending, []
        if not group:
            return  # an earlier call took these along
        conn = self._require()
        results: list[tuple[Future, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in group:
                conn.execute("SAVEPOINT pynet_write")
                try:
                    results.append((future, True, fn(conn)))
                except BaseException as exc:  # noqa: BLE001 - handed to its caller
                    conn.execute("ROLLBACK TO pynet_write")
                    results.append((future, False, exc))
                conn.execute("RELEASE pynet_write")
            conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - the group could not commit: all of it failed
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _, future in group:
                future.set_exception(exc)
            return
        for future, ok, value in results:  # answered only once committed
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) as one transaction of its own; it is committed, together with
        the writes queued beside it, only if fn returns."""
        self._require()
        future: Future = Future()
        with self._pending_lock:
            self._pending.append((fn, future))
        self._executor.submit(self._commit_pending)
        return await asyncio.wrap_future(future)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) on the database thread, outside any write."""
        return await self._call(lambda: fn(self._require()))

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
