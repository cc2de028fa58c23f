"""The overlay mode on real Docker hosts: three private dockerds, each in its
own network namespace, joined by an underlay (198.18.42.0/24) with one etcd
on it; pynet on each runs with the cluster settings. Only the machine's own
engine: the overlay adds nothing engine-specific."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.cluster_rig import PREFIX, Underlay, clear_namespaces, docker_cluster
from tests.support.harness import IMAGE, PLUGIN

pytestmark = pytest.mark.e2e

SUBNET = "10.80.0.0/16"
HTTPD = ("httpd", "-f", "-p", "80", "-h", "/www")


@pytest.fixture(scope="module")
def cluster(engine):
    from tests.support.etcd import etcd_available
    if not etcd_available():
        pytest.fail("the overlay tests need etcd (apt-get install etcd-server)")
    clear_namespaces()
    directory = Path(tempfile.mkdtemp(prefix="pynet-overlay-"))
    underlay = Underlay(f"{PREFIX}{secrets.token_hex(2)}-", directory)
    try:
        underlay.start()
        with docker_cluster(underlay, [engine.host_name(f"o{i}") for i in (1, 2, 3)], engine) as hosts:
            yield hosts
    finally:
        underlay.close()
        shutil.rmtree(directory, ignore_errors=True)


def create(host, name: str, *extra: str) -> None:
    host.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "-o", "pynet.mode=overlay",
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
