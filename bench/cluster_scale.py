"""python -m bench.cluster_scale [--quick] [--out DIR]: what the cluster costs as hosts grow.

10, 50 and 200 member hosts (3 and 10 with --quick) against one real etcd on
loopback, simulated in this one process: each host is pynet's own cluster
parts (membership with its lease, the cluster IPAM, the endpoint records and
their watch), with its own state database, and a follower that records what
it learns where the overlay would program the kernel. No Docker, no kernel
work. Per size:

- a late host joins when every host already runs containers: the time it
  takes to learn all their endpoints;
- container starts (an address claimed, the endpoint published), one after
  another across the hosts: etcd transactions and watch events per start,
  publish-to-programmed on every other host (p50, p99), etcd's CPU per start;
- etcd's CPU at rest (the hosts' lease keep-alives).

Writes DIR/benchmarks-cluster.md and DIR/benchmarks-cluster.png (DIR: docs,
or a temporary directory with --quick). No figure is a gate.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from driver import __version__
from driver.app import open_state
from driver.cluster.endpoints import Endpoints
from driver.cluster.etcd import Etcd, EtcdSettings
from driver.cluster.ipam_store import EtcdIpamStore
from driver.cluster.keys import Keys
from driver.cluster.membership import Membership
from driver.db import Database

from .util import cpu_seconds, percentile

NETWORK = "scale"
SUBNET = ipaddress.ip_network("10.64.0.0/12")
HOSTS_PER_CLIENT = 10  # simulated hosts sharing one etcd connection (each keeps its own lease and watch)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Learner:
    """Where the overlay's peers would program the kernel. It only counts: what a real
    follower computes per event (Endpoints.remote over the network's records) is
    measured apart (follower_cost), so that one process can stand for 200 hosts."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.events = 0  # syncs asked of it: one per watch event of its network

    def networks(self) -> list[str]:
        return [NETWORK]

    async def sync(self, name: str) -> None:
        self.events += 1

    @property
    def known(self) -> int:
        """Records of every host's endpoints it holds (its own included)."""
        return len(self.endpoints.records)


def follower_cost(records: int) -> float:
    """Seconds one host spends per watch event computing what a network of `records`
    endpoints wants (Endpoints.remote, as the overlay's peers and the routed mode's
    routes call it on every event)."""
    keys = Keys("/cost")
    e = Endpoints(etcd=None, keys=keys, membership=type("M", (), {"host": "h0"})(), db=None)  # type: ignore[arg-type]
    for i in range(records):
        e.records[keys.endpoint(NETWORK, f"{i:064x}").decode()] = (i, {
            "host": f"h{i % 200}", "ips": [str(SUBNET.network_address + i + 2)], "vtep": "198.18.0.1"})
    rounds = max(3, 20000 // max(records, 1))
    began = time.perf_counter()
    for _ in range(rounds):
        e.remote(NETWORK)
    return (time.perf_counter() - began) / rounds


@dataclass
class SimHost:
    name: str
    etcd: Etcd
    keys: Keys
    db: Database
    programmed: list[float]
    membership: Membership = field(init=False)
    ipam: EtcdIpamStore = field(init=False)
    endpoints: Endpoints = field(init=False)
    learner: Learner = field(init=False)
    pool: str = ""
    tasks: list[asyncio.Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        index = int(self.name[1:])
        vtep = f"198.18.{index // 250}.{index % 250 + 1}"
        self.membership = Membership(self.etcd, self.keys, self.name, vtep, __version__, lease_ttl=10)
        self.ipam = EtcdIpamStore(self.etcd, self.keys, self.membership, self.db)
        self.membership.on_registered = self.ipam.registered
        self.endpoints = Endpoints(self.etcd, self.keys, self.membership, self.db)
        self.learner = Learner(self.endpoints)
        self.endpoints.follow(self.learner)
        self.endpoints.on_programmed = self.programmed.append

    async def start(self) -> None:
        await self.ipam.load()
        await self.endpoints.load()
        await self.membership.register()
        self.pool = await self.ipam.define_pool(NETWORK, SUBNET, None)
        self.tasks = [asyncio.create_task(self.membership.keep_alive()), asyncio.create_task(self.endpoints.run())]

    async def container(self) -> None:
        """What a container start asks of the cluster: an address, then its record."""
        address = await self.ipam.claim_next(self.pool)
        await self.endpoints.publish(NETWORK, secrets.token_hex(32), [str(address)], mac="02:00:00:00:00:01")

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.db.close()


class Calls:
    """etcd calls by kind, as every simulated host's client makes them."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, call: str, _seconds: float, _ok: bool) -> None:
        self.counts[call] = self.counts.get(call, 0) + 1


async def until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def one_size(hosts: int, per_host: int, starts: int, endpoint: str, etcd_pid: int, tmp: Path) -> dict:
    keys = Keys(f"/scale{hosts}-{secrets.token_hex(3)}")
    calls = Calls()
    clients: list[Etcd] = []
    programmed: list[float] = []
    sims: list[SimHost] = []

    def client(i: int) -> Etcd:
        if i % HOSTS_PER_CLIENT == 0:
            etcd = Etcd(EtcdSettings((endpoint,), timeout=10.0))
            etcd.observer = calls
            clients.append(etcd)
        return clients[-1]

    async def host(i: int) -> SimHost:
        db = await open_state(str(tmp / f"{keys.prefix.strip('/')}-h{i}.db"))
        return SimHost(f"h{i}", client(i), keys, db, programmed)

    try:
        for i in range(hosts):
            sims.append(await host(i))
        await asyncio.gather(*(s.start() for s in sims))
        await until(lambda: all(s.endpoints.synced.is_set() for s in sims), 60)
        # Every host runs `per_host` containers already.
        for _ in range(per_host):
            await asyncio.gather(*(s.container() for s in sims))
        records = hosts * per_host
        settled = await until(lambda: all(s.learner.known == records for s in sims), 120)

        # A late host learns them all.
        late = await host(hosts)
        began = time.monotonic()
        await late.start()
        learned = await until(lambda: late.learner.known == records, 120)
        learn_seconds = time.monotonic() - began
        sims.append(late)

        # At rest: the leases' keep-alives.
        cpu0 = cpu_seconds(etcd_pid)
        await asyncio.sleep(5)
        idle_ms_per_s = (cpu_seconds(etcd_pid) - cpu0) * 1000 / 5

        # Container starts, one after another across the hosts.
        programmed.clear()
        events0 = sum(s.learner.events for s in sims)
        calls0 = dict(calls.counts)
        cpu0 = cpu_seconds(etcd_pid)
        began = time.monotonic()
        for n in range(starts):
            await sims[n % len(sims)].container()
        total = records + starts
        caught_up = await until(lambda: all(s.learner.known == total for s in sims)
                                and len(programmed) >= starts * (len(sims) - 1), 120)
        took = time.monotonic() - began
        cpu = cpu_seconds(etcd_pid) - cpu0
        events = sum(s.learner.events for s in sims) - events0
        txns = calls.counts.get("txn", 0) - calls0.get("txn", 0)
        return {"hosts": hosts, "records": records, "settled": settled, "learned": learned,
                "learn_s": learn_seconds, "idle_ms_per_s": idle_ms_per_s, "starts": starts,
                "caught_up": caught_up, "starts_per_s": starts / took if took else 0.0,
                "txn_per_start": txns / starts, "events_per_start": events / starts,
                "programmed_n": len(programmed),
                "p50_ms": percentile(programmed, 50) * 1000 if programmed else None,
                "p99_ms": percentile(programmed, 99) * 1000 if programmed else None,
                "etcd_cpu_ms_per_start": cpu * 1000 / starts,
                "follower_ms_per_event": follower_cost(total) * 1000}
    finally:
        await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)
        for etcd in clients:
            await etcd.close()


async def run_all(sizes: tuple[int, ...], per_host: int, starts: int) -> tuple[list[dict], dict]:
    from tests.support.etcd import TestEtcd
    server = TestEtcd()  # loopback only
    tmp = Path(tempfile.mkdtemp(prefix="pynet-scale-"))
    results = []
    try:
        server.start()
        assert server.proc is not None
        for hosts in sizes:
            say(f"bench.cluster_scale: {hosts} hosts ...")
            t0 = time.monotonic()
            results.append(await one_size(hosts, per_host, starts, server.endpoint, server.proc.pid, tmp))
            say(f"bench.cluster_scale: {hosts} hosts done in {time.monotonic() - t0:.1f} s")
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    import subprocess
    version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()
    return results, {"etcd": version[0] if version else "etcd"}


def _v(value: Optional[float], fmt: str = "{:.1f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def markdown(results: list[dict], meta: dict) -> str:
    out = ["# The cluster at scale", "",
           f"`python -m bench.cluster_scale{' --quick' if meta['quick'] else ''}` on {meta['date']}"
           f" ({meta['nproc']} CPUs, commit {meta['commit']}; one {meta['etcd']} on loopback, every host simulated"
           " in one"
           " process: pynet's membership, cluster IPAM and endpoint watch, no Docker, no kernel work).", "",
           f"Each host runs {meta['per_host']} containers before a late host joins; then {meta['starts']} container"
           " starts, one after another across the hosts.", "",
           "| hosts | records when the late host joins | late host learns them | etcd txns per start"
           " | watch events per start | publish to programmed p50 / p99 | etcd CPU per start | etcd CPU at rest"
           " | each host's CPU per event |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        out.append(f"| {r['hosts']} | {r['records']} | {_v(r['learn_s'], '{:.2f}')} s"
                   f"{'' if r['learned'] else ' (not all)'} | {_v(r['txn_per_start'])} | {_v(r['events_per_start'])}"
                   f" | {_v(r['p50_ms'])} / {_v(r['p99_ms'])} ms (n={r['programmed_n']})"
                   f"{'' if r['caught_up'] else ' (not all)'} | {_v(r['etcd_cpu_ms_per_start'])} ms"
                   f" | {_v(r['idle_ms_per_s'])} ms/s | {_v(r['follower_ms_per_event'], '{:.3f}')} ms |")
    big = meta.get("follower_10k_ms")
    out += ["", "Each host's CPU per event: what it computes for one watch event (the network's wanted entries"
            " from all its records, Endpoints.remote), measured apart at that many records"
            + (f"; at 10,000 records it is {big:.1f} ms." if big is not None else "."),
            "", "![the cluster at scale](benchmarks-cluster.png)", "",
            "What these mean, what breaks first and the design answer: docs/performance.md, \"The cluster as"
            " hosts grow\".", ""]
    return "\n".join(out)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    hosts = [r["hosts"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(hosts, [r["p99_ms"] or 0 for r in results], "o-", label="publish to programmed p99 (ms)")
    left.plot(hosts, [r["learn_s"] * 1000 for r in results], "s-", label="late host learns every record (ms)")
    left.set_xlabel("member hosts")
    left.set_ylabel("ms")
    left.legend()
    left.grid(alpha=0.3)
    right.plot(hosts, [r["events_per_start"] for r in results], "o-", label="watch events per start")
    right.plot(hosts, [r["etcd_cpu_ms_per_start"] for r in results], "s-", label="etcd CPU per start (ms)")
    right.plot(hosts, [r["txn_per_start"] for r in results], "^-", label="etcd txns per start")
    right.plot(hosts, [r["follower_ms_per_event"] * 100 for r in results], "d-",
               label="each host's CPU per event (ms x 100)")
    right.set_xlabel("member hosts")
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle("pynet's cluster parts against one etcd, as hosts grow")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    import datetime as dt
    import subprocess
    ap = argparse.ArgumentParser(prog="python -m bench.cluster_scale", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 and 10 hosts")
    ap.add_argument("--out", help="directory of benchmarks-cluster.md and .png (default: docs, or a temp dir"
                                  " with --quick)")
    args = ap.parse_args(argv)
    if shutil.which("etcd") is None:
        say("bench.cluster_scale: etcd is not installed (apt-get install etcd-server)")
        return 1
    sizes, per_host, starts = ((3, 10), 2, 10) if args.quick else ((10, 50, 200), 20, 40)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="pynet-scale-out-")) if args.quick
                                           else Path("docs"))
    out.mkdir(parents=True, exist_ok=True)
    results, extra = asyncio.run(run_all(sizes, per_host, starts))
    extra["follower_10k_ms"] = follower_cost(10000) * 1000
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"quick": args.quick, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(), "commit": commit or "n/a", "per_host": per_host, "starts": starts, **extra}
    text = markdown(results, meta)
    (out / "benchmarks-cluster.md").write_text(text)
    plot(results, out / "benchmarks-cluster.png")
    print(text)
    say(f"bench.cluster_scale: wrote {out / 'benchmarks-cluster.md'} and .png")
    return 0 if all(r["learned"] and r["caught_up"] and r["settled"] for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
