"""pynet as a managed Docker plugin: built offline, created, enabled, and run
through its lifecycle on a private dockerd of its own (host "p1", no legacy
pynet there).

The plugin is the one the README's command builds (scripts/build-plugin
--offline: `docker build --network none` on a debootstrapped base, whose
tarball stays cached in /var/cache/pynet-build between runs). Its settings
point at this test host: state in the work directory, Docker's exec root
the host's own; nothing else differs from what an operator gets.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import REQUIRED, Scenario
from ..support.harness import IMAGE, DockerHost, docker_host
from .test_restart_under_load import ROUNDS, PARALLEL, check_round_outcome, restart_rounds

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "pynet:latest"


class PluginHost:
    def __init__(self, host: DockerHost) -> None:
        self.host = host
        self.state = host.workdir / "plugin-state"
        host.state_dir = self.state  # the host's helpers read the plugin's state database
        self.build_log: list[str] = []

    def build(self, *extra: str) -> float:
        started = time.monotonic()
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.host.socket}"}
        # A session of its own, so that a timeout stops debootstrap and docker build too.
        argv = [sys.executable, str(ROOT / "scripts" / "build-plugin"), "--offline", "--state-dir", str(self.state),
                *extra]
        proc = subprocess.Popen(argv,
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        assert proc.returncode == 0, f"build-plugin failed:\n{out}\n{err}"
        self.build_log = [line for line in out.splitlines() if line.startswith("build-plugin:")]
        return time.monotonic() - started

    def configure(self, **env: str) -> None:
        """Point the (disabled) plugin at this test host, as an operator would with `plugin set`."""
        self.state.mkdir(exist_ok=True)
        settings = {"PYNET_NETNS_DIRS": str(self.host.exec_root / "netns"), "PYNET_RECONCILE_INTERVAL": "2",
                    "PYNET_STALE_AFTER": "3", **env}
        self.host.docker("plugin", "set", PLUGIN, f"state.source={self.state}",
                         f"exec-root.source={self.host.exec_root}", *(f"{k}={v}" for k, v in settings.items()))

    @contextmanager
    def settings(self, **env: str):
        """The plugin re-enabled with these settings, and with the usual ones afterwards,
        whatever happens in between."""
        try:
            self.disable()
            self.configure(**env)
            self.enable()
            yield
        finally:
            self.host.docker_proc("plugin", "disable", "--force", PLUGIN)
            self.configure(PYNET_DEFAULT_POOLS="10.200.0.0/13/24,fd70:796e:6574::/48/64",
                           PYNET_LOG_LEVEL="INFO")
            self.enable()

    def enable(self) -> None:
        self.host.docker("plugin", "enable", PLUGIN)
        self.wait_ready()

    def disable(self) -> None:
        self.host.docker("plugin", "disable", "--force", PLUGIN)

    def inspect(self) -> dict:
        return json.loads(self.host.docker("plugin", "inspect", PLUGIN))[0]

    def socket(self) -> Path:
        """The plugin's socket as seen from outside the host's mount namespace: through
        a link, as that path is longer than a socket address may be (108 bytes)."""
        link = self.host.workdir / "plugin.sock"
        link.unlink(missing_ok=True)
        link.symlink_to(f"/proc/{self.host.holder.pid}/root/run/docker/plugins/{self.inspect()['Id']}/pynet.sock")
        return link

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.host.pynet_socket = self.socket()
            if self.host.pynet_socket.exists() and self.host.pynet_call("Plugin.Activate") is not None:
                return
            time.sleep(0.2)
        raise AssertionError("the plugin's socket did not answer within 30 s")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`pynet ...` on the test host, finding the plugin's socket by itself."""
        proc = subprocess.run([*self.host.enter(), sys.executable, "-m", "driver", *args], cwd=ROOT,
                              env={**os.environ, "DOCKER_HOST": f"unix://{self.host.socket}"},
                              capture_output=True, text=True, timeout=60)
        if check:
            assert proc.returncode == 0, f"pynet {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc


@pytest.fixture(scope="module")
def plugin(engine):
    if shutil.which("debootstrap") is None:
        if REQUIRED:
            pytest.fail("the plugin tests need debootstrap (PYNET_E2E=required)")
        pytest.skip("the plugin tests need debootstrap")
    with docker_host(engine.host_name("p1"), engine, legacy_pynet=False) as h:
        try:
            p = PluginHost(h)
            took = p.build()
            print(f"\nplugin built in {took:.0f} s: " + "; ".join(p.build_log))
            p.configure()
            p.enable()
            yield p
        finally:
            if h.dockerd is not None and h.dockerd.poll() is None:
                h.docker_proc("rm", "-f", *h.container_ids())
                for net in h.docker_proc("network", "ls", "-q", "--filter", "driver=" + PLUGIN).stdout.split():
                    h.docker_proc("network", "rm", net)
                h.docker_proc("plugin", "disable", "--force", PLUGIN)  # pynet stops before dockerd


class Names(Scenario):
    """The e2e tier's Scenario, with pynet:latest for driver and IPAM."""

    def network(self, *args: str, name: str | None = None, driver: str = PLUGIN, ipam: str | None = PLUGIN) -> str:
        return super().network(*args, name=name, driver=driver, ipam=ipam)

    def ping(self, source: str, target: str) -> None:
        ip = self.host.container_ip(target, self.host.inspect(target)["HostConfig"]["NetworkMode"])
        self.host.docker("exec", source, "ping", "-c", "1", "-W", "3", ip)


@pytest.fixture
def names(plugin):
    n = Names(plugin.host)
    yield n
    n.cleanup()


def assert_nothing_left(host: DockerHost, network_ids: list[str], subnet_prefix: str) -> None:
    assert host.pynet_links() == []
    assert subnet_prefix not in json.dumps(host.ip_json("addr"))
    rules = host.firewall_rules()
    for nid in network_ids:
        assert f"pynet:{nid[:12]}" not in rules
    for table in ("networks", "endpoints", "ipam_pools", "ipam_addresses"):
        assert host.state_rows(table) == 0, table


@pytest.mark.both_engines
def test_the_plugin_is_built_offline_with_only_what_it_needs(plugin):
    info = plugin.inspect()
    config = info["Config"]
    assert info["Enabled"]
    assert sorted(config["Interface"]["Types"]) == ["docker.ipamdriver/1.0", "docker.networkdriver/1.0"]
    assert config["Interface"]["Socket"] == "pynet.sock" and config["Network"]["Type"] == "host"
    assert config["Linux"]["Capabilities"] == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    rootfs = ROOT / "build" / "plugin" / "rootfs"
    size = sum(f.lstat().st_size for f in rootfs.rglob("*") if not f.is_dir())
    print(f"\nplugin rootfs: {size / 2**20:.1f} MiB")
    assert size < 100 * 2**20
    for absent in ("bin/sh", "usr/bin/apt-get", "usr/bin/dpkg", "usr/share/doc", "wheels",
                   "opt/pynet/bin/pip", "usr/bin/perl"):
        assert not (rootfs / absent).exists(), absent
    assert not list(rootfs.glob("opt/pynet/lib/python3*/site-packages/pip"))
    assert (rootfs / "opt/pynet/bin/pynet").exists() and (rootfs / "usr/sbin/xtables-nft-multi").exists()
    assert any("plugin pynet:latest created" in line for line in plugin.build_log), plugin.build_log


@pytest.mark.both_engines
def test_core_scenario_through_pynet_latest(plugin, names):
    host = plugin.host
    net = names.network("--subnet", "10.241.0.0/24", "--gateway", "10.241.0.1")
    a = names.run(net)
    b = names.run(net, "--ip", "10.241.0.50")
    assert host.container_ip(b, net) == "10.241.0.50"
    names.ping(a, b)
    names.ping(b, a)
    taken = host.docker_fails("run", "--rm", "--network", net, "--ip", "10.241.0.50", IMAGE, "true")
    assert "10.241.0.50 is already in use" in taken
    status = plugin.cli("status").stdout
    assert "/run/docker/plugins/" in status and "networks 1, endpoints 2" in status
    assert plugin.cli("doctor").stdout.startswith("pynet doctor: state, kernel, firewall and Docker agree")
    nid = host.inspect(net)["Id"]
    names.cleanup()
    names.containers.clear(), names.networks.clear()
    assert_nothing_left(host, [nid], "10.241.0.")


def test_disable_and_enable_keep_every_container_working(plugin, names):
    host = plugin.host
    net = names.network("--subnet", "10.242.0.0/24")
    a, b = names.run(net), names.run(net, "-p", "8080:80")
    assert "is in use" in host.docker_fails("plugin", "disable", PLUGIN)
    plugin.disable()
    names.ping(a, b)  # the kernel's work outlives the plugin
    assert "pynet.sock" in host.docker_fails("run", "--rm", "--network", net, IMAGE, "true")
    plugin.enable()
    names.ping(a, b)
    c = names.run(net)
    names.ping(c, a)
    addresses = [host.container_ip(x, net) for x in (a, b, c)]
    assert len(set(addresses)) == 3
    assert "8080" in plugin.cli("ports").stdout
    assert plugin.cli("doctor").returncode == 0


def test_kernel_settings_are_made_through_the_plugins_mount(plugin, names):
    """/proc/sys is read-only in a plugin: pynet writes the host's through /host/proc/sys."""
    host = plugin.host
    net = names.network("--subnet", "10.243.0.0/24")
    names.run(net)
    with plugin.settings(PYNET_RECONCILE_INTERVAL="0"):  # only the doctor repairs
        host.netns_exec("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        sick = plugin.cli("doctor", check=False)
        assert sick.returncode == 1 and "net.ipv4.ip_forward not 1" in sick.stdout, sick.stdout
        assert "settings restored" in plugin.cli("doctor", "--repair").stdout
        assert host.netns_exec("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
        assert plugin.cli("doctor").returncode == 0


def test_plugin_set_takes_effect(plugin, names):
    host = plugin.host
    with plugin.settings(PYNET_DEFAULT_POOLS="10.244.0.0/16/26", PYNET_LOG_LEVEL="DEBUG"):
        net = names.network()
        (config,) = host.inspect(net)["IPAM"]["Config"]
        assert re.fullmatch(r"10\.244\.\d+\.\d+/26", config["Subnet"]), config
        status = plugin.cli("status").stdout
        assert "default_pools=10.244.0.0/16/26" in status and "log_level=DEBUG" in status
        names.cleanup()
        names.networks.clear(), names.containers.clear()


def test_dockerd_restart_with_the_plugin_enabled(plugin, names):
    host = plugin.host
    net = names.network("--subnet", "10.245.0.0/24")
    a = names.run(net, "--restart", "always")
    b = names.run(net, "--restart", "always", "--ip", "10.245.0.77")
    host.restart_dockerd()
    plugin.wait_ready()
    assert plugin.inspect()["Enabled"]
    deadline = time.monotonic() + 60
    while not all(host.inspect(x)["State"]["Running"] for x in (a, b)):
        assert time.monotonic() < deadline, "containers did not come back"
        time.sleep(0.5)
    assert host.container_ip(b, net) == "10.245.0.77"
    names.ping(a, b)
    names.ping(names.run(net), a)
    # Docker tore the old sandboxes down while pynet was stopped: reconciliation reclaims
    # those endpoints once they are older than PYNET_STALE_AFTER (3 s here).
    deadline = time.monotonic() + 30
    while (doctor := plugin.cli("doctor", check=False)).returncode != 0:
        assert time.monotonic() < deadline, doctor.stdout
        time.sleep(1)


def test_upgrade_replaces_the_plugin_and_keeps_state(plugin, names):
    host = plugin.host
    net = names.network("--subnet", "10.246.0.0/24")
    a, b = names.run(net), names.run(net, "--ip", "10.246.0.9", "-p", "8246:80")
    old = plugin.inspect()
    took = plugin.build("--replace")  # disables and removes pynet:latest, creates the new build
    print(f"\nplugin rebuilt in {took:.0f} s")
    new = plugin.inspect()
    assert new["Id"] != old["Id"] and not new["Enabled"]
    # What was set (the state directory above all) is the new plugin's too.
    assert new["Settings"]["Mounts"] == old["Settings"]["Mounts"]
    assert sorted(new["Settings"]["Env"]) == sorted(old["Settings"]["Env"])
    names.ping(a, b)  # running containers keep working meanwhile
    plugin.enable()
    assert "8246" in plugin.cli("ports").stdout
    names.ping(a, b)
    c = names.run(net)
    assert host.container_ip(c, net) not in (host.container_ip(a, net), "10.246.0.9")
    names.ping(c, b)
    state = json.loads(plugin.cli("endpoints", "--json").stdout)
    assert len(state) == 3
    nid = host.inspect(net)["Id"]
    names.cleanup()
    names.containers.clear(), names.networks.clear()
    assert_nothing_left(host, [nid], "10.246.0.")


def test_a_container_stopped_while_the_plugin_is_disabled_gives_its_address_back(plugin, names):
    """Docker's Leave and DeleteEndpoint cannot reach a disabled plugin; libnetwork moves the
    container's interface back to the host. pynet then reclaims that endpoint (its veth pair
    and its address) by itself."""
    host = plugin.host
    net = names.network("--subnet", "10.247.0.0/24")
    a = names.run(net)
    gone = names.run(net, "--ip", "10.247.0.66")
    plugin.disable()
    host.docker("stop", "-t", "1", gone, timeout=180)  # Docker retries the plugin for a while
    plugin.enable()
    deadline = time.monotonic() + 150  # a minute after pynet starts: no container is starting there
    while "10.247.0.66" in plugin.cli("endpoints").stdout:
        assert time.monotonic() < deadline, plugin.cli("endpoints").stdout
        time.sleep(2)
    host.docker("rm", gone)
    names.containers.remove(gone)
    again = names.run(net, "--ip", "10.247.0.66")  # the address is free again
    names.ping(a, again)
    assert plugin.cli("doctor").returncode == 0


@pytest.mark.parametrize("how", ["disable-enable", "replace"])
def test_restarts_under_load_are_measured(plugin, names, how):
    """Docker owns a managed plugin's lifecycle: `disable --force` stops pynet
    (pynet then answers what it accepted, as the service does), and no socket
    outlives the plugin. The upgrade is what `build-plugin --replace` does once
    its build is done: disable --force, rm --force, create, set, enable.
    Failed starts are counted and printed, not judged; the state is judged."""
    host = plugin.host
    subnet = {"disable-enable": "10.248.0.0/24", "replace": "10.249.0.0/24"}[how]
    net = names.network("--subnet", subnet)

    def bounce() -> None:
        plugin.disable()
        if how == "replace":
            host.docker("plugin", "rm", "--force", PLUGIN)
            host.docker("plugin", "create", PLUGIN, str(ROOT / "build" / "plugin"))
            plugin.configure()
        plugin.enable()

    started = time.monotonic()
    failed = restart_rounds(host, names, net, bounce)
    reasons = sorted({re.sub(r"[0-9a-f]{12,}", "<id>", f.split(": ", 1)[1])[:160] for f in failed})
    print(f"\nmanaged plugin, {how} inside {ROUNDS} rounds of {PARALLEL} docker run:"
          f" {len(failed)} of {ROUNDS * PARALLEL} failed in {time.monotonic() - started:.0f} s: {reasons}")
    # A start Docker gave up on may leave an endpoint only reconciliation reclaims
    # (a minute after its Join at the latest).
    check_round_outcome(host, names, net, subnet, settle=90)


def test_the_managed_plugin_in_cluster_mode_over_tls(plugin, names):
    """`docker plugin set` with etcd's endpoints and TLS files (under the state mount): the
    plugin registers with an etcd that asks for client certificates, and an overlay
    network's endpoint record reaches etcd. The etcd is this test's, on a veth between
    the machine and the test host (198.51.100.0/24), never anywhere else."""
    from ..support.etcd import TestEtcd
    if shutil.which("etcd") is None:
        pytest.fail("the cluster-mode plugin test needs etcd (apt-get install etcd-server)")
    host = plugin.host
    outside, inside = "e2etls" + secrets.token_hex(3), "tls1"
    for line in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines():
        name = line.split(": ")[1].split("@")[0] if ": " in line else ""
        if name.startswith("e2etls"):  # what a killed run of this test left
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    server = TestEtcd(listen="198.51.100.1", tls=True)
    tls = plugin.state / "etcd-tls"
    try:
        subprocess.run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", host.ns],
                       check=True)
        subprocess.run(["ip", "addr", "add", "198.51.100.1/30", "dev", outside], check=True)
        subprocess.run(["ip", "link", "set", outside, "up"], check=True)
        subprocess.run(["ip", "-n", host.ns, "addr", "add", "198.51.100.2/30", "dev", inside], check=True)
        subprocess.run(["ip", "-n", host.ns, "link", "set", inside, "up"], check=True)
        server.start()
        tls.mkdir(parents=True, exist_ok=True)
        for name in ("ca", "cert", "key"):
            shutil.copy(server.certificates[name], tls / f"{name}.pem")
        with plugin.settings(PYNET_ETCD_ENDPOINTS=server.endpoint, PYNET_VTEP="198.51.100.2",
                             PYNET_CLUSTER_HOST="p1", PYNET_ETCD_CA="/var/lib/pynet/etcd-tls/ca.pem",
                             PYNET_ETCD_CERT="/var/lib/pynet/etcd-tls/cert.pem",
                             PYNET_ETCD_KEY="/var/lib/pynet/etcd-tls/key.pem"):
            status = plugin.cli("status").stdout
            assert re.search(r"cluster\s+ok \(host p1, epoch 1, VTEP 198\.51\.100\.2\)", status), status
            net = names.network("-o", "pynet.mode=overlay", "-o", "pynet.cluster=secure", "--ipam-opt",
                                "pynet.cluster=secure", "--subnet", "10.218.64.0/24")
            c = names.run(net)
            ip = host.container_ip(c, net)
            records = subprocess.run(
                ["etcdctl", "--endpoints", f"https://{server.endpoint}", "--cacert", server.certificates["ca"],
                 "--cert", server.certificates["cert"], "--key", server.certificates["key"],
                 "get", "/pynet/endpoints/secure/", "--prefix", "--print-value-only"],
                capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
            assert f'"{ip}"' in records.stdout and '"host": "p1"' in records.stdout, records.stdout + records.stderr
            view = plugin.cli("cluster").stdout
            assert "host p1 (registered)" in view and "network secure: VNI" in view, view
            names.cleanup()
            names.networks.clear(), names.containers.clear()
    finally:
        # Single-host again (plugin.settings restores only what the other tests change).
        host.docker_proc("plugin", "disable", "--force", PLUGIN)
        plugin.configure(PYNET_ETCD_ENDPOINTS="", PYNET_VTEP="", PYNET_CLUSTER_HOST="", PYNET_ETCD_CA="",
                         PYNET_ETCD_CERT="", PYNET_ETCD_KEY="")
        plugin.enable()
        server.close()
        shutil.rmtree(tls, ignore_errors=True)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
