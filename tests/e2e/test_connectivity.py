"""External connectivity and isolation, as Docker's bridge driver users expect it.

The "outside host" is a namespace joined to the Docker host by a veth
(203.0.113.0/24, 2001:db8:1::/64): no traffic leaves the test's namespaces.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from ..support.harness import IMAGE, OutsideHost

pytestmark = [pytest.mark.e2e, pytest.mark.both_engines]

HTTPD = ("httpd", "-f", "-p", "80", "-h", "/www")
NETSERVER = str(Path(__file__).parents[1] / "support" / "netserver.py")


@pytest.fixture(scope="module")
def outside(host):
    out = OutsideHost(host)
    try:
        out.start()
        yield out
    finally:
        out.close()


def whoami(scenario, container: str, target: str) -> str:
    """The address the outside host sees for a connection from the container."""
    return scenario.exec(container, "nc", "-w", "3", target, str(OutsideHost.WHOAMI_PORT)).strip()


def http_from(scenario, container: str, address: str, port: int) -> str:
    """GET / from inside a container (busybox's static wget crashes: nc does it)."""
    request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 " + f"{address} {port}"
    proc = scenario.host.docker_proc("exec", container, "sh", "-c", request)
    return proc.stdout.rsplit("\n", 2)[-2] if proc.returncode == 0 and "\n" in proc.stdout else ""


def can_ping(host, container: str, target: str) -> bool:
    proc = host.docker_proc("exec", container, "ping", "-c", "1", "-W", "1", target)
    return proc.returncode == 0


def wait_for(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def test_outbound_nat_shows_the_host_address(host, scenario, outside):
    net = scenario.network("--subnet", "10.241.0.0/24")
    c = scenario.run(net)
    assert whoami(scenario, c, outside.PEER4) == outside.HOST4


def test_masquerade_off_shows_the_container_address(host, scenario, outside):
    net = scenario.network("--subnet", "10.242.0.0/24", "-o", "com.docker.network.bridge.enable_ip_masquerade=false")
    outside.route("10.242.0.0/24", "via", outside.HOST4)
    c = scenario.run(net)
    assert whoami(scenario, c, outside.PEER4) == host.container_ip(c, net)


def test_published_ports_from_outside_from_the_host_and_by_hairpin(host, scenario, outside):
    net = scenario.network("--subnet", "10.243.0.0/24")
    web = scenario.run(net, "-p", "8080:80", "-p", "127.0.0.1:8081:80", cmd=HTTPD)
    assert wait_for(lambda: outside.curl(f"http://{outside.HOST4}:8080/").stdout == "pynet\n")
    assert host.curl("http://127.0.0.1:8080/").stdout == "pynet\n"
    assert host.curl(f"http://{outside.HOST4}:8080/").stdout == "pynet\n"
    assert host.curl("http://127.0.0.1:8081/").stdout == "pynet\n"
    assert outside.curl(f"http://{outside.HOST4}:8081/").returncode != 0, "bound to 127.0.0.1 only"
    neighbour = scenario.run(net)
    assert http_from(scenario, neighbour, outside.HOST4, 8080) == "pynet"
    assert http_from(scenario, web, outside.HOST4, 8080) == "pynet"  # its own port, through the host
    assert {(b["host_ip"], b["host_port"], b["port"]) for b in host.published(web)} == {
        ("0.0.0.0", 8080, 80), ("127.0.0.1", 8081, 80)}
    # Stopping the container removes the mapping.
    host.docker("stop", "-t", "1", web)
    assert outside.curl(f"http://{outside.HOST4}:8080/").returncode != 0
    assert "--dport 8080" not in "\n".join(host.netns_exec("iptables", "-t", "nat", "-S").stdout.splitlines())


def test_udp_port(host, scenario, outside):
    net = scenario.network("--subnet", "10.244.0.0/24")
    c = scenario.run(net, "-p", "5353:53/udp")
    server = host.in_container_netns(c, sys.executable, NETSERVER, "udp-echo", "53")
    try:
        def answered():
            proc = outside.exec(sys.executable, NETSERVER, "udp-send", outside.HOST4, "5353", "ping", check=False)
            return proc.stdout.strip() == "echo:ping"
        assert wait_for(answered)
    finally:
        server.kill()
        server.wait()


def test_publish_all_and_port_ranges(host, scenario, outside):
    net = scenario.network("--subnet", "10.245.0.0/24")
    c = scenario.run(net, "--expose", "80", "-P", cmd=HTTPD)
    (binding,) = host.published(c)
    assert binding["port"] == 80 and binding["host_port"] > 1024
    assert wait_for(lambda: outside.curl(f"http://{outside.HOST4}:{binding['host_port']}/").stdout == "pynet\n")
    r1 = scenario.run(net, "-p", "8090-8091:80", cmd=HTTPD)
    r2 = scenario.run(net, "-p", "8090-8091:80", cmd=HTTPD)
    ports = {host.published(r)[0]["host_port"] for r in (r1, r2)}
    assert ports == {8090, 8091}
    err = host.docker_fails("run", "-d", "--network", net, "-p", "8090-8091:80", IMAGE, *HTTPD)
    assert "no free host port in 8090-8091/tcp" in err


def test_host_port_conflict_fails_the_second_container(host, scenario):
    net = scenario.network("--subnet", "10.246.0.0/24")
    first = scenario.run(net, "-p", "8085:80", cmd=HTTPD)
    name = scenario.name("second")
    scenario.containers.append(name)
    err = host.docker_fails("run", "-d", "--name", name, "--network", net, "-p", "8085:80", IMAGE, *HTTPD)
    assert "host port 8085/tcp is already published by endpoint" in err
    assert host.published(first)


def test_icc_off(host, scenario, outside):
    net = scenario.network("--subnet", "10.247.0.0/24", "-o", "com.docker.network.bridge.enable_icc=false")
    a = scenario.run(net, "-p", "8086:80", cmd=HTTPD)
    b = scenario.run(net)
    assert not can_ping(host, b, host.container_ip(a, net))
    assert can_ping(host, b, "10.247.0.1")
    assert wait_for(lambda: outside.curl(f"http://{outside.HOST4}:8086/").stdout == "pynet\n")
    assert http_from(scenario, b, outside.HOST4, 8086) == "pynet"


def test_networks_are_isolated_from_each_other_and_from_docker_bridges(host, scenario):
    a_net = scenario.network("--subnet", "10.248.0.0/24")
    b_net = scenario.network("--subnet", "10.249.0.0/24")
    d_net = scenario.network("--subnet", "10.250.0.0/24", driver="bridge", ipam=None)
    a, b, d = scenario.run(a_net), scenario.run(b_net), scenario.run(d_net)
    # pynet learns Docker's bridges (by name: br-<12 hex>) at its next firewall check.
    d_bridge = "br-" + host.inspect(d_net)["Id"][:12]
    assert wait_for(lambda: f"-o {d_bridge} -j DROP" in host.netns_exec("iptables", "-S", "PYNET-ISOLATION-2").stdout)
    assert can_ping(host, a, "10.248.0.1")
    assert not can_ping(host, a, host.container_ip(b, b_net))
    assert not can_ping(host, b, host.container_ip(a, a_net))
    assert not can_ping(host, a, host.container_ip(d, d_net))
    assert not can_ping(host, d, host.container_ip(a, a_net))


def test_internal_network(host, scenario, outside):
    net = scenario.network("--internal", "--subnet", "10.251.0.0/24")
    a, b = scenario.run(net), scenario.run(net)
    assert "default" not in scenario.exec(a, "ip", "route")
    assert "eth1" not in scenario.exec(a, "ip", "link"), "no docker_gwbridge interface"
    assert can_ping(host, a, host.container_ip(b, net))
    assert not can_ping(host, a, outside.PEER4)
    assert host.docker_proc("exec", a, "nc", "-w", "2", outside.PEER4, "9000").returncode != 0


def test_mtu(host, scenario):
    net = scenario.network("--subnet", "10.252.0.0/24", "-o", "com.docker.network.driver.mtu=1400")
    c = scenario.run(net)
    assert "mtu 1400" in scenario.exec(c, "ip", "link", "show", "eth0")
    bridge = host.inspect(net)["Id"][:12]
    assert [l["mtu"] for l in host.links() if l["ifname"] == f"pn-{bridge}"] == [1400]


def test_ipv6_outbound_routed_nat_and_published(host, scenario, outside):
    routed = scenario.network("--ipv6", "--subnet", "10.253.0.0/24", "--subnet", "fd00:253::/64")
    outside.route("fd00:253::/64", "via", outside.HOST6)
    c = scenario.run(routed, "-p", "8087:80", cmd=HTTPD)
    assert whoami(scenario, c, outside.PEER6) == host.container_ip(c, routed, v6=True)
    assert wait_for(lambda: outside.curl(f"http://[{outside.HOST6}]:8087/").stdout == "pynet\n")
    natted = scenario.network("--ipv6", "--subnet", "10.254.0.0/24", "--subnet", "fd00:254::/64",
                              "-o", "com.docker.network.bridge.gateway_mode_ipv6=nat")
    d = scenario.run(natted)
    assert whoami(scenario, d, outside.PEER6) == outside.HOST6


def test_rules_come_back_after_a_flush(host, scenario, outside):
    net = scenario.network("--subnet", "10.255.0.0/24")
    a = scenario.run(net, "-p", "8088:80", cmd=HTTPD)
    b = scenario.run(net)
    assert wait_for(lambda: outside.curl(f"http://{outside.HOST4}:8088/").stdout == "pynet\n")
    host.netns_exec("iptables", "-F", "PYNET-FORWARD")
    host.netns_exec("iptables", "-t", "nat", "-F", "PYNET-DNAT")
    host.netns_exec("iptables", "-D", "FORWARD", "-j", "PYNET-FORWARD")
    assert wait_for(lambda: can_ping(host, b, host.container_ip(a, net)), timeout=10)
    assert wait_for(lambda: outside.curl(f"http://{outside.HOST4}:8088/").stdout == "pynet\n", timeout=10)
    assert "restore pynet's rules" in (host.workdir / "pynet.log").read_text()


def test_no_rule_left_after_removal(host, scenario, outside):
    net = scenario.network("--ipv6", "--subnet", "10.240.1.0/24", "--subnet", "fd00:2401::/64",
                           "-o", "com.docker.network.bridge.enable_icc=false")
    tag = "pynet:" + host.inspect(net)["Id"][:12]
    scenario.run(net, "-p", "8089:80", cmd=HTTPD)
    rules = lambda: "\n".join(host.netns_exec(tool, "-t", table, "-S").stdout  # noqa: E731
                              for tool in ("iptables", "ip6tables") for table in ("filter", "nat"))
    assert tag in rules() and "--dport 8089" in rules()
    scenario.cleanup()
    scenario.containers.clear()
    scenario.networks.clear()
    assert tag not in rules() and "--dport 8089" not in rules()
