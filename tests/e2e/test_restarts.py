"""Nothing lost, nothing leaked: pynet, dockerd and the whole host restarted
under running containers, and a chaos run with pynet killed at random."""

from __future__ import annotations

import ipaddress
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ..support.harness import IMAGE

pytestmark = pytest.mark.e2e


def wait_for(check, timeout: float = 30.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def running(host, name: str) -> bool:
    return host.docker_proc("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"


def mesh_ok(host, containers: list[str], network: str) -> list[str]:
    """Every container pings every other one on `network`; the failures."""
    ips = {c: host.container_ip(c, network) for c in containers}
    failures = []
    for c in containers:
        peers = " ".join(ip for other, ip in ips.items() if other != c)
        if not peers:
            continue
        script = f"for ip in {peers}; do ping -c1 -W2 $ip >/dev/null || echo $ip; done"
        out = host.docker_proc("exec", c, "sh", "-c", script)
        failures += [f"{c} -> {ip}" for ip in out.stdout.split()] if out.returncode == 0 else [f"{c}: {out.stderr}"]
    return failures


def ipam_addresses(host, subnet: str) -> set[str]:
    rows = host.state_query("SELECT a.address FROM ipam_addresses a JOIN ipam_pools p USING (pool_id)"
                            " WHERE p.pool = ?", subnet)
    return {r[0] for r in rows}


def assert_nothing_left(host, network_ids: list[str]) -> None:
    assert host.pynet_links() == []
    rules = "\n".join(host.netns_exec(tool, "-t", table, "-S").stdout
                      for tool in ("iptables", "ip6tables") for table in ("filter", "nat"))
    for nid in network_ids:
        assert f"pynet:{nid[:12]}" not in rules
    for table in ("networks", "endpoints", "ipam_pools", "ipam_addresses"):
        assert host.state_rows(table) == 0, table


def test_fifty_containers_at_once(host, scenario):
    net = scenario.network("--subnet", "10.224.0.0/24")
    names = [scenario.name("fifty") for _ in range(50)]
    scenario.containers += names
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda n: host.docker_proc(
            "run", "-d", "--name", n, "--network", net, IMAGE, "sleep", "1000"), names))
    assert [r.returncode for r in results] == [0] * 50, [r.stderr for r in results if r.returncode]
    ips = [host.container_ip(n, net) for n in names]
    assert len(set(ips)) == 50
    assert mesh_ok(host, names[:2], net) == []


@pytest.mark.both_engines
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_dockerd_restart_with_running_containers(host, scenario, sig):
    net = scenario.network("--subnet", "10.225.0.0/24")
    a = scenario.run(net, "--restart=always")
    b = scenario.run(net, "--restart=always", "--ip", "10.225.0.77")
    host.restart_dockerd(sig)
    assert wait_for(lambda: running(host, a) and running(host, b), timeout=60), host.docker("ps", "-a")
    assert host.container_ip(b, net) == "10.225.0.77"
    assert wait_for(lambda: mesh_ok(host, [a, b], net) == [], timeout=20)
    c = scenario.run(net)
    assert mesh_ok(host, [a, b, c], net) == []
    # Old endpoints are gone from pynet's state and the kernel: one per running container.
    assert wait_for(lambda: host.state_query(
        "SELECT COUNT(*) FROM endpoints e JOIN networks n USING (network_id) WHERE n.network_id = ?",
        host.inspect(net)["Id"])[0][0] == 3, timeout=15)


def test_reboot(host, scenario):
    """After a power cut every link, rule and namespace is gone; pynet and
    dockerd come back and the networks work with no one doing anything."""
    net = scenario.network("--subnet", "10.226.0.0/24")
    v6 = scenario.network("--ipv6", "--subnet", "10.227.0.0/24", "--subnet", "fd00:227::/64")
    a = scenario.run(net, "--restart=always", "-p", "8095:80", cmd=("httpd", "-f", "-p", "80", "-h", "/www"))
    b = scenario.run(net, "--restart=always", "--ip", "10.226.0.66")
    c = scenario.run(v6, "--restart=always")
    d = scenario.run(v6, "--restart=always")
    host.reboot()
    assert wait_for(lambda: all(running(host, x) for x in (a, b, c, d)), timeout=90), host.docker("ps", "-a")
    assert host.container_ip(b, net) == "10.226.0.66"
    assert wait_for(lambda: mesh_ok(host, [a, b], net) == [], timeout=20)
    assert mesh_ok(host, [c, d], v6) == []
    assert host.docker_proc("exec", c, "ping", "-6", "-c1", "-W2", host.container_ip(d, v6, v6=True)).returncode == 0
    assert wait_for(lambda: host.curl("http://127.0.0.1:8095/").stdout == "pynet\n", timeout=15)
    # Addresses of the endpoints that died with the host are back in the pools.
    assert wait_for(lambda: ipam_addresses(host, "10.226.0.0/24") == {
        "10.226.0.1", host.container_ip(a, net), "10.226.0.66"}, timeout=20)
    assert "reconcile:" in (host.workdir / "pynet.log").read_text()


def test_chaos_pynet_killed_during_churn(host, scenario):
    """220 container creations and removals on two networks while pynet is
    SIGKILLed at seeded points of the churn; then everything works, nothing is
    held twice, and removing everything leaves nothing.

    The kills follow the churn's progress, not the clock: kill i comes once
    operation kill_at[i] has started, and no later operation starts before it,
    so a fast and a slow machine see the same kills between the same operations."""
    total = 220
    nets = [scenario.network("--subnet", "10.228.0.0/24"), scenario.network("--subnet", "10.229.0.0/24")]
    rng = random.Random(1234)
    kill_at = [30 * i + rng.randint(-8, 8) for i in range(1, 8)]  # 7 kills, the last before op 220
    gate = threading.Condition()
    live: dict[str, str] = {}  # container -> network
    stats = {"ops": 0, "failed": 0, "limit": kill_at[0], "ended": 0, "broken": 0}

    def worker(seed: int) -> None:
        try:
            churn(random.Random(seed))
        except BaseException:
            stats["broken"] = 1  # the others stop at their next operation: fail fast
            raise
        finally:
            with gate:
                stats["ended"] += 1
                gate.notify_all()

    def churn(r: random.Random) -> None:
        while True:
            with gate:
                gate.wait_for(lambda: stats["ops"] < stats["limit"] or stats["ops"] >= total or stats["broken"])
                if stats["ops"] >= total or stats["broken"]:
                    return
                stats["ops"] += 1
                gate.notify_all()
                victim = r.choice(sorted(live)) if live and r.random() < 0.45 else None
                if victim:
                    live.pop(victim)
            if victim:
                proc = host.docker_proc("rm", "-f", victim)
            else:
                name, net = scenario.name("chaos"), r.choice(nets)
                with gate:
                    scenario.containers.append(name)
                proc = host.docker_proc("run", "-d", "--name", name, "--network", net, IMAGE, "sleep", "1000")
                if proc.returncode == 0:
                    with gate:
                        live[name] = net
                else:
                    host.docker_proc("rm", "-f", name)
            if proc.returncode != 0:
                with gate:
                    stats["failed"] += 1

    kills = 0
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(worker, rng.random()) for _ in range(4)]
        try:
            for i, at in enumerate(kill_at):
                with gate:
                    assert gate.wait_for(lambda at=at: stats["ops"] >= at or stats["ended"] > 0,
                                         timeout=600), stats
                assert stats["ops"] >= at, "a worker ended early"
                time.sleep(rng.uniform(0.0, 0.5))  # somewhere inside the operations in flight
                host.restart_pynet(signal.SIGKILL)
                kills += 1
                with gate:
                    stats["limit"] = kill_at[i + 1] if i + 1 < len(kill_at) else total
                    gate.notify_all()
        finally:  # never leave a worker waiting at the gate
            with gate:
                stats["limit"] = total
                gate.notify_all()
        for f in futures:
            f.result()
    assert kills == len(kill_at) == 7, kills
    assert stats["ops"] == total and stats["failed"] < stats["ops"] // 4, stats

    # Every container Docker runs works, and no address is held twice.
    running_now = {c: n for c, n in live.items() if running(host, c)}
    for net in nets:
        members = [c for c, n in running_now.items() if n == net]
        ips = [host.container_ip(c, net) for c in members]
        assert len(set(ips)) == len(ips), ips
        assert mesh_ok(host, members, net) == []

    # Remove the containers: the pools shrink back to their gateways.
    host.docker_proc("rm", "-f", *scenario.containers)
    scenario.containers.clear()
    for subnet in ("10.228.0.0/24", "10.229.0.0/24"):
        gateway = str(ipaddress.ip_network(subnet)[1])
        assert wait_for(lambda subnet=subnet, gateway=gateway: ipam_addresses(host, subnet) == {gateway},
                        timeout=30), ipam_addresses(host, subnet)
    ids = [host.inspect(n)["Id"] for n in nets]
    scenario.cleanup()
    scenario.networks.clear()
    assert_nothing_left(host, ids)
    print(f"chaos: {stats['ops']} operations, {stats['failed']} failed, pynet killed {kills} times")
