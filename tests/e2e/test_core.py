"""The core scenarios, against a real dockerd: what an operator types."""

from __future__ import annotations

import ipaddress
import json
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from ..support.harness import IMAGE, PLUGIN

pytestmark = [pytest.mark.e2e, pytest.mark.both_engines]


def ping(scenario, container: str, target: str, v6: bool = False) -> None:
    scenario.exec(container, "ping", *(["-6"] if v6 else []), "-c", "1", "-W", "3", target)


def test_quick_start(host, scenario):
    """The README's quick start, as typed (with the test's plugin name)."""
    blue = scenario.network("--subnet", "10.231.0.0/24", "--ip-range", "10.231.0.128/25",
                            "--gateway", "10.231.0.1", "--aux-address", "reserved=10.231.0.200")
    a = scenario.run(blue)
    a_ip = host.container_ip(a, blue)
    assert ipaddress.ip_address(a_ip) in ipaddress.ip_network("10.231.0.128/25")
    out = scenario.run(blue, "--ip", "10.231.0.130", detach=False,
                       cmd=("sh", "-c", f"ping -c1 -W3 {a_ip} && ping -c1 -W3 {a} && ping -c1 -W3 10.231.0.1"
                                        " && ip -4 -o addr show eth0 && ip route"))
    assert "10.231.0.130/24" in out
    assert "default via 10.231.0.1" in out
    # Join returned the gateway: Docker attached no second interface.
    assert "eth1" not in scenario.exec(a, "ip", "link")
    assert not [l for l in host.links() if l["ifname"] == "docker_gwbridge"]


def test_addresses_stay_in_range_and_skip_aux(host, scenario):
    net = scenario.network("--subnet", "10.232.0.0/24", "--ip-range", "10.232.0.8/29",
                           "--gateway", "10.232.0.1", "--aux-address", "printer=10.232.0.10")
    names = [scenario.run(net) for _ in range(7)]
    ips = {host.container_ip(n, net) for n in names}
    assert len(ips) == 7
    assert ips == {f"10.232.0.{i}" for i in range(8, 16)} - {"10.232.0.10"}
    err = host.docker_fails("run", "-d", "--network", net, IMAGE, "sleep", "1")
    assert "no free address left in 10.232.0.8/29" in err


def test_static_ip_and_its_conflict(host, scenario):
    net = scenario.network("--subnet", "10.233.0.0/24")
    c = scenario.run(net, "--ip", "10.233.0.50")
    assert host.container_ip(c, net) == "10.233.0.50"
    err = host.docker_fails("run", "--rm", "--network", net, "--ip", "10.233.0.50", IMAGE, "true")
    assert "10.233.0.50 is already in use by endpoint" in err
    # the gateway is held too, and says so
    err = host.docker_fails("run", "--rm", "--network", net, "--ip", "10.233.0.1", IMAGE, "true")
    assert "gateway of network" in err


def test_two_containers_ping_each_other_and_the_gateway(host, scenario):
    net = scenario.network("--subnet", "10.234.0.0/24")
    a, b = scenario.run(net), scenario.run(net)
    ping(scenario, a, host.container_ip(b, net))
    ping(scenario, b, a)  # by name, through Docker's embedded DNS
    ping(scenario, a, "10.234.0.1")


def test_connect_and_disconnect_a_running_container(host, scenario):
    blue = scenario.network("--subnet", "10.235.0.0/24")
    green = scenario.network("--subnet", "10.236.0.0/24")
    c = scenario.run(blue)
    other = scenario.run(green)
    host.docker("network", "connect", green, c)
    assert "10.236.0." in scenario.exec(c, "ip", "-4", "addr", "show", "eth1")
    ping(scenario, c, host.container_ip(other, green))
    ping(scenario, c, "10.236.0.1")
    before = set(host.pynet_links())
    host.docker("network", "disconnect", green, c)
    assert "eth1" not in scenario.exec(c, "ip", "link")
    gone = before - set(host.pynet_links())
    assert len(gone) == 1 and next(iter(gone)).startswith("pnh"), gone
    ping(scenario, c, "10.235.0.1")


def test_network_without_subnet_gets_a_default_pool(host, scenario):
    n1, n2 = scenario.network(), scenario.network()
    subnets = [host.inspect(n)["IPAM"]["Config"][0]["Subnet"] for n in (n1, n2)]
    nets = [ipaddress.ip_network(s) for s in subnets]
    assert all(n.subnet_of(ipaddress.ip_network("10.200.0.0/13")) and n.prefixlen == 24 for n in nets)
    assert not nets[0].overlaps(nets[1])
    c = scenario.run(n1)
    assert ipaddress.ip_address(host.container_ip(c, n1)) in nets[0]
    ping(scenario, c, str(nets[0][1]))


def test_ipv6_network(host, scenario):
    net = scenario.network("--ipv6", "--subnet", "10.237.0.0/24", "--subnet", "fd00:237::/64")
    a, b = scenario.run(net), scenario.run(net)
    a6, b6 = host.container_ip(a, net, v6=True), host.container_ip(b, net, v6=True)
    assert ipaddress.ip_address(a6) in ipaddress.ip_network("fd00:237::/64") and a6 != b6
    ping(scenario, a, b6, v6=True)
    ping(scenario, b, a6, v6=True)
    ping(scenario, a, "fd00:237::1", v6=True)
    ping(scenario, a, host.container_ip(b, net))


def test_twenty_parallel_containers_get_distinct_addresses(host, scenario):
    net = scenario.network("--subnet", "10.238.0.0/24")
    names = [scenario.name("par") for _ in range(20)]
    scenario.containers += names

    def start(name):
        return host.docker_proc("run", "-d", "--name", name, "--network", net, IMAGE, "sleep", "1000")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(start, names))
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
    ips = [host.container_ip(n, net) for n in names]
    assert len(set(ips)) == 20
    ping(scenario, names[0], ips[-1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_pynet_restart_between_runs(host, scenario, sig):
    net = scenario.network("--subnet", "10.239.0.0/24")
    a = scenario.run(net)
    host.restart_pynet(sig)
    b = scenario.run(net)  # the network is known without Docker replaying anything
    assert host.container_ip(b, net) != host.container_ip(a, net)
    ping(scenario, b, a)
    c = scenario.run(net, "--ip", "10.239.0.77")
    ping(scenario, c, b)
    err = host.docker_fails("run", "--rm", "--network", net, "--ip", host.container_ip(a, net), IMAGE, "true")
    assert "already in use" in err


def test_removal_leaves_nothing(host, scenario):
    net = scenario.network("--ipv6", "--subnet", "10.240.0.0/24", "--subnet", "fd00:240::/64")
    network_id = host.inspect(net)["Id"]
    for _ in range(3):
        scenario.run(net)
    assert len(host.pynet_links()) >= 4
    scenario.cleanup()
    scenario.containers.clear()
    scenario.networks.clear()
    assert host.pynet_links() == []
    addrs = json.dumps(host.ip_json("addr"))
    assert "10.240.0." not in addrs and "fd00:240::" not in addrs
    routes = json.dumps(host.ip_json("route")) + json.dumps(host.ip_json("-6", "route"))
    assert "10.240.0." not in routes and "fd00:240:" not in routes
    assert f"pynet:{network_id[:12]}" not in host.firewall_rules()
    assert host.state_rows("networks") == 0 and host.state_rows("endpoints") == 0
    assert host.state_rows("ipam_pools") == 0 and host.state_rows("ipam_addresses") == 0


def test_socket_and_state_are_root_only(host):
    import stat
    sock = host.pynet_socket.stat()
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600 and sock.st_uid == 0
    state = host.state_dir.stat()
    assert stat.S_IMODE(state.st_mode) == 0o700 and state.st_uid == 0
    for f in host.state_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f


def test_the_mode_option(host, scenario):
    """One driver name, its mode an option: bridge is the default and can be named."""
    net = scenario.network("-o", "pynet.mode=bridge", "--subnet", "10.218.0.0/24")
    a, b = scenario.run(net), scenario.run(net)
    scenario.exec(a, "ping", "-c1", "-W2", host.container_ip(b, net))
    refused = host.docker_fails("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                                "-o", "pynet.mode=mesh", "--subnet", "10.219.0.0/24", "nomode")
    assert "unknown -o pynet.mode='mesh' (pynet's modes: bridge)" in refused
    # A mode pynet has, but that is off here, says what turns it on.
    refused = host.docker_fails("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                                "-o", "pynet.mode=overlay", "--subnet", "10.219.0.0/24", "nomode")
    assert "-o pynet.mode=overlay needs pynet's cluster settings (--etcd-endpoints and --vtep" in refused

