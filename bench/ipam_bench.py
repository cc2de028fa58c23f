"""In-process IPAM: IpamService on a real state database, no engine needed."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

from driver.db import Database
from ipam.store import sqlite as store
from ipam.addr import parse_network
from ipam.allocator import PoolAllocator
from ipam.errors import PoolExhausted
from ipam.service import IpamService
from ipam.wire import ReleaseAddressRequest, RequestAddressRequest, RequestPoolRequest


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def _checkpoint(db: Database) -> None:
    await db.read(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())


@contextlib.asynccontextmanager
async def _pool(path: Path, subnet: str):
    """A state database at `path`, an IpamService on it, and a pool of `subnet`."""
    db = Database(str(path))
    await db.open([store.SCHEMA])
    try:
        svc = IpamService(store.SqliteIpamStore(db), [])
        yield db, svc, (await svc.request_pool(RequestPoolRequest(Pool=subnet))).PoolID
    finally:
        await db.close()


async def _fill_and_release(tmp: Path, subnet: str) -> dict:
    """Every address of `subnet`, one RequestAddress each (each one persisted, as
    in pynet), then every one released."""
    path = tmp / "fill.db"
    async with _pool(path, subnet) as (db, svc, pool_id):
        size = svc.pools[pool_id].allocator.size
        addrs = []
        t0 = time.perf_counter()
        for _ in range(size):
            reply = await svc.request_address(RequestAddressRequest(PoolID=pool_id))
            addrs.append(reply.Address.split("/")[0])
        alloc_s = time.perf_counter() - t0
        try:
            await svc.request_address(RequestAddressRequest(PoolID=pool_id))
            exhausted = False
        except PoolExhausted:
            exhausted = True
        await _checkpoint(db)
        db_bytes = _db_bytes(path)
        t0 = time.perf_counter()
        for a in addrs:
            await svc.release_address(ReleaseAddressRequest(PoolID=pool_id, Address=a))
        release_s = time.perf_counter() - t0
        left = svc.pools[pool_id].allocator.used_total
    return {"subnet": subnet, "addresses": size, "alloc_s": alloc_s, "release_s": release_s,
            "exhausted_after": exhausted, "db_bytes_full": db_bytes, "left_after_release": left}


async def _big_pool(tmp: Path, subnet: str, count: int) -> dict:
    path = tmp / "big.db"
    async with _pool(path, subnet) as (db, svc, pool_id):
        await _checkpoint(db)
        empty_bytes = _db_bytes(path)
        t0 = time.perf_counter()
        for _ in range(count):
            await svc.request_address(RequestAddressRequest(PoolID=pool_id))
        alloc_s = time.perf_counter() - t0
        await _checkpoint(db)
        db_bytes = _db_bytes(path)
        # Reload, as pynet does at start: its time, then (tracing slows it) its memory.
        t0 = time.perf_counter()
        again = IpamService(store.SqliteIpamStore(db), [])
        await again.load()
        load_s = time.perf_counter() - t0
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        traced = IpamService(store.SqliteIpamStore(db), [])
        await traced.load()
        load_mem = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        del traced
        loaded = again.pools[pool_id].allocator.used_total

    # The allocator alone: an empty /8, the same `count` automatic picks.
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    alloc = PoolAllocator(parse_network(subnet))
    empty_mem = tracemalloc.get_traced_memory()[0] - base
    for _ in range(count):
        alloc.allocate()
    seq_mem = tracemalloc.get_traced_memory()[0] - base
    del alloc
    # Worst case for an interval set: every other address held (count/10 of them).
    alloc = PoolAllocator(parse_network(subnet))
    base2 = tracemalloc.get_traced_memory()[0]
    frag = count // 10
    lo = int(alloc.pool.network_address)
    for i in range(frag):
        alloc.reserve(type(alloc.pool.network_address)(lo + 2 + 2 * i))
    frag_mem = tracemalloc.get_traced_memory()[0] - base2
    tracemalloc.stop()
    return {"subnet": subnet, "addresses": count, "alloc_s": alloc_s, "db_bytes_empty": empty_bytes,
            "db_bytes": db_bytes, "load_s": load_s, "load_mem": load_mem, "loaded": loaded,
            "alloc_mem_empty": empty_mem, "alloc_mem": seq_mem,
            "frag_addresses": frag, "frag_mem": frag_mem}


async def _run(quick: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="pynet-bench-ipam-"))
    try:
        fill = await _fill_and_release(tmp, "10.0.0.0/20" if quick else "10.0.0.0/16")
        big = await _big_pool(tmp, "10.0.0.0/8", 10_000 if quick else 100_000)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"fill": fill, "big": big}


def run(quick: bool) -> dict:
    return asyncio.run(_run(quick))
