"""The measurements that need a Docker engine: a private host of the bench's own."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from driver.chains import ISOLATION_2
from tests.support.harness import IMAGE, PLUGIN, DockerHost
from tests.support.plugin_client import PluginClient

from .util import LogReader, RECONCILE, call_latencies, cpu_seconds, iperf_gbps, python_pid, rss_mb

PYNET_NET, BRIDGE_NET, SCALE_NET = "bench-pynet", "bench-bridge", "bench-scale"
PYNET_SUBNET, SCALE_SUBNET = "10.231.0.0/16", "10.232.0.0/22"
DRIVERS = ("pynet", "bridge")


@dataclass
class Sizes:
    starts: int
    burst: int
    burst_rounds: int
    scale: int
    restart_counts: tuple[int, ...]  # saved endpoints at each measured restart
    idle_seconds: int
    idle_networks: int
    idle_endpoints_per_network: int
    iperf_runs: int
    iperf_seconds: int

    @classmethod
    def for_mode(cls, quick: bool) -> "Sizes":
        if quick:
            return cls(starts=5, burst=10, burst_rounds=1, scale=50, restart_counts=(0, 50), idle_seconds=5,
                       idle_networks=3, idle_endpoints_per_network=4, iperf_runs=1, iperf_seconds=2)
        return cls(starts=30, burst=50, burst_rounds=2, scale=500, restart_counts=(0, 100, 500, 1000),
                   idle_seconds=60, idle_networks=50, idle_endpoints_per_network=10, iperf_runs=3,
                   iperf_seconds=5)


@dataclass
class EngineBench:
    host: DockerHost
    sizes: Sizes
    say: Callable[[str], None] = print
    results: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    procs: list = field(default_factory=list)  # iperf3 servers, killed whatever happens

    def __post_init__(self) -> None:
        self.log = LogReader(self.host.workdir / "pynet.log")
        self.nets = {"pynet": PYNET_NET, "bridge": BRIDGE_NET}

    # --- setup -------------------------------------------------------------

    def networks(self) -> None:
        self.host.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                         "--subnet", PYNET_SUBNET, PYNET_NET)
        self.host.docker("network", "create", "-d", "bridge", BRIDGE_NET)  # Docker's default IPAM

    def phase(self, name: str, fn: Callable[[], None]) -> None:
        """Run one measurement; a failure is reported, the others still run."""
        self.say(f"bench: {name} ...")
        t0 = time.monotonic()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported in the results
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            self.say(f"bench: {name} could not be measured: {exc}")
        self.say(f"bench: {name} done in {time.monotonic() - t0:.1f} s")

    def run_all(self) -> None:
        self.phase("idle", self.idle)  # first: with no network of the bench's own yet
        self.networks()
        self.phase("starts", self.starts)
        self.phase("burst", self.burst)
        self.phase("scale", self.scale)
        self.phase("throughput", self.throughput)

    # --- 0. at rest ------------------------------------------------------------

    def _cpu_s(self) -> float:
        """CPU seconds pynet used so far: all its threads and the tools it ran (iptables)."""
        return cpu_seconds(python_pid(self.host.pynet.pid))

    def _cpu_share(self, seconds: int) -> float:
        """pynet's CPU over `seconds` of doing nothing, as a share of one core."""
        c0, t0 = self._cpu_s(), time.monotonic()
        time.sleep(seconds)
        return (self._cpu_s() - c0) / (time.monotonic() - t0)

    def idle(self) -> None:
        sz = self.sizes
        res: dict = {"seconds": sz.idle_seconds, "empty": self._cpu_share(sz.idle_seconds)}
        client = PluginClient(self.host.pynet_socket)
        nets: list[tuple[str, str, str, list]] = []  # (name, network ID, pool ID, endpoints)
        try:
            for i in range(sz.idle_networks):
                name = f"bench-idle-{i}"
                self.host.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                                 "--subnet", f"10.240.{i}.0/24", name)
                nid = self.host.docker("network", "inspect", "-f", "{{.Id}}", name)
                nets.append((name, nid, self._pool_id(client, nid), []))
                for _ in range(sz.idle_endpoints_per_network):
                    nets[-1][3].append(self._endpoint(client, nid, nets[-1][2]))
            time.sleep(3)  # what creating them set going (a reconciliation) is over
            res.update(networks=len(nets), endpoints=sum(len(n[3]) for n in nets),
                       loaded=self._cpu_share(sz.idle_seconds))
            res["isolation_ms"] = self._docker_bridge_isolation(5)
        finally:
            for name, nid, pool_id, made in nets:
                self._remove_endpoints(client, nid, pool_id, made)
                self.host.docker("network", "rm", name)
            client.close()
        self.results["idle"] = res

    def _docker_bridge_isolation(self, times: int) -> list[float]:
        """Milliseconds from `docker network create` (built-in bridge) returning to pynet's
        isolation rule for its bridge being in place (0: in place already); polled every few ms."""
        delays = []
        for i in range(times):
            name = f"bench-iso-{i}"
            self.host.docker("network", "create", "-d", "bridge", name)
            returned = time.perf_counter()
            try:
                bridge = "br-" + self.host.docker("network", "inspect", "-f", "{{.Id}}", name)[:12]
                while True:
                    rules = self.host.netns_exec("iptables", "-w", "-S", ISOLATION_2).stdout
                    if f"-o {bridge} -j DROP" in rules:
                        delays.append(max(0.0, (time.perf_counter() - returned) * 1000))
                        break
                    if time.perf_counter() - returned > 10:
                        raise RuntimeError(f"pynet did not isolate Docker bridge {bridge} within 10 s")
            finally:
                self.host.docker("network", "rm", name)
        return delays

    # --- 1. sequential container starts ------------------------------------

    def _start_once(self, driver: str) -> float:
        t0 = time.perf_counter()
        proc = self.host.docker_proc("run", "--rm", "--network", self.nets[driver], IMAGE, "true")
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"docker run on {driver} failed: {proc.stderr.strip()}")
        return took

    def starts(self) -> None:
        for driver in DRIVERS:  # warm-up, not counted: first run of each loads caches
            self._start_once(driver)
        times = {d: [] for d in DRIVERS}
        offset = self.log.offset()
        for i in range(self.sizes.starts):
            for driver in (DRIVERS if i % 2 == 0 else DRIVERS[::-1]):  # ABBA: no order bias
                times[driver].append(self._start_once(driver))
        self.results["starts"] = times
        self.results["latency_c1"] = call_latencies(self.log.lines_since(offset))

    # --- 2. burst ------------------------------------------------------------

    def _burst_once(self, driver: str, rnd: int) -> dict:
        n = self.sizes.burst
        names = [f"bench-burst-{driver}-{rnd}-{i}" for i in range(n)]
        gate = threading.Barrier(n)

        def one(name: str) -> str:
            """'' when it started, else why not."""
            gate.wait()
            proc = self.host.docker_proc("run", "-d", "--name", name, "--network", self.nets[driver],
                                         IMAGE, "sleep", "1000", timeout=300)
            return "" if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")
        try:
            with ThreadPoolExecutor(max_workers=n) as pool:
                t0 = time.perf_counter()
                errors = [e for e in pool.map(one, names) if e]
                wall = time.perf_counter() - t0
        finally:
            self.host.docker_proc("rm", "-f", *names, timeout=300)
        if errors and driver == "pynet":
            self.keep_log(f"burst round {rnd}")
        return {"wall_s": wall, "failures": len(errors), "errors": errors[:3]}

    def keep_log(self, why: str) -> None:
        """pynet's log outlives the private host when something failed."""
        kept = Path(tempfile.mkdtemp(prefix="pynet-bench-log-")) / "pynet.log"
        shutil.copy(self.host.workdir / "pynet.log", kept)
        self.say(f"bench: {why} had failures: pynet's log is kept in {kept}")

    def burst(self) -> None:
        runs = {d: [] for d in DRIVERS}
        lines: list[str] = []
        for rnd in range(self.sizes.burst_rounds):
            for driver in (DRIVERS if rnd % 2 == 0 else DRIVERS[::-1]):
                offset = self.log.offset()
                runs[driver].append(self._burst_once(driver, rnd))
                if driver == "pynet":
                    lines += self.log.lines_since(offset)
        self.results["burst"] = runs
        self.results["latency_burst"] = call_latencies(lines)

    # --- 4. scale through the plugin API --------------------------------------

    def _pool_id(self, client: PluginClient, network_id: str) -> str:
        _, state = client.request("GET", "/debug/state")
        for pool in state["pools"]:
            if pool.get("network") == network_id:
                return pool["id"]
        raise RuntimeError(f"no pynet pool for network {network_id[:12]} in /debug/state")

    # pynet's flags for this run (set by the command: as an operator runs it).
    pynet_flags: tuple[str, ...] = ()

    def _restart(self, client: PluginClient) -> dict:
        """Restart pynet; wall time until /healthz says ready, and its own reconcile time."""
        client.close()
        self.host.stop_pynet()
        offset = self.log.offset()
        t0 = time.perf_counter()
        self.host.start_pynet(self.pynet_flags, wait=False)
        served_s = None
        while True:  # every 5 ms: a call answered (serving), then /healthz ready (all verified)
            try:
                if served_s is None:
                    status, _ = client.request("POST", "/Plugin.Activate", {})
                    if status == 200:
                        served_s = time.perf_counter() - t0
                    status, health = 0, {}
                if served_s is not None:
                    status, health = client.request("GET", "/healthz")
            except OSError:
                client.close()
                status, health = 0, {}
            if status == 200:
                break
            if time.perf_counter() - t0 > 60:
                raise RuntimeError(f"pynet not ready 60 s after restart: {health}")
            time.sleep(0.005)
        ready_s = time.perf_counter() - t0
        reconcile = [float(m["s"]) for m in map(RECONCILE.search, self.log.lines_since(offset)) if m]
        return {"served_s": served_s, "ready_s": ready_s,
                "reconcile_s": reconcile[-1] if reconcile else float("nan"),
                "endpoints": health.get("endpoints"), "rss_mb": rss_mb(self.host.pynet.pid)}

    def _endpoint(self, client: PluginClient, network_id: str, pool_id: str) -> tuple[str, str]:
        """One endpoint through the plugin API, as Docker makes it: (ID, address)."""
        eid = secrets.token_hex(32)
        addr = client.call("IpamDriver.RequestAddress", {"PoolID": pool_id})["Address"]
        try:
            client.call("NetworkDriver.CreateEndpoint",
                        {"NetworkID": network_id, "EndpointID": eid, "Interface": {"Address": addr}})
        except Exception:
            client.call("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": addr.split("/")[0]})
            raise
        return eid, addr.split("/")[0]

    def _remove_endpoints(self, client: PluginClient, network_id: str, pool_id: str,
                          made: list[tuple[str, str]]) -> None:
        for eid, ip in made:
            client.call("NetworkDriver.DeleteEndpoint", {"NetworkID": network_id, "EndpointID": eid})
            client.call("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": ip})

    def scale(self) -> None:
        n = self.sizes.scale
        self.host.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                         "--subnet", SCALE_SUBNET, SCALE_NET)
        network_id = self.host.docker("network", "inspect", "-f", "{{.Id}}", SCALE_NET)
        client = PluginClient(self.host.pynet_socket)
        made: list[tuple[str, str]] = []  # (endpoint ID, address)
        res: dict = {"endpoints": n}
        pool_id = ""
        try:
            pool_id = self._pool_id(client, network_id)
            res["restart_0"] = self._restart(client)  # baseline: the same restart, no scale endpoints
            res["rss_0_mb"] = rss_mb(self.host.pynet.pid)
            res["restarts"] = {0: res["restart_0"]}
            per = []
            for count in self.sizes.restart_counts[1:]:
                while len(made) < count:
                    t0 = time.perf_counter()
                    made.append(self._endpoint(client, network_id, pool_id))
                    if len(per) < n:
                        per.append(time.perf_counter() - t0)
                if count == n:
                    res["per_endpoint_s"] = per
                    res["rss_n_mb"] = rss_mb(self.host.pynet.pid)
                res["restarts"][count] = self._restart(client)
                self.say(f"bench: restart with {count} endpoints: serving after"
                         f" {res['restarts'][count]['served_s']:.2f} s")
            res["restart_n"] = res["restarts"].get(n, {})
        finally:
            t0 = time.perf_counter()
            self._remove_endpoints(client, network_id, pool_id, made)
            res["cleanup_s"] = time.perf_counter() - t0
            res["cleaned_up"] = len(made)
            client.close()
            self.results["scale"] = res
            self.host.docker("network", "rm", SCALE_NET)

    # --- 6. data plane ------------------------------------------------------------

    def _iperf_once(self, pair: dict, seconds: int) -> float:
        return iperf_gbps(pair["server_pid"], pair["client_pid"], pair["ip"], seconds, self.procs)

    def throughput(self) -> None:
        pairs = {}
        for driver in DRIVERS:
            pair = {}
            for role in ("server", "client"):
                name = f"bench-iperf-{driver}-{role}"
                self.host.docker("run", "-d", "--name", name, "--network", self.nets[driver], IMAGE, "sleep", "1000")
                pair[f"{role}_pid"] = self.host.docker("inspect", "-f", "{{.State.Pid}}", name)
            pair["ip"] = self.host.container_ip(f"bench-iperf-{driver}-server", self.nets[driver])
            pairs[driver] = pair
        gbps = {d: [] for d in DRIVERS}
        try:
            for i in range(self.sizes.iperf_runs):
                for driver in (DRIVERS if i % 2 == 0 else DRIVERS[::-1]):
                    gbps[driver].append(self._iperf_once(pairs[driver], self.sizes.iperf_seconds))
        finally:
            self.host.docker_proc("rm", "-f", *(f"bench-iperf-{d}-{r}" for d in DRIVERS for r in ("server", "client")))
        self.results["throughput_gbps"] = gbps
        self.results["iperf_seconds"] = self.sizes.iperf_seconds

    def kill_procs(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
