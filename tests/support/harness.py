"""A private Docker "host" for end-to-end tests.

Each host is a network namespace with its own dockerd (private data root,
exec root, API socket and containerd namespace) and its own pynet, so a test
run never touches the machine's own Docker, links or firewall: everything it
creates lives in the namespace and goes with it.

dockerd and pynet share one mount namespace, held by a sleeping process made
with `nsenter --net=... unshare -m` (not `ip netns exec`, which remounts /sys
and hides cgroups); in it a tmpfs over /run/docker/plugins holds only this
host's plugin socket link.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

if TYPE_CHECKING:
    from .engines import Engine

PLUGIN = "pynet-e2e"  # the plugin name tests use; private to the host's mount namespace
IMAGE = "pynet-test-busybox:latest"
NS_PREFIX = "pynet-e2e-"
BUSYBOX_APPLETS = ("sh", "ip", "ping", "ping6", "wget", "nc", "httpd", "sleep", "ls", "cat",
                   "true", "hostname", "echo")


def run(argv: Sequence[str], check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, timeout=timeout, capture_output=True, text=True, **kw)


class CommandFailed(AssertionError):
    pass


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerHost:
    """`legacy_pynet=False`: no pynet of the harness's own, for a managed plugin.
    `engine`: dockerd and containerd from another Debian release's root (engines.py)."""

    def __init__(self, name: str, workdir: Path, legacy_pynet: bool = True,
                 engine: Optional["Engine"] = None) -> None:
        self.name = name
        self.legacy_pynet = legacy_pynet
        self.engine = engine if engine is not None and not engine.native else None
        self.ns = NS_PREFIX + name
        self.workdir = workdir
        self.socket = workdir / "docker.sock"
        self.pynet_socket = workdir / "pynet.sock"
        self.state_dir = workdir / "state"
        self.exec_root = workdir / "exec"
        self.dockerd: Optional[subprocess.Popen] = None
        self.containerd: Optional[subprocess.Popen] = None
        self.holder: Optional[subprocess.Popen] = None
        self.engine_holder: Optional[subprocess.Popen] = None  # the other release's root, pivoted
        self.pynet: Optional[subprocess.Popen] = None
        self._pynet_log = None
        self.activation: Optional[socket.socket] = None  # the plugin socket, held as systemd holds it

    # --- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Boot: the namespaces, then containerd, pynet and dockerd."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        run(["ip", "netns", "add", self.ns])
        run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        self._start_mount_namespace()
        if self.engine is not None:
            self._start_engine_namespace()
        self.start_containerd()
        if self.legacy_pynet:
            self.start_pynet()
        self.start_dockerd()

    def start_containerd(self) -> None:
        """containerd as its own service, as on a real host: it outlives a killed dockerd."""
        root = self.workdir / "containerd"
        root.mkdir(exist_ok=True)
        (root / "config.toml").write_text(
            "version = 2\n"
            f'root = "{root}/root"\nstate = "{root}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{root}/containerd.sock"\n'
            '[ttrpc]\n  address = ""\n[debug]\n  address = ""\n')
        log = open(self.workdir / "containerd.log", "ab")
        self.containerd = subprocess.Popen([*self.enter_engine(), "containerd", "--config", str(root / "config.toml")],
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                           env=self._engine_env())
        deadline = time.monotonic() + 30
        while not (root / "containerd.sock").exists():
            if self.containerd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start; see {self.workdir}/containerd.log")
            time.sleep(0.1)

    def _start_mount_namespace(self) -> None:
        self.holder = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", "unshare", "-m", "--propagation", "private",
             sys.executable, str(Path(__file__).with_name("mount_namespace.py")), str(self.pynet_socket),
             PLUGIN if self.legacy_pynet else ""],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the test host's mount namespace did not come up: {line}")
        self.holder.stdout.close()  # it only sleeps from here

    def _start_engine_namespace(self) -> None:
        """A mount namespace inside the host's whose root is the engine's release
        (engine_root.py): containerd and dockerd run there, everything else
        (pynet, the docker client, iptables, curl) in the host's."""
        assert self.engine is not None
        root = self.engine.unpack(self.workdir)
        self.exec_root.mkdir(exist_ok=True)
        for flag in ("--bind", "--make-private", "--make-shared"):  # a peer group of its own
            args = [str(self.exec_root)] * (2 if flag == "--bind" else 1)
            run([*self.enter(), "mount", flag, *args])
        self.engine_holder = subprocess.Popen(
            [*self.enter(), "unshare", "-m", "--propagation", "unchanged", sys.executable,
             str(Path(__file__).with_name("engine_root.py")), str(root), str(self.workdir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        line = self.engine_holder.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the {self.engine.release} engine's root did not come up: {line}"
                               f"{self.engine_holder.stdout.read(2000) if self.engine_holder.poll() is not None else ''}")
        self.engine_holder.stdout.close()  # it only sleeps from here

    def enter(self) -> list[str]:
        """argv prefix that runs a program in this host's network and mount namespaces."""
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n"]

    def enter_engine(self) -> list[str]:
        """argv prefix for the engine's own programs (dockerd, containerd)."""
        if self.engine_holder is None:
            return self.enter()
        return ["nsenter", "-t", str(self.engine_holder.pid), "-m", "-n", "-r", "-w"]

    def _engine_env(self) -> Optional[dict]:
        return {**os.environ, "PATH": SYSTEM_PATH} if self.engine_holder is not None else None

    def start_dockerd(self) -> None:
        self.socket.unlink(missing_ok=True)  # a killed dockerd leaves its socket
        log = open(self.workdir / "dockerd.log", "ab")
        argv = [*self.enter_engine(),
                "dockerd", "--data-root", str(self.workdir / "data"), "--exec-root", str(self.exec_root),
                "-H", f"unix://{self.socket}", "--pidfile", str(self.workdir / "docker.pid"),
                "--containerd", str(self.workdir / "containerd" / "containerd.sock"),
                "--cgroup-parent", f"/{self.ns}",  # its containers' processes, to find and kill them
                "--bridge", "none", "--containerd-namespace", f"pynet-e2e-{self.name}",
                "--containerd-plugins-namespace", f"pynet-e2e-{self.name}-plugins"]
        self.dockerd = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env=self._engine_env())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self.dockerd.returncode}); see {self.workdir}/dockerd.log")
            try:
                if self.socket.exists() and run(self.docker_argv("version"), check=False, timeout=10).returncode == 0:
                    return
            except subprocess.TimeoutExpired:  # still loading its containers
                pass
            time.sleep(0.3)
        raise RuntimeError(f"dockerd did not answer within 90 s; see {self.workdir}/dockerd.log")

    def stop_dockerd(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.dockerd is None:
            return
        if self.dockerd.poll() is None:
            self.dockerd.send_signal(sig)
            try:
                self.dockerd.wait(timeout)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait(10)
        self.dockerd = None

    def start_pynet(self, extra: Sequence[str] = (), wait: bool = True) -> None:
        """Start pynet; with `wait`, return once it answers on its socket."""
        if self._pynet_log is not None:
            self._pynet_log.close()
        self._pynet_log = open(self.workdir / "pynet.log", "ab")
        # Short reclaim delays so tests see reconciliation within seconds.
        serve = [sys.executable, "-m", "driver", "serve",
                 "--socket", str(self.pynet_socket), "--state-dir", str(self.state_dir),
                 "--netns-dirs", str(self.exec_root / "netns"), "--log-level", "DEBUG",
                 "--reconcile-interval", "2", "--stale-after", "3", *extra]
        passed: tuple[int, ...] = ()
        if self.activation is not None:
            passed = (self.activation.fileno(),)
            serve = [sys.executable, str(Path(__file__).with_name("listen_fds.py")), str(passed[0]), *serve]
        self.pynet = subprocess.Popen([*self.enter(), *serve], stdout=self._pynet_log, stderr=subprocess.STDOUT,
                                      cwd=Path(__file__).resolve().parents[2], pass_fds=passed)
        if not wait:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.pynet.poll() is not None:
                raise RuntimeError(f"pynet exited ({self.pynet.returncode}); see {self.workdir}/pynet.log")
            if self.pynet_socket.exists() and self.pynet_call("Plugin.Activate") is not None:
                return
            time.sleep(0.1)
        raise RuntimeError("pynet did not come up within 20 s")

    def stop_pynet(self, sig: int = signal.SIGTERM) -> None:
        if self.pynet is None:
            return
        if self.pynet.poll() is None:
            self.pynet.send_signal(sig)
            try:
                self.pynet.wait(15)
            except subprocess.TimeoutExpired:
                self.pynet.kill()
                self.pynet.wait(5)
        self.pynet = None

    def hold_socket(self) -> None:
        """From the next start on, run pynet socket-activated: this process makes
        and holds the plugin socket, as systemd does with pynet.socket."""
        self.pynet_socket.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.pynet_socket))
        sock.listen(socket.SOMAXCONN)
        self.activation = sock

    def release_socket(self) -> None:
        """Back to pynet's own socket (stop pynet first)."""
        if self.activation is not None:
            self.activation.close()
            self.activation = None
            self.pynet_socket.unlink(missing_ok=True)

    def pynet_connections(self) -> int:
        """Connections pynet holds on its plugin socket (accepted, not yet closed)."""
        assert self.pynet is not None
        proc = Path(f"/proc/{self.pynet.pid}")
        inodes = set()
        for fd in (proc / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
        count = 0
        for line in (proc / "net" / "unix").read_text().splitlines()[1:]:
            fields = line.split()  # Num RefCount Protocol Flags Type St Inode Path
            if len(fields) >= 8 and fields[5] == "03" and fields[6] in inodes and fields[7] == str(self.pynet_socket):
                count += 1
        return count

    def restart_pynet(self, sig: int = signal.SIGTERM) -> None:
        self.stop_pynet(sig)
        self.start_pynet()

    def restart_pynet_with(self, *extra: str) -> None:
        """Restart pynet with extra `serve` flags (none: the usual ones)."""
        self.stop_pynet()
        self.start_pynet(extra)

    def restart_dockerd(self, sig: int = signal.SIGTERM) -> None:
        self.stop_dockerd(sig)
        self.start_dockerd()

    def reboot(self) -> None:
        """Power cut and boot: every process of the host dies, its namespace (links,
        addresses, firewall, sysctls) and its run-time directory go; the disks
        (Docker's data root, pynet's state) stay. Then pynet and dockerd start."""
        container_pids = [self.docker("inspect", "-f", "{{.State.Pid}}", c) for c in self.container_ids()]
        self.stop_pynet(signal.SIGKILL)
        self.stop_dockerd(signal.SIGKILL)
        self.containerd.kill()
        self.containerd.wait()
        for pid in (int(p) for p in container_pids if p.isdigit()):
            if pid > 0:  # a stopped container has Pid 0: kill(0) would hit this very process group
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._stop_holders()
        remove_namespace(self.ns)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        self.start()

    def _stop_holders(self) -> None:
        for holder in (self.engine_holder, self.holder):
            if holder is not None:
                holder.kill()
                holder.wait()
        self.engine_holder = None

    def close(self) -> None:
        """Leave nothing behind, whatever state the host is in."""
        if self.dockerd is not None and self.dockerd.poll() is None:
            self.docker_proc("rm", "-f", *self.container_ids())
        self.stop_dockerd()
        self.stop_pynet()
        self.release_socket()
        if self.containerd is not None and self.containerd.poll() is None:
            self.containerd.terminate()
            try:
                self.containerd.wait(20)
            except subprocess.TimeoutExpired:
                self.containerd.kill()
        self._stop_holders()
        remove_namespace(self.ns)
        remove_cgroups(self.ns)
        remove_plugin_processes(self.workdir)
        if self._pynet_log:
            self._pynet_log.close()

    # --- talking to it -----------------------------------------------------

    def docker_argv(self, *args: str) -> list[str]:
        return ["docker", "-H", f"unix://{self.socket}", *args]

    def docker(self, *args: str, timeout: float = 120) -> str:
        """Run a docker command that must succeed; return its output."""
        proc = run(self.docker_argv(*args), check=False, timeout=timeout)
        if proc.returncode != 0:
            raise CommandFailed(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout.strip()

    def docker_proc(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a docker command whatever its outcome."""
        return run(self.docker_argv(*args), check=False, timeout=timeout)

    def docker_fails(self, *args: str) -> str:
        """Run a docker command that must fail; return its error text."""
        proc = self.docker_proc(*args)
        if proc.returncode == 0:
            raise AssertionError(f"docker {' '.join(args)} succeeded but should have failed:\n{proc.stdout}")
        return proc.stderr

    def container_ids(self) -> list[str]:
        proc = self.docker_proc("ps", "-aq")
        return proc.stdout.split() if proc.returncode == 0 else []

    def inspect(self, obj: str) -> dict:
        return json.loads(self.docker("inspect", obj))[0]

    def container_ip(self, name: str, network: str, v6: bool = False) -> str:
        nets = self.inspect(name)["NetworkSettings"]["Networks"]
        return nets[network]["GlobalIPv6Address" if v6 else "IPAddress"]

    def pynet_call(self, method: str, body: Optional[dict] = None) -> Optional[dict]:
        proc = run(["curl", "-sS", "--max-time", "5", "--unix-socket", str(self.pynet_socket),
                    "-X", "POST", "-d", json.dumps(body or {}), f"http://pynet/{method}"], check=False)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)

    def ip_json(self, *args: str) -> list:
        return json.loads(run(["ip", "-n", self.ns, "-j", *args]).stdout or "[]")

    def netns_exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return run([*self.enter(), *argv], check=check, timeout=30)

    def curl(self, url: str) -> subprocess.CompletedProcess:
        """curl from the Docker host itself (its namespace)."""
        return self.netns_exec("curl", "-sS", "-g", "--max-time", "3", url, check=False)

    def in_container_netns(self, container: str, *argv: str) -> subprocess.Popen:
        """Start a host program inside a container's network namespace."""
        pid = self.docker("inspect", "-f", "{{.State.Pid}}", container)
        return subprocess.Popen(["nsenter", "-t", pid, "-n", *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def published(self, container: str) -> list[dict]:
        """The ports pynet published for a container (Docker cannot show them)."""
        import sqlite3
        endpoint_ids = [n["EndpointID"] for n in self.inspect(container)["NetworkSettings"]["Networks"].values()]
        with sqlite3.connect(self.state_dir / "pynet.db") as conn:
            rows = conn.execute(f"SELECT ports FROM endpoints WHERE endpoint_id IN "
                                f"({','.join('?' * len(endpoint_ids))})", endpoint_ids).fetchall()
        return [b for (ports,) in rows for b in json.loads(ports)]

    def links(self) -> list[dict]:
        return self.ip_json("-d", "link", "show")

    def pynet_links(self) -> list[str]:
        return [link["ifname"] for link in self.links()
                if (link.get("ifalias") or "").startswith("pynet:")
                or link["ifname"].startswith(("pn-", "pnh", "pnc"))]

    def firewall_rules(self) -> str:
        return "\n".join(self.netns_exec(tool, "-S").stdout for tool in ("iptables", "ip6tables"))

    def state_rows(self, table: str) -> int:
        return self.state_query(f"SELECT COUNT(*) FROM {table}")[0][0]

    def state_query(self, sql: str, *args) -> list[tuple]:
        import sqlite3
        with sqlite3.connect(self.state_dir / "pynet.db") as conn:
            return conn.execute(sql, args).fetchall()


class OutsideHost:
    """A namespace standing for a machine outside the Docker host, joined to it
    by a veth: the host is 203.0.113.1 / 2001:db8:1::1, the outside host
    203.0.113.2 / 2001:db8:1::2 (documentation ranges, inside test namespaces only).
    """

    HOST4, PEER4 = "203.0.113.1", "203.0.113.2"
    HOST6, PEER6 = "2001:db8:1::1", "2001:db8:1::2"
    WHOAMI_PORT = 9000

    def __init__(self, host: DockerHost) -> None:
        self.host = host
        self.ns = NS_PREFIX + host.name + "-out"
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        run(["ip", "netns", "add", self.ns])
        run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.host.ns, "link", "add", "up0", "type", "veth", "peer", "name", "out0",
             "netns", self.ns])
        for ns, dev, v4, v6 in ((self.host.ns, "up0", self.HOST4, self.HOST6),
                                (self.ns, "out0", self.PEER4, self.PEER6)):
            run(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev])
            run(["ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        self.serve("whoami", str(self.WHOAMI_PORT))

    def serve(self, *args: str) -> None:
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, str(Path(__file__).with_name("netserver.py")),
             *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.3)

    def route(self, *args: str) -> None:
        """A route on the outside host (e.g. back to a routed container subnet)."""
        run(["ip", "-n", self.ns, "route", "replace", *args])

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.ns, *argv], check=check, timeout=30)

    def curl(self, url: str) -> subprocess.CompletedProcess:
        return self.exec("curl", "-sS", "-g", "--max-time", "3", url, check=False)

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        remove_namespace(self.ns)
        run(["ip", "-n", self.host.ns, "link", "del", "up0"], check=False)


def remove_namespace(ns: str) -> None:
    """Kill every process in a namespace, then delete it."""
    if not Path(f"/run/netns/{ns}").exists():
        return
    for _ in range(3):
        pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(0.5)
    run(["ip", "netns", "del", ns], check=False)


def remove_cgroups(name: str) -> None:
    """Kill every process left in the cgroups named `name` (a test host's
    containers, whatever became of dockerd), then remove the cgroups."""
    base = Path("/sys/fs/cgroup")
    roots = [p for p in [base / name, *base.glob(f"*/{name}")] if p.is_dir()]
    for root in roots:
        for _ in range(5):
            pids = {pid for procs in root.rglob("cgroup.procs") for pid in procs.read_text().split()}
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            root.rmdir()
        except OSError:
            pass


def remove_plugin_processes(workdir: Path) -> None:
    """Kill what a managed plugin of this host left running (its process lives in a
    cgroup named after the plugin's ID, outside the host's cgroup parent), and the
    containerd shims of the host's containerd, then remove those cgroups."""
    ids = [p.name for p in (workdir / "data" / "plugins").glob("*") if len(p.name) == 64]
    address = str(workdir / "containerd" / "containerd.sock")
    for _ in range(5):
        victims = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cgroups = (entry / "cgroup").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(i in cgroups for i in ids) or ("containerd-shim" in cmdline and address in cmdline):
                victims.append(int(entry.name))
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
    for plugin_id in ids:
        for d in Path("/sys/fs/cgroup").glob(f"**/{plugin_id}"):
            try:
                d.rmdir()
            except OSError:
                pass


@contextmanager
def docker_host(name: str, engine: Optional["Engine"] = None, legacy_pynet: bool = True,
                keep_logs: bool = False) -> Iterator[DockerHost]:
    """A started private host with the test image, and whatever happens in the
    block, nothing of it afterwards (`keep_logs`: its *.log files stay, named)."""
    remove_stale_host(name)  # a killed earlier run's, never another host's
    workdir = workdir_for(name)
    host = DockerHost(name, workdir, legacy_pynet=legacy_pynet, engine=engine)
    try:
        host.start()
        host.docker("import", str(build_image_tar(workdir)), IMAGE)
        yield host
    finally:
        host.close()
        if keep_logs:
            for path in workdir.iterdir():
                if path.suffix != ".log":
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
            print(f"logs of host {name} kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def workdir_for(name: str) -> Path:
    """A new work directory for host `name`, named after it so that a later run
    can clear it if this one is killed before its teardown."""
    return Path(tempfile.mkdtemp(prefix=f"{NS_PREFIX}{name}."))  # "h1." never prefixes "h1-trixie."


def remove_stale_host(name: str) -> None:
    """Clear what a run that was killed before its teardown left of host `name`
    (its namespaces, processes, cgroups and work directories, which may hold
    an engine's root); other hosts' are left alone."""
    ns = NS_PREFIX + name
    for entry in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        found = entry.split()[0] if entry.split() else ""
        if found in (ns, ns + "-out"):
            remove_namespace(found)
    remove_cgroups(ns)
    # Only once its processes are gone: their mounts (none reach this namespace) went with them.
    for stale in Path(tempfile.gettempdir()).glob(f"{NS_PREFIX}{name}.*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def build_image_tar(dest: Path) -> Path:
    """A root filesystem of static busybox and its applets, for `docker import`."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    tar_path = dest / "busybox.tar"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        for d in ("etc", "proc", "sys", "dev", "tmp", "www"):
            (root / d).mkdir()
        (root / "www" / "index.html").write_text("pynet\n")
        with tarfile.open(tar_path, "w") as tar:
            tar.add(root, arcname=".")
    return tar_path
