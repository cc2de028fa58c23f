"""The cluster modes (overlay, routed) on real Docker hosts: three private
dockerds, each in its own network namespace, joined by an underlay
(198.18.42.0/24) with one etcd on it; pynet on each runs with the cluster
settings. Only the machine's own engine: the cluster modes add nothing
engine-specific."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.cluster_rig import ETCD_IP, PREFIX, Underlay, clear_namespaces, docker_cluster
from tests.support.harness import IMAGE, PLUGIN

pytestmark = pytest.mark.e2e

SUBNET = "10.80.0.0/16"
HTTPD = ("httpd", "-f", "-p", "80", "-h", "/www")


@pytest.fixture(scope="module")
def underlay():
    directory = Path(tempfile.mkdtemp(prefix="pynet-overlay-"))
    made = Underlay(f"{PREFIX}{secrets.token_hex(2)}-", directory)
    try:
        yield made
    finally:
        made.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(engine, underlay):
    from tests.support.etcd import etcd_available
    if not etcd_available():
        pytest.fail("the overlay tests need etcd (apt-get install etcd-server)")
    clear_namespaces()
    underlay.start()
    with docker_cluster(underlay, [engine.host_name(f"o{i}") for i in (1, 2, 3)], engine) as hosts:
        yield hosts


def create(host, name: str, *extra: str, mode: str = "overlay") -> None:
    host.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "-o", f"pynet.mode={mode}",
                "-o", f"pynet.cluster={name}", "--ipam-opt", f"pynet.cluster={name}", *extra, name)


def until(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_a_cluster_network_spans_three_docker_hosts(cluster):
    for host in cluster:
        create(host, "web", "--subnet", SUBNET)
    names = []
    try:
        for i, host in enumerate(cluster, 1):
            host.docker("run", "-d", "--name", f"w{i}", "--network", "web", IMAGE, *HTTPD)
            names.append((host, f"w{i}"))
        ips = {name: host.container_ip(name, "web") for host, name in names}
        assert len(set(ips.values())) == 3
        for host, name in names:
            for other, ip in ips.items():
                if other != name:
                    assert host.docker_proc("exec", name, "ping", "-c", "1", "-W", "2", ip).returncode == 0, \
                        f"{name} -> {other} ({ip})"
        # A TCP stream across hosts: an HTTP answer from the container on the third host.
        host, name = names[0]
        answer = host.docker("exec", name, "sh", "-c",
                             f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ips['w3']} 80")
        assert "200 OK" in answer
        # `pynet path` of a container there, named by Docker: its VXLAN device, the peer
        # hosts' containers as entries checked against etcd, and a packet's way to w3.
        shown = subprocess.run(
            [sys.executable, "-m", "driver", "path", name, "--to", f"{ips['w3']}:80", "--json",
             "--socket", str(host.pynet_socket)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "DOCKER_HOST": f"unix://{host.socket}"})
        body = json.loads(shown.stdout)
        assert body["container"] == name and body["network_name"] == "web" and body["ok"], shown.stdout
        assert [h["kind"] for h in body["hops"]][-3:] == ["vxlan", "peers", "uplink"]
        peers = next(h for h in body["hops"] if h["kind"] == "peers")
        assert {p["ip"] for p in peers["items"] if p["in_kernel"]} == {ips["w2"], ips["w3"]}
        last = body["to"]["steps"][-1]
        assert last["verdict"] == "leave" and "VXLAN" in last["what"], body["to"]
        # Docker's view: a pynet network of local scope, the same subnet on every host.
        for host in cluster:
            inspect = host.inspect("web")
            assert inspect["Scope"] == "local" and inspect["IPAM"]["Config"][0]["Subnet"] == SUBNET
    finally:
        for host, name in names:
            host.docker_proc("rm", "-f", name)
        for host in cluster:
            host.docker_proc("network", "rm", "web")


def test_a_host_that_defines_the_network_differently_is_told_how(cluster):
    create(cluster[0], "api", "--subnet", "10.81.0.0/24")
    try:
        error = cluster[1].docker_fails("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                                        "-o", "pynet.mode=overlay", "-o", "pynet.cluster=api",
                                        "-o", "com.docker.network.driver.mtu=1400",
                                        "--ipam-opt", "pynet.cluster=api", "--subnet", "10.81.0.0/24", "api")
        assert "cluster network api is defined differently" in error and "mtu: 1400 here, 1450" in error
    finally:
        cluster[0].docker_proc("network", "rm", "api")
        cluster[1].docker_proc("network", "rm", "api")


def iperf_intervals(client_pid: str, server_ip: str, seconds: int) -> subprocess.Popen:
    return subprocess.Popen(["nsenter", "-t", client_pid, "-n", "iperf3", "-c", server_ip, "-t", str(seconds),
                             "-i", "1", "-J"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_etcd_killed_during_a_cross_host_stream(cluster, underlay):
    """Running containers keep streaming; a new cluster container fails within 5 s with the
    documented message; a bridge network still works; etcd back, a cluster container works
    within 10 s."""
    o1, o2 = cluster[0], cluster[1]
    for host in (o1, o2):
        create(host, "stream", "--subnet", "10.82.0.0/24")
    names = [(o1, "s1"), (o2, "s2")]
    server = None
    try:
        for host, name in names:
            host.docker("run", "-d", "--name", name, "--network", "stream", IMAGE, "sleep", "1000")
        server_pid = o2.docker("inspect", "-f", "{{.State.Pid}}", "s2")
        client_pid = o1.docker("inspect", "-f", "{{.State.Pid}}", "s1")
        server = subprocess.Popen(["nsenter", "-t", server_pid, "-n", "iperf3", "-s", "-1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert until(lambda: subprocess.run(["nsenter", "-t", server_pid, "-n", "ss", "-ltn"], capture_output=True,
                                            text=True).stdout.count(":5201") > 0, 5)
        stream = iperf_intervals(client_pid, o2.container_ip("s2", "stream"), 8)
        time.sleep(2)
        underlay.stop_etcd()
        t0 = time.monotonic()
        error = o1.docker_fails("run", "--rm", "--network", "stream", IMAGE, "true")
        print(f"a new cluster container failed after {time.monotonic() - t0:.2f} s: {error.strip()[-160:]}")
        assert time.monotonic() - t0 < 5
        assert "is unreachable" in error and "running containers are unaffected" in error
        o1.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--subnet", "10.83.0.0/24", "local")
        o1.docker("run", "--rm", "--network", "local", IMAGE, "ping", "-c", "1", "-W", "2", "10.83.0.1")
        out, err = stream.communicate(timeout=30)
        intervals = [i["sum"]["bits_per_second"] for i in json.loads(out)["intervals"]]
        print("iperf3 one-second intervals (Gbit/s):", [round(x / 1e9, 2) for x in intervals])
        assert len(intervals) >= 7 and min(intervals) > 0, intervals
    finally:
        underlay.start_etcd()
        if server is not None and server.poll() is None:
            server.kill()
    t0 = time.monotonic()
    assert until(lambda: o1.docker_proc("run", "--rm", "--network", "stream", IMAGE, "true").returncode == 0, 10)
    print(f"a new cluster container worked {time.monotonic() - t0:.1f} s after etcd came back")
    for host, name in names:
        host.docker_proc("rm", "-f", name)
    o1.docker_proc("network", "rm", "local")
    for host in (o1, o2):
        host.docker_proc("network", "rm", "stream")


def test_a_hundred_containers_on_each_of_two_hosts(cluster, underlay):
    o1, o2 = cluster[0], cluster[1]
    for host in (o1, o2):
        create(host, "many", "--subnet", "10.84.0.0/22")
    started = []
    try:
        for batch in range(10):
            procs = []
            for host in (o1, o2):
                for i in range(10):
                    name = f"m{batch}-{i}"
                    procs.append((host, name, subprocess.Popen(host.docker_argv(
                        "run", "-d", "--name", name, "--network", "many", IMAGE, "sleep", "1000"),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
            for host, name, proc in procs:
                assert proc.wait(120) == 0, proc.stderr.read()
                started.append((host, name))
        ips = {(host.name, name): host.container_ip(name, "many") for host, name in started}
        assert len(set(ips.values())) == 200
        # The store holds exactly the running containers' addresses, each owned by its host.
        claims = etcd_prefix(underlay, "/pynet/addresses/many/")
        owned = {ip: json.loads(v)["host"] for ip, v in claims.items()}
        assert owned == {ip: host for (host, _), ip in ips.items()}
        # A host that joins the network late learns all 200 at once: its container reaches
        # the first and the last of them, and its kernel holds an entry for each.
        o3 = cluster[2]
        create(o3, "many", "--subnet", "10.84.0.0/22")
        late = o3.docker_proc("run", "--rm", "--network", "many", IMAGE, "sh", "-c",
                              " && ".join(f"ping -c 1 -W 2 {ip}" for ip in (ips[(started[0][0].name, started[0][1])],
                                                                          ips[(started[-1][0].name, started[-1][1])])))
        assert late.returncode == 0, late.stdout + late.stderr
        neighbours = subprocess.run(["ip", "-n", o3.ns, "neigh", "show", "nud", "permanent"], capture_output=True,
                                    text=True).stdout
        assert {ip for ip in ips.values() if f"{ip} dev pnvx" in neighbours} == set(ips.values())
    finally:
        cluster[2].docker_proc("network", "rm", "many")
        for host in (o1, o2):
            names = [n for h, n in started if h is host]
            if names:
                host.docker_proc("rm", "-f", *names, timeout=300)
    assert until(lambda: not etcd_prefix(underlay, "/pynet/addresses/many/"), 10)
    for host in (o1, o2):
        host.docker_proc("network", "rm", "many")


def test_fifty_new_containers_reach_another_host_with_their_first_packet(cluster):
    """Convergence: each new container's first ping, sent the moment it starts, is answered
    from a container on another host (whose host must already know the new one)."""
    o1, o2 = cluster[0], cluster[1]
    for host in (o1, o2):
        create(host, "converge", "--subnet", "10.83.0.0/24")
    try:
        o1.docker("run", "-d", "--name", "target", "--network", "converge", IMAGE, "sleep", "1000")
        target = o1.container_ip("target", "converge")
        answered = 0
        for _ in range(5):  # ten at a time
            procs = [subprocess.Popen(o2.docker_argv("run", "--rm", "--network", "converge", IMAGE,
                                                     "ping", "-c", "1", "-W", "2", target),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(10)]
            try:
                answered += sum(proc.wait(120) == 0 for proc in procs)
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
        print(f"{answered}/50 first packets answered across hosts")
        assert answered >= 49
    finally:
        o1.docker_proc("rm", "-f", "target")
        for host in (o1, o2):
            host.docker_proc("network", "rm", "converge")


def etcd_prefix(underlay, prefix: str) -> dict[str, str]:
    out = subprocess.run(["ip", "netns", "exec", underlay.etcd_ns, "etcdctl", "--endpoints", f"{ETCD_IP}:2379", "get",
                          prefix, "--prefix", "-w", "json"], capture_output=True, text=True,
                         env={**os.environ, "ETCDCTL_API": "3"}).stdout
    kvs = json.loads(out).get("kvs", []) if out.strip() else []
    return {base64.b64decode(kv["key"]).decode()[len(prefix):]: base64.b64decode(kv["value"]).decode() for kv in kvs}


def test_dockerd_restarted_on_one_host_keeps_the_network(cluster, underlay):
    o1, o2 = cluster[0], cluster[1]
    for host in (o1, o2):
        create(host, "durable", "--subnet", "10.85.0.0/24")
    try:
        o1.docker("run", "-d", "--name", "d1", "--network", "durable", IMAGE, "sleep", "1000")
        o2.docker("run", "-d", "--restart=always", "--name", "d2", "--network", "durable", IMAGE, "sleep", "1000")
        before = o2.container_ip("d2", "durable")
        assert o1.docker_proc("exec", "d1", "ping", "-c", "1", "-W", "2", before).returncode == 0
        o2.restart_dockerd()
        assert until(lambda: o2.docker_proc("exec", "d2", "true").returncode == 0, 30)
        after = o2.container_ip("d2", "durable")
        assert until(lambda: o1.docker_proc("exec", "d1", "ping", "-c", "1", "-W", "1", after).returncode == 0, 15)
        # No address is held twice: the store has one claim per running container.
        claims = {ip: json.loads(v)["host"] for ip, v in etcd_prefix(underlay, "/pynet/addresses/durable/").items()}
        assert sorted(claims) == sorted({o1.container_ip("d1", "durable"), after})
    finally:
        o1.docker_proc("rm", "-f", "d1")
        o2.docker_proc("rm", "-f", "d2")
        for host in (o1, o2):
            host.docker_proc("network", "rm", "durable")


def test_a_dual_stack_cluster_network(cluster):
    o1, o2 = cluster[0], cluster[1]
    for host in (o1, o2):
        create(host, "dual", "--ipv6", "--subnet", "10.86.0.0/24", "--subnet", "fd00:86::/64")
    try:
        o1.docker("run", "-d", "--name", "v1", "--network", "dual", IMAGE, "sleep", "1000")
        o2.docker("run", "-d", "--name", "v2", "--network", "dual", IMAGE, "sleep", "1000")
        v4, v6 = o2.container_ip("v2", "dual"), o2.container_ip("v2", "dual", v6=True)
        assert v6.startswith("fd00:86::")
        assert o1.docker_proc("exec", "v1", "ping", "-c", "1", "-W", "2", v4).returncode == 0
        assert until(lambda: o1.docker_proc("exec", "v1", "ping", "-6", "-c", "1", "-W", "2", v6).returncode == 0, 10)
    finally:
        o1.docker_proc("rm", "-f", "v1")
        o2.docker_proc("rm", "-f", "v2")
        for host in (o1, o2):
            host.docker_proc("network", "rm", "dual")


def pynet_routes(host) -> str:
    return subprocess.run(["ip", "-n", host.ns, "route", "show", "proto", "158"], capture_output=True,
                          text=True).stdout


def test_a_routed_network_spans_docker_hosts_unencapsulated(cluster):
    for host in cluster:
        create(host, "flat", "--subnet", "10.87.0.0/16", mode="routed")
    names = []
    try:
        for i, host in enumerate(cluster, 1):
            published = ("-p", "8087:80") if i == 2 else ()
            host.docker("run", "-d", "--name", f"f{i}", "--network", "flat", *published, IMAGE, *HTTPD)
            names.append((host, f"f{i}"))
        ips = {name: host.container_ip(name, "flat") for host, name in names}
        for host, name in names:
            for other, ip in ips.items():
                if other != name:
                    assert until(lambda h=host, n=name, ip=ip: h.docker_proc(
                        "exec", n, "ping", "-c", "1", "-W", "1", ip).returncode == 0, 5), f"{name} -> {other} ({ip})"
        o1, o2, o3 = cluster
        answer = o1.docker("exec", "f1", "sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ips['f3']} 80")
        assert "200 OK" in answer
        # No encapsulation: the containers have the underlay's MTU, and a route per remote container.
        assert o1.docker("exec", "f1", "cat", "/sys/class/net/eth0/mtu").strip() == "1500"
        assert f"{ips['f2']} via 198.18.42.2" in pynet_routes(o1) and f"{ips['f3']} via 198.18.42.3" in pynet_routes(o1)
        # A published port, from another host's namespace through o2's underlay address.
        code = subprocess.run(["ip", "netns", "exec", o1.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               "--max-time", "5", "http://198.18.42.2:8087/"], capture_output=True, text=True).stdout
        assert code == "200"
        # A removed container's route goes from its peers.
        o3.docker("rm", "-f", "f3")
        assert until(lambda: ips["f3"] not in pynet_routes(o1) and ips["f3"] not in pynet_routes(o2), 5)
    finally:
        for host, name in names:
            host.docker_proc("rm", "-f", name)
        for host in cluster:
            host.docker_proc("network", "rm", "flat")


def test_a_vxlan_sender_that_is_no_member_gets_nothing_in(cluster, underlay):
    """A namespace on the underlay with the network's VNI, aimed at o1: its frames are
    dropped before decapsulation (counted, named in the log); members keep talking."""
    import ipaddress
    import re
    import sys

    from driver.overlay.addressing import endpoint_mac
    o1, o2 = cluster[0], cluster[1]
    for host in (o1, o2):
        create(host, "guarded", "--subnet", "10.88.0.0/24")
    rogue = f"{underlay.prefix}rogue"
    try:
        o1.docker("run", "-d", "--name", "g1", "--network", "guarded", IMAGE, "sleep", "1000")
        o2.docker("run", "-d", "--name", "g2", "--network", "guarded", IMAGE, "sleep", "1000")
        ip = o1.container_ip("g1", "guarded")
        assert o2.docker_proc("exec", "g2", "ping", "-c", "1", "-W", "2", ip).returncode == 0
        shown = json.loads(subprocess.run([sys.executable, "-m", "driver", "cluster", "--json", "--socket",
                                           str(o1.pynet_socket)], capture_output=True, text=True, timeout=30).stdout)
        vni = next(n["vni"] for n in shown["networks"] if n["name"] == "guarded")
        subprocess.run(["ip", "netns", "add", rogue], check=True)
        underlay.attach(rogue, "198.18.42.60/24", "urg")
        for argv in (["link", "add", "vx0", "type", "vxlan", "id", str(vni), "local", "198.18.42.60", "remote",
                      "198.18.42.1", "dstport", "4789", "nolearning"],
                     ["addr", "add", "10.88.0.250/24", "dev", "vx0"], ["link", "set", "vx0", "up"],
                     ["neigh", "add", ip, "lladdr", endpoint_mac(vni, ipaddress.ip_address(ip)), "dev", "vx0",
                      "nud", "permanent"]):
            subprocess.run(["ip", "-n", rogue, *argv], check=True)
        pid = o1.docker("inspect", "-f", "{{.State.Pid}}", "g1")
        subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-I", "INPUT", "-s", "10.88.0.250"], check=True)
        subprocess.run(["ip", "netns", "exec", rogue, "ping", "-c", "20", "-i", "0.05", "-W", "1", ip],
                       capture_output=True)
        saved = subprocess.run(["nsenter", "-t", pid, "-n", "iptables-save", "-c", "-t", "filter"],
                               capture_output=True, text=True).stdout
        received = re.search(r"^\[(\d+):\d+\] -A INPUT -s 10\.88\.0\.250/32$", saved, re.M)
        assert received and received.group(1) == "0", saved
        # Counted (read every 10 s) and named in o1's log.
        log = o1.workdir / "pynet.log"
        assert until(lambda: "VXLAN from 198.18.42.60 dropped" in log.read_text(errors="replace"), 15)

        def dropped() -> float:  # the counter as pynet's last look (every 10 s) read it
            found = re.search(r"^pynet_overlay_vxlan_dropped_packets_total (\S+)$", subprocess.run(
                ["curl", "-s", "--unix-socket", str(o1.pynet_socket), "http://pynet/metrics"], capture_output=True,
                text=True).stdout, re.M)
            return float(found.group(1)) if found else 0.0
        # A look may fall in the middle of the burst: the next one has it all.
        assert until(lambda: dropped() >= 20, 25), dropped()
        assert o2.docker_proc("exec", "g2", "ping", "-c", "1", "-W", "2", ip).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", rogue], capture_output=True)
        for host, name in ((o1, "g1"), (o2, "g2")):
            host.docker_proc("rm", "-f", name)
        for host in (o1, o2):
            host.docker_proc("network", "rm", "guarded")


def test_a_docker_host_killed_whole_is_reclaimed_by_its_peers(cluster, underlay):
    """Last of this module: o3 leaves the cluster for good. Its power is cut (dockerd,
    containerd, its containers and pynet killed, its namespace gone); past the grace
    period a peer reclaims it: every peer drops its containers' entries, its epoch moves,
    and after the cool-down its container's address is another host's to take."""
    from tests.support.cluster_rig import UNDERLAY, cluster_flags
    short = ("--host-lease", "3", "--lost-host-grace", "3", "--reclaim-cooldown", "3")
    o1, o2, o3 = cluster
    for i, host in enumerate(cluster, 1):
        host.restart_pynet_with(*short, *cluster_flags(host.name, f"{UNDERLAY}.{i}"))

    def reaches(ip: str) -> bool:
        return o1.docker_proc("exec", "k1", "ping", "-c", "1", "-W", "1", ip).returncode == 0

    def neighbours(host) -> str:
        return subprocess.run(["ip", "-n", host.ns, "neigh", "show", "nud", "permanent"], capture_output=True,
                              text=True).stdout
    try:
        for host in (o1, o2, o3):
            create(host, "gone", "--subnet", "10.89.0.0/24")
        o1.docker("run", "-d", "--name", "k1", "--network", "gone", IMAGE, "sleep", "1000")
        o3.docker("run", "-d", "--name", "k3", "--network", "gone", IMAGE, "sleep", "1000")
        lost = o3.container_ip("k3", "gone")
        assert until(lambda: reaches(lost), 10)
        assert f"{lost} dev pnvx" in neighbours(o2)
        o3.reboot()  # comes back as a plain Docker host, off the underlay and out of the cluster
        # Lease (3 s) + grace (3 s) + a check (5 s at most).
        assert until(lambda: f"{lost} dev pnvx" not in neighbours(o1) and f"{lost} dev pnvx" not in neighbours(o2),
                     30), neighbours(o1)
        assert int(etcd_prefix(underlay, "/pynet/epochs/").get(o3.name, "0")) >= 2  # moved: fenced
        assert not any(json.loads(v).get("host") == o3.name
                       for v in etcd_prefix(underlay, "/pynet/endpoints/gone/").values())

        def take() -> bool:  # once the address has cooled down (3 s)
            o2.docker_proc("rm", "-f", "k2")
            return o2.docker_proc("run", "-d", "--name", "k2", "--network", "gone", "--ip", lost, IMAGE,
                                  "sleep", "1000").returncode == 0
        assert until(take, 20)
        assert until(lambda: reaches(lost), 10)
    finally:
        for host, name in ((o1, "k1"), (o2, "k2")):
            host.docker_proc("rm", "-f", name)
        for i, host in enumerate((o1, o2), 1):
            host.docker_proc("network", "rm", "gone")
            host.restart_pynet_with(*cluster_flags(host.name, f"{UNDERLAY}.{i}"))
