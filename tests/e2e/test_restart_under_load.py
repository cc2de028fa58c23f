"""pynet restarted while containers start: no `docker run` fails.

Docker retries a call after a transport error with an empty body (moby#39331),
so a call on a connection pynet accepted and then dropped fails. Each test
runs 3 rounds of 10 parallel `docker run` and restarts pynet inside each
round's burst of calls: 0.4 s in, or as soon as 3 of the round's 10
endpoints exist if that comes first (on a fast machine Docker makes all ten
within half a second, and a stop after the burst would prove nothing). Then
it checks the outcome: how many runs failed, distinct addresses, every
container reachable, and nothing leaked.
"""

from __future__ import annotations

import ipaddress
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Callable

import pytest

from ..support.harness import IMAGE
from .test_restarts import ipam_addresses, mesh_ok, running, wait_for

pytestmark = pytest.mark.e2e

ROUNDS, PARALLEL, DELAY, MIDWAY = 3, 10, 0.4, 3


def endpoints(host, nid: str) -> int:
    return host.state_query("SELECT COUNT(*) FROM endpoints WHERE network_id = ?", nid)[0][0]


def restart_rounds(host, scenario, net: str, restart: Callable[[], None]) -> list[str]:
    """The rounds; returns the errors of the `docker run`s that failed."""
    failed = []
    nid = host.inspect(net)["Id"]  # once: the loop below polls every 10 ms
    for _ in range(ROUNDS):
        names = [scenario.name("rr") for _ in range(PARALLEL)]
        scenario.containers += names
        before = endpoints(host, nid)
        with ThreadPoolExecutor(PARALLEL) as pool:
            runs = [pool.submit(host.docker_proc, "run", "-d", "--name", n, "--network", net,
                                IMAGE, "sleep", "1000") for n in names]
            deadline = time.monotonic() + DELAY
            while time.monotonic() < deadline and endpoints(host, nid) < before + MIDWAY:
                time.sleep(0.01)
            restart()
            failed += [f"{n}: {r.stderr.strip()}" for n, f in zip(names, runs, strict=True)
                       if (r := f.result()).returncode != 0]
    return failed


def check_round_outcome(host, scenario, net: str, subnet: str, settle: float = 15) -> None:
    """Distinct addresses, every container reachable, one endpoint and one veth
    each (within `settle` seconds: reconciliation reclaims what a failed start
    left); after removal, nothing held."""
    up = [c for c in scenario.containers if running(host, c)]
    ips = [host.container_ip(c, net) for c in up]
    assert len(set(ips)) == len(ips) == len(up), ips
    assert mesh_ok(host, up, net) == []
    nid = host.inspect(net)["Id"]
    assert wait_for(lambda: host.state_query(
        "SELECT COUNT(*) FROM endpoints WHERE network_id = ?", nid)[0][0] == len(up), timeout=settle)
    assert wait_for(lambda: len([name for name in host.pynet_links() if name.startswith("pnh")]) == len(up),
                    timeout=settle), host.pynet_links()
    host.docker_proc("rm", "-f", *scenario.containers)
    scenario.containers.clear()
    gateway = str(ipaddress.ip_network(subnet)[1])
    assert wait_for(lambda: ipam_addresses(host, subnet) == {gateway}, timeout=30), ipam_addresses(host, subnet)
    assert wait_for(lambda: [n for n in host.pynet_links() if n.startswith("pnh")] == [], timeout=15)


def pynet_log(host) -> str:
    return (host.workdir / "pynet.log").read_text(errors="replace")


@contextmanager
def socket_activated(host):
    """pynet socket-activated: the test holds its socket, as systemd would."""
    host.stop_pynet()
    host.hold_socket()
    host.start_pynet()
    try:
        yield
    finally:
        host.stop_pynet()
        host.release_socket()
        host.start_pynet()


@pytest.fixture
def activated(host):
    with socket_activated(host):
        yield host


@pytest.mark.both_engines
@pytest.mark.parametrize("owner", ["pynet", "systemd"])
def test_sigterm_restart_fails_no_start(host, scenario, owner):
    """With pynet's own socket the stop removes the path first, so Docker's new
    dials fail and are retried whole; with systemd's they wait in its queue.
    Either way every call pynet accepted is answered."""
    subnet = {"pynet": "10.232.0.0/24", "systemd": "10.233.0.0/24"}[owner]
    with socket_activated(host) if owner == "systemd" else nullcontext():
        net = scenario.network("--subnet", subnet)
        failed = restart_rounds(host, scenario, net, lambda: host.restart_pynet(signal.SIGTERM))
        assert failed == [], failed
        assert "pynet stopped" in pynet_log(host)
        if owner == "systemd":
            assert "(socket from systemd)" in pynet_log(host)
        check_round_outcome(host, scenario, net, subnet)


def test_sigkill_under_socket_activation_fails_only_calls_in_flight(activated, scenario):
    """A crash loses only the calls pynet had accepted at that instant (counted
    while it is stopped, just before the kill); the calls queued meanwhile wait
    in the socket and the next pynet answers them."""
    host = activated
    subnet = "10.234.0.0/24"
    net = scenario.network("--subnet", subnet)
    in_flight = []

    def crash() -> None:
        host.pynet.send_signal(signal.SIGSTOP)
        in_flight.append(host.pynet_connections())
        host.restart_pynet(signal.SIGKILL)

    failed = restart_rounds(host, scenario, net, crash)
    print(f"SIGKILL under socket activation: {len(failed)} of {ROUNDS * PARALLEL} runs failed;"
          f" connections in flight at the kills: {in_flight}")
    assert len(failed) <= sum(in_flight), (failed, in_flight)
    check_round_outcome(host, scenario, net, subnet)
