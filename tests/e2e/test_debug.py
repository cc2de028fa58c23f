"""Debugging through pynet's socket: health, state, metrics and the `pynet` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.both_engines]

HTTPD = ("httpd", "-f", "-p", "80", "-h", "/www")


def get(host, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--unix-socket", str(host.pynet_socket), f"http://pynet{path}"],
                          capture_output=True, text=True, timeout=30)


def pynet(host, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": f"unix://{host.socket}"}
    return subprocess.run([sys.executable, "-m", "driver", *args, "--socket", str(host.pynet_socket)],
                          capture_output=True, text=True, timeout=60, env=env)


def metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}" + (rf"\{{{re.escape(want)}\}}" if want else "") + r" ([0-9.e+]+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


def test_health_state_and_metrics(host, scenario):
    health = json.loads(get(host, "/healthz").stdout)
    assert health["ready"] and health["checks"]["reconciled"].startswith("ok")
    before = get(host, "/metrics").stdout
    net = scenario.network("--subnet", "10.223.0.0/24")
    c = scenario.run(net)
    after = get(host, "/metrics").stdout
    for method in ("NetworkDriver.CreateEndpoint", "NetworkDriver.Join", "IpamDriver.RequestAddress"):
        assert metric(after, "pynet_calls_total", method=method) >= metric(before, "pynet_calls_total", method=method) + 1
        assert metric(after, "pynet_call_duration_seconds_count", method=method) >= 1
    assert metric(after, "pynet_endpoints") >= 1 and metric(after, "pynet_networks") >= 1
    pool = "PynetLocal/10.223.0.0/24"
    assert metric(after, "pynet_pool_used_addresses", pool=pool) == 2  # gateway and the container
    state = json.loads(get(host, "/debug/state").stdout)
    nid = host.inspect(net)["Id"]
    assert any(n["id"] == nid for n in state["networks"])
    (ep,) = [e for e in state["endpoints"] if e["network"] == nid]
    assert ep["addresses"] == [f"{host.container_ip(c, net)}/24"]
    # Unknown paths and methods are still Docker-style 404s; GETs change nothing.
    assert '"Err"' in get(host, "/debug/nothing").stdout


def test_cli_lists_networks_endpoints_ports_and_pools(host, scenario):
    net = scenario.network("--subnet", "10.222.0.0/24", "--aux-address", "printer=10.222.0.9")
    web = scenario.run(net, "-p", "8097:80", cmd=HTTPD)
    status = pynet(host, "status")
    assert status.returncode == 0 and "ready" in status.stdout
    networks = pynet(host, "networks")
    assert net in networks.stdout and "10.222.0.0/24" in networks.stdout
    endpoints = pynet(host, "endpoints", net)
    assert web in endpoints.stdout and "0.0.0.0:8097->80/tcp" in endpoints.stdout
    ports = json.loads(pynet(host, "ports", "--json").stdout)
    assert any(p["host_port"] == 8097 and p["port"] == 80 and p["container"] == web for p in ports), ports
    ipam = pynet(host, "ipam", net)
    assert "gateway of network" in ipam.stdout and "aux address 'printer'" in ipam.stdout
    assert host.container_ip(web, net) in ipam.stdout
    print(status.stdout, networks.stdout, endpoints.stdout, pynet(host, "ports").stdout, ipam.stdout, sep="\n")


def test_doctor_finds_and_repairs_what_was_broken_behind_pynets_back(host, scenario):
    # Without its own periodic repairs, so that doctor sees the damage.
    host.restart_pynet_with("--reconcile-interval", "0", "--firewall-interval", "0")
    try:
        net = scenario.network("--subnet", "10.221.0.0/24")
        a, b = scenario.run(net), scenario.run(net)
        pynet(host, "doctor", "--repair")  # settle what earlier tests left for reconciliation
        healthy = pynet(host, "doctor")
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        nid = host.inspect(net)["Id"][:12]
        endpoint = host.inspect(a)["NetworkSettings"]["Networks"][net]["EndpointID"]
        host.netns_exec("ip", "link", "del", f"pnh{endpoint[:12]}")
        host.netns_exec("iptables", "-D", "PYNET-FORWARD", "-i", f"pn-{nid}", "-o", f"pn-{nid}",
                        "-m", "comment", "--comment", f"pynet:{nid}", "-j", "ACCEPT")
        sick = pynet(host, "doctor")
        print(sick.stdout)
        assert sick.returncode == 1, sick.stdout + sick.stderr
        assert f"endpoint {endpoint[:12]}" in sick.stdout and "the container still runs" in sick.stdout
        assert f"network {nid}: IPv4 firewall rules are missing" in sick.stdout
        # `pynet path` marks the same hops, each with the repair doctor names.
        broken = pynet(host, "path", a)
        print(broken.stdout)
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "(endpoints rebuilt)" in broken.stdout and "(firewall rules restored)" in broken.stdout
        repaired = pynet(host, "doctor", "--repair")
        print(repaired.stdout)
        assert repaired.returncode == 0, repaired.stdout
        assert "1 endpoints rebuilt" in repaired.stdout
        again = pynet(host, "doctor")
        assert again.returncode == 0, again.stdout + again.stderr
        assert pynet(host, "path", a).returncode == 0
        ping = host.docker_proc("exec", a, "ping", "-c1", "-W2", host.container_ip(b, net))
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        host.restart_pynet_with()


def test_path_follows_a_container_hop_by_hop(host, scenario):
    net = scenario.network("--subnet", "10.219.0.0/24")
    web = scenario.run(net, "-p", "8095:80", cmd=HTTPD)
    client = scenario.run(net)
    shown = pynet(host, "path", web)
    print(shown.stdout)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.startswith(f"container {web}, endpoint ") and f"network {net} (" in shown.stdout
    body = json.loads(pynet(host, "path", web, "--json").stdout)
    assert [h["kind"] for h in body["hops"]] == ["container", "veth", "bridge", "firewall", "ports", "uplink"]
    assert body["container"] == web and body["network_name"] == net
    inside = body["hops"][0]
    assert inside["name"] == "eth0" and inside["holds"]["addresses"] == [f"{host.container_ip(web, net)}/24"]
    (published,) = body["hops"][4]["items"]
    assert published["published"] == "0.0.0.0:8095->80/tcp" and published["socket_held"] and published["present"]
    # The client reaches the published port through its gateway: rewritten to web, delivered.
    to = json.loads(pynet(host, "path", client, "--to", "10.219.0.1:8095", "--json").stdout)["to"]["steps"]
    print(to)
    assert any(s["verdict"] == "rewrite" and f"{host.container_ip(web, net)}:80" in s["what"] for s in to)
    assert to[-1]["verdict"] == "deliver"
    # ICC off: the rule that drops the neighbour, named.
    apart = scenario.network("--subnet", "10.218.0.0/24", "-o", "com.docker.network.bridge.enable_icc=false")
    a, b = scenario.run(apart), scenario.run(apart)
    steps = json.loads(pynet(host, "path", a, "--to", host.container_ip(b, apart), "--json").stdout)["to"]["steps"]
    assert steps[-1]["verdict"] == "drop" and "ICC" in steps[-1]["what"] and steps[-1]["rule"].endswith("-j DROP")
    # A container on two of pynet's networks: pick one.
    host.docker("network", "connect", apart, client)
    both = pynet(host, "path", client)
    assert both.returncode == 2 and "pick one with --network" in both.stderr
    assert pynet(host, "path", client, "--network", apart).returncode == 0
    # Nothing by that name.
    missing = pynet(host, "path", "no-such-container")
    assert missing.returncode == 2 and "no container 'no-such-container'" in missing.stderr
    assert "unknown to pynet" in missing.stderr
