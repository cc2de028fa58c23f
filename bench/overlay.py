"""The cluster modes' figures: two private Docker hosts on the rig's underlay
(tests/support/cluster_rig.py), one etcd, a pynet network in the overlay
mode and one in the routed mode; beside them Docker's own Swarm overlay on
the same two hosts (an attachable network), the built-in bridge and the
underlay itself as controls."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from tests.support.cluster_rig import PREFIX, Underlay, docker_cluster, histogram, metrics_text
from tests.support.harness import IMAGE, PLUGIN

from .util import iperf_gbps

NET, BRIDGE_NET, ROUTED_NET, SWARM_NET = "bench-overlay", "bench-ovl-bridge", "bench-routed", "bench-swarm"
SWARM_DATA_PORT = "7789"  # not 4789: pynet's VXLAN devices have that one
UNDERLAY_IPS = ("198.18.42.1", "198.18.42.2")  # docker_cluster's hosts, in order


def metrics(host) -> str:
    return metrics_text(host.pynet_socket)


def counter(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{name}_total{{{labels}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class OverlayBench:
    def __init__(self, quick: bool, flags: tuple[str, ...], say: Callable[[str], None]) -> None:
        self.quick, self.flags, self.say = quick, flags, say
        self.starts = 5 if quick else 20
        self.iperf_runs, self.iperf_seconds = (1, 2) if quick else (3, 5)
        self.results: dict = {}
        self.swarm = False  # Swarm's overlay runs beside pynet's
        self.procs: list[subprocess.Popen] = []

    def run(self) -> dict:
        directory = Path(tempfile.mkdtemp(prefix="pynet-bench-overlay-"))
        underlay = Underlay(f"{PREFIX}bench-", directory)
        try:
            underlay.start()
            with docker_cluster(underlay, ["bench-o1", "bench-o2"], flags=self.flags) as hosts:
                for host in hosts:
                    for mode, net, subnet in (("overlay", NET, "10.233.0.0/16"), ("routed", ROUTED_NET, "10.234.0.0/16")):
                        host.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "-o", f"pynet.mode={mode}",
                                    "-o", f"pynet.cluster={net}", "--ipam-opt", f"pynet.cluster={net}",
                                    "--subnet", subnet, net)
                hosts[0].docker("network", "create", "-d", "bridge", BRIDGE_NET)
                self.swarm = self.start_swarm(hosts)
                try:
                    self.start_times(hosts)
                    self.first_packets(hosts)
                    self.throughput(hosts)
                finally:
                    for p in self.procs:
                        if p.poll() is None:
                            p.kill()
                            p.wait()
        finally:
            underlay.close()
            shutil.rmtree(directory, ignore_errors=True)
        return self.results

    def start_swarm(self, hosts) -> bool:
        """Docker's Swarm overlay on the same hosts: o1 a manager, o2 a worker, an attachable
        network. False (and why, in the results) if this engine cannot."""
        o1, o2 = hosts
        try:
            o1.docker("swarm", "init", "--advertise-addr", "198.18.42.1", "--listen-addr", "198.18.42.1:2377",
                      "--data-path-port", SWARM_DATA_PORT)
            token = o1.docker("swarm", "join-token", "-q", "worker").strip()
            o2.docker("swarm", "join", "--token", token, "--advertise-addr", "198.18.42.2",
                      "--listen-addr", "198.18.42.2:2377", "198.18.42.1:2377")
            o1.docker("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.235.0.0/16", SWARM_NET)
            return True
        except Exception as exc:  # noqa: BLE001 - the rest is measured without it
            self.results["swarm_error"] = f"{type(exc).__name__}: {exc}"
            self.say(f"bench: no Swarm overlay: {self.results['swarm_error']}")
            return False

    def start_times(self, hosts) -> None:
        """docker run --rm on each network, in rotating order; etcd transactions per start
        on the starting host; publish-to-programmed on the other."""
        o1, o2 = hosts
        nets = {"overlay": NET, "routed": ROUTED_NET, "bridge": BRIDGE_NET, **({"swarm": SWARM_NET} if self.swarm else {})}
        for net in nets.values():
            o1.docker("run", "--rm", "--network", net, IMAGE, "true")  # warm-up
        before1, before2 = metrics(o1), metrics(o2)
        times: dict[str, list[float]] = {kind: [] for kind in nets}
        kinds = list(nets)
        for i in range(self.starts):
            for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
                t0 = time.perf_counter()
                o1.docker("run", "--rm", "--network", nets[kind], IMAGE, "true")
                times[kind].append(time.perf_counter() - t0)
        after1, after2 = metrics(o1), metrics(o2)
        txn = (counter(after1, "pynet_cluster_etcd_requests", 'call="txn",outcome="ok"')
               - counter(before1, "pynet_cluster_etcd_requests", 'call="txn",outcome="ok"'))
        b0 = histogram(before2, "pynet_cluster_publish_to_programmed_seconds")
        b1 = histogram(after2, "pynet_cluster_publish_to_programmed_seconds")
        programmed = {le: b1[le] - b0.get(le, 0.0) for le in b1}
        # Both pynet networks started a container each round: per start, half of it.
        self.results.update(start_times=times, txn_per_start=txn / self.starts / 2, programmed=programmed)

    def first_packets(self, hosts) -> None:
        """From `docker run` on o1 to the container's first ping answered by a container on
        o2, per cluster network, in rotating order: start and first packet across hosts."""
        o1, o2 = hosts
        nets = {"overlay": NET, "routed": ROUTED_NET, **({"swarm": SWARM_NET} if self.swarm else {})}
        targets = {}
        for kind, net in nets.items():
            o2.docker("run", "-d", "--name", f"bench-fp-{kind}", "--network", net, IMAGE, "sleep", "1000")
            targets[kind] = o2.container_ip(f"bench-fp-{kind}", net)
        times: dict[str, list[float]] = {kind: [] for kind in nets}
        kinds = list(nets)
        try:
            for i in range(self.starts):
                for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
                    # ping's own timeout is 1 s a try: a late first answer costs at most that.
                    loop = f"until ping -c 1 -W 1 {targets[kind]} >/dev/null 2>&1; do :; done"
                    t0 = time.perf_counter()
                    o1.docker("run", "--rm", "--network", nets[kind], IMAGE, "sh", "-c", loop, timeout=60)
                    times[kind].append(time.perf_counter() - t0)
        finally:
            for kind in nets:
                o2.docker_proc("rm", "-f", f"bench-fp-{kind}")
        self.results["first_packet"] = times

    def _pair(self, host, server_host, suffix: str, net: str = NET) -> dict:
        server, client = f"bench-ovl-srv-{suffix}", f"bench-ovl-cli-{suffix}"
        server_host.docker("run", "-d", "--name", server, "--network", net, IMAGE, "sleep", "1000")
        host.docker("run", "-d", "--name", client, "--network", net, IMAGE, "sleep", "1000")
        return {"server_pid": server_host.docker("inspect", "-f", "{{.State.Pid}}", server),
                "client_pid": host.docker("inspect", "-f", "{{.State.Pid}}", client),
                "ip": server_host.container_ip(server, net), "hosts": (server_host, host),
                "names": (server, client)}

    @staticmethod
    def _underlay(o1, o2) -> dict:
        """The control: host namespace to host namespace over the underlay, nothing of pynet's."""
        return {"server_pid": str(o2.holder.pid), "client_pid": str(o1.holder.pid), "ip": UNDERLAY_IPS[1],
                "hosts": (), "names": ()}

    def _iperf(self, pair: dict) -> float:
        return iperf_gbps(pair["server_pid"], pair["client_pid"], pair["ip"], self.iperf_seconds, self.procs)

    def throughput(self, hosts) -> None:
        o1, o2 = hosts
        pairs = {"cross-host": self._pair(o1, o2, "x"), "same host": self._pair(o1, o1, "s"),
                 "routed cross-host": self._pair(o1, o2, "r", ROUTED_NET), "underlay": self._underlay(o1, o2)}
        if self.swarm:
            pairs["swarm cross-host"] = self._pair(o1, o2, "w", SWARM_NET)
        try:
            gbps: dict[str, list[float]] = {k: [] for k in pairs}
            order = list(pairs)
            for i in range(self.iperf_runs):  # each run in another order, so drift does not favour one
                for kind in order[i % len(order):] + order[:i % len(order)]:
                    gbps[kind].append(self._iperf(pairs[kind]))
        finally:
            for pair in pairs.values():
                for host, name in zip(pair["hosts"], pair["names"], strict=True):
                    host.docker_proc("rm", "-f", name)
        self.results["throughput_gbps"] = gbps


def programmed_percentile(programmed: dict[float, float], q: float) -> float:
    """The bucket bound under which q % of the publish-to-programmed times fall (an upper bound)."""
    total = programmed.get(float("inf"), 0.0)
    if not total:
        return float("nan")
    for le in sorted(programmed):
        if programmed[le] >= total * q / 100:
            return le
    return float("inf")

