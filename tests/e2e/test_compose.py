"""Docker Compose, the way most people create networks.

docs/compose.yaml (shown in the README) is brought up on the test host with
the test's plugin and image names, checked (static address, ip_range, MTU,
name resolution, the published port), and taken down leaving nothing. The
client is `docker compose` where the docker client has that plugin, else
Debian 12's `docker-compose`.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from ..support.harness import IMAGE, PLUGIN, run

pytestmark = [pytest.mark.e2e, pytest.mark.both_engines]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "compose.yaml"
PROJECT = "pynetcompose"


def compose(host, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": f"unix://{host.socket}"}
    if run(["docker", "compose", "version"], check=False).returncode == 0:
        argv = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        argv = ["docker-compose"]
    else:
        pytest.fail("neither `docker compose` nor `docker-compose` is installed (./scripts/test.sh installs it)")
    return run([*argv, *args], check=False, env=env, timeout=180)


def service_container(host, service: str) -> str:
    (cid,) = host.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                         "--filter", f"label=com.docker.compose.service={service}").split()
    return cid


def test_the_readme_shows_the_example_as_it_is():
    assert textwrap.indent(EXAMPLE.read_text(), "    ") in (ROOT / "README.md").read_text()


def test_compose_up_works_and_down_leaves_nothing(host, tmp_path):
    text = EXAMPLE.read_text().replace("driver: pynet", f"driver: {PLUGIN}").replace("image: busybox",
                                                                                      f"image: {IMAGE}")
    (tmp_path / "compose.yaml").write_text(text)
    file = ["-f", str(tmp_path / "compose.yaml"), "-p", PROJECT]
    net = f"{PROJECT}_front"
    try:
        up = compose(host, *file, "up", "-d")
        assert up.returncode == 0, up.stderr
        web, client = service_container(host, "web"), service_container(host, "client")
        nid = host.inspect(net)["Id"]
        assert host.inspect(net)["Driver"] == PLUGIN
        assert host.container_ip(web, net) == "10.230.0.10"
        assert ipaddress.ip_address(host.container_ip(client, net)) in ipaddress.ip_network("10.230.0.128/25")
        assert "mtu 1400" in host.docker("exec", client, "ip", "link", "show", "eth0")
        host.docker("exec", client, "ping", "-c1", "-W2", "web")  # by name, through Docker's DNS
        answer = host.docker("exec", client, "sh", "-c", 'echo -e "GET / HTTP/1.0\\r\\n\\r\\n" | nc web 80')
        assert "hello from web" in answer
        assert host.curl("http://127.0.0.1:8230/").stdout == "hello from web\n"
    finally:
        down = compose(host, *file, "down")
    assert down.returncode == 0, down.stderr
    assert host.docker_proc("network", "inspect", net).returncode != 0
    assert host.pynet_links() == []
    assert f"pynet:{nid[:12]}" not in host.firewall_rules()
    assert host.state_query("SELECT COUNT(*) FROM networks WHERE network_id = ?", nid)[0][0] == 0
    assert host.state_query("SELECT COUNT(*) FROM ipam_pools WHERE pool = ?", "10.230.0.0/24")[0][0] == 0
