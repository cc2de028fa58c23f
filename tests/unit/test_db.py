"""The state database's writes: in order, each on its own, committed before they answer."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from driver.db import Database

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);"


@pytest.fixture
async def db(tmp_path):
    database = Database(str(tmp_path / "state.db"))
    await database.open([SCHEMA])
    yield database
    await database.close()


def rows(path: str) -> list[tuple]:
    """What another connection (a restarted pynet) reads: committed rows only."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT k, v FROM t ORDER BY k").fetchall()
    finally:
        conn.close()


async def test_concurrent_writes_all_land_committed_in_order(db):
    order = []

    def put(k: int):
        def fn(c):
            order.append(k)
            c.execute("INSERT INTO t VALUES (?, ?)", (k, f"v{k}"))
            return k
        return fn

    results = await asyncio.gather(*(db.write(put(k)) for k in range(200)))
    assert results == list(range(200)) and order == list(range(200))
    assert rows(db.path) == [(k, f"v{k}") for k in range(200)]


async def test_a_failing_write_is_rolled_back_alone(db):
    def bad(c):
        c.execute("INSERT INTO t VALUES (1, 'half')")
        raise ValueError("refused")

    good = [db.write(lambda c, k=k: c.execute("INSERT INTO t VALUES (?, 'ok')", (k,))) for k in (0, 2)]
    outcome = await asyncio.gather(good[0], db.write(bad), good[1], return_exceptions=True)
    assert isinstance(outcome[1], ValueError)
    assert rows(db.path) == [(0, "ok"), (2, "ok")]
    # A constraint error is the caller's too, and the rest still commits.
    outcome = await asyncio.gather(db.write(lambda c: c.execute("INSERT INTO t VALUES (0, 'dup')")),
                                   db.write(lambda c: c.execute("INSERT INTO t VALUES (3, 'ok')")),
                                   return_exceptions=True)
    assert isinstance(outcome[0], sqlite3.IntegrityError) and rows(db.path)[-1] == (3, "ok")


async def test_a_write_answers_only_once_committed(db):
    seen = []

    async def writer():
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (7, 'x')"))
        seen.append(rows(db.path))  # another connection sees it at once

    await asyncio.gather(writer(), *(db.write(lambda c, k=k: c.execute(
        "INSERT INTO t VALUES (?, 'y')", (100 + k,))) for k in range(20)))
    assert (7, "x") in seen[0]


async def test_writes_on_a_closed_database_fail(tmp_path):
    database = Database(str(tmp_path / "state.db"))
    with pytest.raises(RuntimeError, match="not open"):
        await database.write(lambda c: None)


async def test_a_burst_of_writes_shares_commits(db):
    commits = []
    db._conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    await asyncio.gather(*(db.write(lambda c, k=k: c.execute("INSERT INTO t VALUES (?, 'v')", (k,)))
                           for k in range(200)))
    assert len(rows(db.path)) == 200
    assert 1 <= len(commits) < 200
