"""Several pynet "hosts" on one machine, without Docker: each a network
namespace with its own pynet (overlay mode on), joined by an underlay bridge
in a namespace of its own, with one etcd in another namespace on that
underlay. The tests speak Docker's plugin API to each pynet and play
Docker's part for containers (a namespace each, the interface Join names
moved in). Addresses: underlay 198.18.42.0/24 only; nothing leaves the rig.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from .harness import run
from .plugin_client import PluginClient

UNDERLAY = "198.18.42"
ETCD_IP = f"{UNDERLAY}.100"
PREFIX = "pynet-c-"  # every namespace of the rig; tests/kernel clears stale ones by it
ROOT = Path(__file__).resolve().parents[2]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(argv, check=check, timeout=60)


class Host:
    def __init__(self, rig: "ClusterRig", index: int) -> None:
        self.rig, self.index = rig, index
        self.name = f"h{index}"
        self.ns = f"{rig.prefix}{self.name}"
        self.vtep = f"{UNDERLAY}.{index}"
        self.dir = rig.dir / self.name
        self.socket = self.dir / "pynet.sock"
        self.proc: Optional[subprocess.Popen] = None
        self.client: Optional[PluginClient] = None

    def plug(self) -> None:
        sh("ip", "netns", "add", self.ns)
        self.rig.attach(self.ns, f"{self.vtep}/24", f"u{self.index}")
        self.dir.mkdir(parents=True, exist_ok=True)

    def start(self, *extra: str) -> None:
        log = open(self.dir / "pynet.log", "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "driver", "serve", "--socket", str(self.socket),
             "--state-dir", str(self.dir / "state"), "--netns-dirs", "/run/netns", "--log-level", "DEBUG",
             "--reconcile-interval", "2", "--stale-after", "3", *cluster_flags(self.name, self.vtep), *extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.client = PluginClient(self.socket, timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pynet on {self.name} exited; see {self.dir}/pynet.log")
            try:
                if self.client.request("GET", "/healthz")[0] in (200, 503):
                    return
            except OSError:
                self.client.close()
            time.sleep(0.05)
        raise RuntimeError(f"pynet on {self.name} did not come up within 20 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.client is not None:
            self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def call(self, method: str, body: dict) -> dict:
        assert self.client is not None
        return self.client.call(method, body)

    def log(self) -> str:
        return (self.dir / "pynet.log").read_text(errors="replace")


class Network:
    """One cluster network as Docker makes it on each host: pool, gateway, CreateNetwork."""

    def __init__(self, name: str, subnet: str, mode: str = "overlay") -> None:
        self.name, self.subnet, self.mode = name, subnet, mode
        self.ids: dict[str, str] = {}  # host name -> this host's network ID
        self.pools: dict[str, str] = {}

    def create_on(self, host: Host, internal: bool = False, **extra_options: str) -> None:
        pool = host.call("IpamDriver.RequestPool", {"Pool": self.subnet, "Options": {"pynet.cluster": self.name}})
        gateway = host.call("IpamDriver.RequestAddress", {
            "PoolID": pool["PoolID"], "Options": {"RequestAddressType": "com.docker.network.gateway"}})["Address"]
        network_id = secrets.token_hex(32)
        host.call("NetworkDriver.CreateNetwork", {
            "NetworkID": network_id,
            "Options": {"com.docker.network.generic": {"pynet.mode": self.mode, "pynet.cluster": self.name,
                                                       **extra_options},
                        **({"com.docker.network.internal": True} if internal else {})},
            "IPv4Data": [{"AddressSpace": "PynetLocal", "Pool": self.subnet, "Gateway": gateway}]})
        self.ids[host.name], self.pools[host.name] = network_id, pool["PoolID"]


class Container:
    """Docker's part for one container: an address, an endpoint, Join, the interface moved in."""

    def __init__(self, host: Host, net: Network, label: str) -> None:
        self.host, self.net = host, net
        self.ns = f"{host.rig.prefix}{host.name}-{label}"
        self.endpoint = secrets.token_hex(32)
        self.address = ""

    def start(self, address: str = "") -> "Container":
        """`address`: that one (--ip), else the next free one."""
        h, n = self.host, self.net
        self.address = h.call("IpamDriver.RequestAddress", {"PoolID": n.pools[h.name],
                                                            **({"Address": address} if address else {})})["Address"]
        h.call("NetworkDriver.CreateEndpoint", {"NetworkID": n.ids[h.name], "EndpointID": self.endpoint,
                                                "Interface": {"Address": self.address}})
        sh("ip", "netns", "add", self.ns)
        joined = h.call("NetworkDriver.Join", {"NetworkID": n.ids[h.name], "EndpointID": self.endpoint,
                                               "SandboxKey": f"/run/netns/{self.ns}"})
        src = joined["InterfaceName"]["SrcName"]
        sh("ip", "-n", h.ns, "link", "set", src, "netns", self.ns)
        sh("ip", "-n", self.ns, "link", "set", src, "name", "eth0")
        sh("ip", "-n", self.ns, "addr", "add", self.address, "dev", "eth0")
        sh("ip", "-n", self.ns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        if joined.get("Gateway"):  # none on an --internal network
            sh("ip", "-n", self.ns, "route", "add", "default", "via", joined["Gateway"])
        return self

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    def ping(self, ip: str, size: Optional[int] = None, count: int = 1, wait: float = 1) -> bool:
        extra = ["-M", "do", "-s", str(size)] if size else []
        return sh("ip", "netns", "exec", self.ns, "ping", "-c", str(count), "-W", str(wait), *extra, ip,
                  check=False).returncode == 0

    def remove(self) -> None:
        h, n = self.host, self.net
        h.call("NetworkDriver.Leave", {"NetworkID": n.ids[h.name], "EndpointID": self.endpoint})
        sh("ip", "netns", "del", self.ns, check=False)
        h.call("NetworkDriver.DeleteEndpoint", {"NetworkID": n.ids[h.name], "EndpointID": self.endpoint})
        h.call("IpamDriver.ReleaseAddress", {"PoolID": n.pools[h.name], "Address": self.ip})


class Underlay:
    """The rig's network between hosts: a bridge in a namespace of its own, and
    one etcd in another namespace on it (198.18.42.100:2379)."""

    def __init__(self, prefix: str, directory: Path) -> None:
        self.prefix, self.dir = prefix, directory
        self.ns = f"{prefix}ul"
        self.etcd_ns = f"{prefix}etcd"
        self.etcd: Optional[subprocess.Popen] = None

    def attach(self, ns: str, address: str, port: str) -> None:
        """A veth from `ns` (named ul) onto the underlay bridge, with `address`."""
        sh("ip", "-n", self.ns, "link", "add", port, "type", "veth", "peer", "name", "ul", "netns", ns)
        sh("ip", "-n", self.ns, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", address, "dev", "ul")
        sh("ip", "-n", ns, "link", "set", "ul", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def start(self) -> "Underlay":
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.ns, "link", "set", "br0", "up")
        sh("ip", "netns", "add", self.etcd_ns)
        self.attach(self.etcd_ns, f"{ETCD_IP}/24", "ue")
        self.start_etcd()
        return self

    def start_etcd(self) -> None:
        url = f"http://{ETCD_IP}"
        log = open(self.dir / "etcd.log", "ab")
        self.etcd = subprocess.Popen(
            ["ip", "netns", "exec", self.etcd_ns, "etcd", "--name", "rig", "--data-dir", str(self.dir / "etcd"),
             "--listen-client-urls", f"{url}:2379", "--advertise-client-urls", f"{url}:2379",
             "--listen-peer-urls", f"{url}:2380", "--initial-advertise-peer-urls", f"{url}:2380",
             "--initial-cluster", f"rig={url}:2380", "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = sh("ip", "netns", "exec", self.etcd_ns, "etcdctl", "--endpoints", f"{ETCD_IP}:2379",
                       "endpoint", "health", check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"etcd did not come up; see {self.dir}/etcd.log")

    def stop_etcd(self, sig: int = signal.SIGKILL) -> None:
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.send_signal(sig)
            self.etcd.wait(10)
        self.etcd = None

    def close(self) -> None:
        self.stop_etcd()
        sh("ip", "netns", "del", self.etcd_ns, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


def cluster_flags(host: str, vtep: str) -> tuple[str, ...]:
    """pynet's cluster settings for a host of the rig."""
    return ("--etcd-endpoints", f"{ETCD_IP}:2379", "--vtep", vtep, "--cluster-host", host)


class ClusterRig:
    def __init__(self, hosts: int, flags: tuple[str, ...] = ()) -> None:
        self.flags = flags  # every host's pynet's extra flags
        self.prefix = f"{PREFIX}{secrets.token_hex(2)}-"
        self.dir = Path(tempfile.mkdtemp(prefix="pynet-cluster-"))
        self.underlay = Underlay(self.prefix, self.dir)
        self.hosts = [Host(self, i) for i in range(1, hosts + 1)]

    def attach(self, ns: str, address: str, port: str) -> None:
        self.underlay.attach(ns, address, port)

    def start(self) -> "ClusterRig":
        self.underlay.start()
        for host in self.hosts:
            host.plug()
            host.start(*self.flags)
        return self

    def start_etcd(self) -> None:
        self.underlay.start_etcd()

    def stop_etcd(self, sig: int = signal.SIGKILL) -> None:
        self.underlay.stop_etcd(sig)

    def close(self) -> None:
        for host in self.hosts:
            try:
                host.stop(signal.SIGKILL)
            except Exception:  # noqa: BLE001 - clean up the rest anyway
                pass
        self.underlay.close()
        clear_namespaces(self.prefix)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_rig(hosts: int, flags: tuple[str, ...] = ()) -> Iterator[ClusterRig]:
    """A started rig for a test, skipped without root or etcd, gone afterwards."""
    import pytest
    from .etcd import etcd_available
    if os.geteuid() != 0:
        pytest.skip("the overlay tests need root")
    if not etcd_available():
        pytest.skip("the overlay tests need etcd (apt-get install etcd-server)")
    clear_namespaces()
    made = ClusterRig(hosts, flags)
    try:
        yield made.start()
    finally:
        made.close()


@contextlib.contextmanager
def docker_cluster(underlay: Underlay, names: list[str], engine=None, flags: tuple[str, ...] = ()) -> Iterator[list]:
    """Private Docker hosts (the e2e harness's) on the underlay, pynet on each with the
    cluster settings; host i has VTEP 198.18.42.i. Gone afterwards, whatever happens."""
    from .harness import docker_host
    with contextlib.ExitStack() as stack:
        hosts = []
        for i, name in enumerate(names, 1):
            host = stack.enter_context(docker_host(name, engine,
                                                   keep_logs=bool(os.environ.get("PYNET_E2E_KEEP_LOGS"))))
            vtep = f"{UNDERLAY}.{i}"
            underlay.attach(host.ns, f"{vtep}/24", f"d{i}")
            host.restart_pynet_with(*flags, *cluster_flags(name, vtep))
            hosts.append(host)
        yield hosts


def until(predicate, seconds: float = 5.0) -> bool:
    """Whether `predicate` holds within `seconds` (asked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def pynet_routes(host: Host) -> dict[str, str]:
    """The routed mode's routes on a host (protocol 158): {address: next hop}."""
    out = {}
    for line in sh("ip", "-n", host.ns, "route", "show", "proto", "158").stdout.splitlines():
        words = line.split()
        if "via" in words:
            out[words[0]] = words[words.index("via") + 1]
    return out


def metrics_text(socket_path: Path) -> str:
    return run(["curl", "-s", "--unix-socket", str(socket_path), "http://pynet/metrics"], timeout=10).stdout


def histogram(text: str, name: str) -> dict[float, float]:
    """A histogram of pynet's /metrics: upper bound -> cumulative count."""
    out = {}
    for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M):
        out[float("inf") if m.group(1) == "+Inf" else float(m.group(1))] = float(m.group(2))
    return out


def clear_namespaces(prefix: str = PREFIX) -> None:
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix):
            sh("ip", "netns", "del", name, check=False)
