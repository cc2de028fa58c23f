"""`pynet path` against a real namespace: pynet wired as driver/app.py wires it
(test_reconcile's fixtures), containers as namespaces with their veth end
moved in, and each hop read back from the kernel. A hop broken behind
pynet's back is marked with the repair that fixes it, and is fixed by it."""

from __future__ import annotations

import random

import pytest

from driver import naming, wire
from driver.bridge.path import add_hops
from driver.path.model import Path, parse_destination

from .conftest import run
from .test_reconcile import Ep, Net, create_endpoint, create_network, pynet, sandboxes  # noqa: F401 - fixtures

pytestmark = pytest.mark.kernel


async def path_of(p, eid: str, to: str = "") -> dict:
    path = Path(eid, parse_destination(to) if to else None)
    await add_hops(p.driver, path)
    await path.finish()
    return path.to_json()


async def container(p, ns, net: Net, sandboxes) -> Ep:  # noqa: F811
    """An endpoint joined and set up inside its namespace as Docker sets it up."""
    ep = await create_endpoint(p, ns, net, sandboxes.create())
    where = f"--net={ep.sandbox}"
    run("nsenter", where, "ip", "link", "set", ep.peer, "name", "eth0")
    run("nsenter", where, "ip", "addr", "add", ep.address, "dev", "eth0")
    run("nsenter", where, "ip", "link", "set", "eth0", "up")
    run("nsenter", where, "ip", "route", "add", "default", "via", net.gateway.split("/")[0])
    return ep


def hop(body: dict, kind: str) -> dict:
    return next(h for h in body["hops"] if h["kind"] == kind)


async def publish(p, ep, host_port: int, port: int = 80) -> None:
    await p.driver.program_external_connectivity(wire.ProgramExternalConnectivityRequest.model_validate(
        {"NetworkID": ep.net.nid, "EndpointID": ep.eid, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": port, "HostIP": "", "HostPort": host_port, "HostPortEnd": host_port}]}}))


async def test_a_bridge_endpoint_hop_by_hop(ns, pynet, sandboxes):  # noqa: F811
    p = await pynet()
    await p.reconciler.run()
    net = await create_network(p, "10.201.0.0/24")
    ep = await container(p, ns, net, sandboxes)
    body = await path_of(p, ep.eid)
    assert [h["kind"] for h in body["hops"]] == ["container", "veth", "bridge", "firewall", "uplink"]
    assert body["ok"] and body["mode"] == "bridge" and body["network"] == net.nid
    inside = hop(body, "container")
    assert inside["name"] == "eth0" and inside["holds"]["addresses"] == [ep.address]
    assert inside["holds"]["state"] == "up"
    veth = hop(body, "veth")
    assert veth["name"] == ep.host and veth["holds"]["bridge"] == net.bridge
    assert veth["holds"]["port_state"] == "forwarding" and veth["holds"]["hairpin"] is True
    assert hop(body, "bridge")["holds"]["gateways"] == [net.gateway]
    rules = hop(body, "firewall")["items"]
    assert all(r["present"] for r in rules)
    assert any(r["rule"] == f"-A PYNET-FORWARD -i {net.bridge} -o {net.bridge} -j ACCEPT" for r in rules)
    assert not any("comment" in r["rule"] for r in rules)  # shown without pynet's tag


async def test_a_published_port_and_its_dnat(ns, pynet, sandboxes):  # noqa: F811
    p = await pynet()
    await p.reconciler.run()
    net = await create_network(p, "10.202.0.0/24")
    ep = await container(p, ns, net, sandboxes)
    other = await container(p, ns, net, sandboxes)
    port = random.randint(20000, 40000)
    await publish(p, ep, port)
    body = await path_of(p, ep.eid)
    (published,) = hop(body, "ports")["items"]
    assert published["socket_held"] and published["present"] and f"--dport {port}" in published["rule"]
    # From the neighbour to the gateway's published port: rewritten, then forwarded (hairpin).
    gateway = net.gateway.split("/")[0]
    steps = (await path_of(p, other.eid, f"{gateway}:{port}"))["to"]["steps"]
    verdicts = [(s["at"], s["verdict"]) for s in steps]
    assert ("firewall", "rewrite") in verdicts, steps
    rewrite = next(s for s in steps if s["verdict"] == "rewrite")
    assert f"{ep.address.split('/')[0]}:80" in rewrite["what"] and rewrite["packets"] == 0
    assert steps[-1]["verdict"] == "deliver" and ep.host in steps[-1]["what"]


async def test_icc_off_names_the_rule_that_drops(ns, pynet, sandboxes):  # noqa: F811
    p = await pynet()
    await p.reconciler.run()
    net = await create_network(p, "10.203.0.0/24", generic={"com.docker.network.bridge.enable_icc": "false"})
    a = await container(p, ns, net, sandboxes)
    b = await container(p, ns, net, sandboxes)
    body = await path_of(p, a.eid, b.address.split("/")[0] + ":80")
    assert hop(body, "bridge")["holds"]["icc"] is False
    last = body["to"]["steps"][-1]
    assert last["verdict"] == "drop" and "ICC" in last["what"]
    assert last["rule"] == f"-A PYNET-FORWARD -i {net.bridge} -o {net.bridge} -j DROP"
    # Another network: isolation drops it.
    apart = await create_network(p, "10.204.0.0/24")
    c = await container(p, ns, apart, sandboxes)
    # The container has no route to 10.204/24 but its default route through the gateway.
    last = (await path_of(p, c.eid, a.address.split("/")[0]))["to"]["steps"][-1]
    assert last["verdict"] == "drop" and "isolation" in last["what"] and "PYNET-ISOLATION-2" in last["rule"]


async def test_broken_hops_are_marked_with_the_repair_that_fixes_them(ns, pynet, sandboxes):  # noqa: F811
    p = await pynet(min_age=0.0)
    await p.reconciler.run()
    net = await create_network(p, "10.205.0.0/24")
    ep = await container(p, ns, net, sandboxes)
    ns.ip("link", "del", ep.host)  # the veth, and with it the container's end
    tag = naming.firewall_tag(net.nid)
    rule = f"PYNET-FORWARD -i {net.bridge} -o {net.bridge} -m comment --comment {tag} -j ACCEPT"
    ns.iptables(4, "-D", *rule.split())
    body = await path_of(p, ep.eid)
    assert not body["ok"]
    marks = {h["kind"]: [x["repair"] for x in h["problems"]] for h in body["hops"] if h["problems"]}
    assert "(endpoints rebuilt)" in marks["veth"][0] and "(endpoints rebuilt)" in marks["container"][0]
    assert "(firewall rules restored)" in marks["firewall"][0]
    missing = [r for r in hop(body, "firewall")["items"] if not r["present"]]
    assert [r["rule"] for r in missing] == [f"-A PYNET-FORWARD -i {net.bridge} -o {net.bridge} -j ACCEPT"]
    done = await p.reconciler.run()
    assert done["endpoints rebuilt"] == 1 and done["firewall rules restored"] >= 1
    assert (await path_of(p, ep.eid))["ok"]


async def test_an_endpoint_without_a_container(ns, pynet):  # noqa: F811
    p = await pynet()
    net = await create_network(p, "10.206.0.0/24")
    ep = await create_endpoint(p, ns, net)  # CreateEndpoint only: no Join yet
    body = await path_of(p, ep.eid, "198.51.100.7:443")
    assert hop(body, "container")["holds"]["state"].startswith("no container has joined")
    assert body["to"]["steps"][0]["verdict"] == "unknown"


async def test_a_dual_stack_endpoint_and_an_ipv6_destination(ns, pynet, sandboxes):  # noqa: F811
    p = await pynet()
    await p.reconciler.run()
    net = await create_network(p, "10.207.0.0/24", v6="fd00:207::/64")
    eps = []
    for _ in range(2):
        ep = await create_endpoint(p, ns, net, sandboxes.create(), v6=True)
        where = f"--net={ep.sandbox}"
        run("nsenter", where, "ip", "link", "set", ep.peer, "name", "eth0")
        run("nsenter", where, "ip", "addr", "add", ep.address, "dev", "eth0")
        run("nsenter", where, "ip", "-6", "addr", "add", ep.address6, "dev", "eth0", "nodad")
        run("nsenter", where, "ip", "link", "set", "eth0", "up")
        run("nsenter", where, "ip", "route", "add", "default", "via", net.gateway.split("/")[0])
        run("nsenter", where, "ip", "-6", "route", "add", "default", "via", net.gateway6.split("/")[0])
        eps.append(ep)
    a, b = eps
    body = await path_of(p, a.eid, f"[{b.address6.split('/')[0]}]:80")
    assert body["ok"], body
    inside = hop(body, "container")
    assert a.address6 in inside["holds"]["addresses"] and len(inside["holds"]["default_routes"]) == 2
    assert hop(body, "firewall")["holds"]["families"] == [4, 6]
    last = body["to"]["steps"][-1]
    assert last["verdict"] == "deliver" and b.host in last["what"], body["to"]
