"""Fixtures for the end-to-end tier: one private Docker host per engine and test session.

Every test runs on the machine's own engine; a test (or module) marked
`both_engines` also runs on the other Debian release's (engines.py), its ID
saying which: `test_quick_start[bookworm]`, `test_quick_start[trixie]`.
Under the test command (PYNET_E2E=required) a second engine that cannot be
made is a failure, never a skip.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

from ..support import engines
from ..support.harness import IMAGE, PLUGIN, DockerHost, docker_host

REQUIRED = os.environ.get("PYNET_E2E") == "required"  # set by the test command: never skip there
KEEP_LOGS = bool(os.environ.get("PYNET_E2E_KEEP_LOGS"))  # for debugging: the hosts' logs stay


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("dockerd", "docker", "busybox", "nsenter", "unshare", "curl", "iptables"):
        if shutil.which(tool) is None and not (tool == "busybox" and Path("/bin/busybox").exists()):
            return f"needs {tool}"
    return None


def pytest_generate_tests(metafunc):
    if "engine" in metafunc.fixturenames:
        releases = [engines.native().release]
        if metafunc.definition.get_closest_marker("both_engines"):
            releases.append(engines.OTHER_RELEASE.get(releases[0], "other"))
        metafunc.parametrize("engine", releases, indirect=True, scope="session")


def skip_or_fail(why: str):
    if REQUIRED:
        pytest.fail(f"end-to-end tests {why} (PYNET_E2E=required)")
    pytest.skip(f"end-to-end tests {why}")


@pytest.fixture(scope="session")
def engine(request) -> engines.Engine:
    """The machine's own engine, or the other release's, made (once) on first use."""
    if request.param == engines.native().release:
        return engines.native()
    missing = _missing() or (None if shutil.which("debootstrap") else "need debootstrap for a second engine")
    if missing:
        skip_or_fail(missing)
    try:
        return engines.other()
    except SystemExit as exc:
        skip_or_fail(f"cannot make the second engine ({request.param}): {exc}")


@pytest.fixture(scope="session")
def host(engine):
    missing = _missing()
    if missing:
        skip_or_fail(missing)
    with docker_host(engine.host_name("h1"), engine, keep_logs=KEEP_LOGS) as h:
        yield h


_names = itertools.count(1)


class Scenario:
    """Names networks and containers uniquely and removes them afterwards."""

    def __init__(self, host: DockerHost) -> None:
        self.host = host
        self.networks: list[str] = []
        self.containers: list[str] = []

    def name(self, stem: str) -> str:
        return f"{stem}{next(_names)}"

    def network(self, *args: str, name: str | None = None, driver: str = PLUGIN, ipam: str | None = PLUGIN) -> str:
        name = name or self.name("net")
        argv = ["network", "create", "-d", driver]
        if ipam:
            argv += ["--ipam-driver", ipam]
        self.host.docker(*argv, *args, name)
        self.networks.append(name)
        return name

    def run(self, network: str, *args: str, name: str | None = None, cmd: tuple = ("sleep", "1000"),
            detach: bool = True) -> str:
        """Start a container; returns its name (detached) or its output."""
        name = name or self.name("c")
        self.containers.append(name)
        argv = ["run", "--name", name, "--network", network, *args]
        if detach:
            return self.host.docker(*argv, "-d", IMAGE, *cmd) and name
        return self.host.docker(*argv, "--rm", IMAGE, *cmd)

    def exec(self, container: str, *cmd: str) -> str:
        return self.host.docker("exec", container, *cmd)

    def cleanup(self) -> None:
        if self.containers:
            self.host.docker_proc("rm", "-f", *self.containers)
        for net in reversed(self.networks):
            self.host.docker_proc("network", "rm", net)


@pytest.fixture
def scenario(host):
    s = Scenario(host)
    yield s
    s.cleanup()
