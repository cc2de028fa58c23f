"""Reconciliation: make the kernel and the firewall match the saved state.

Run before pynet answers its first call, and then periodically. It
recreates what is missing (after a reboot every bridge and rule is gone),
rebuilds the interface of a running container whose veth was deleted,
drops endpoints whose container namespace is gone (Docker tore them down
while pynet could not hear it) and gives their addresses back, and deletes
pynet's own objects that no saved network or endpoint explains (leftovers
of a crash). It never touches a link without pynet's mark, nor a rule
outside pynet's chains.

The same pass, run with `repair=False`, changes nothing and returns what it
would do: that is what `pynet doctor` shows.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Awaitable, Callable, Optional

from ipam.addr import IPAddress, IPNetwork

from . import naming
from .errors import DriverError
from .kernel import links, netns
from .kernel.sysctl import sysctl_name
from .bridge import NetworkDriver
from .periodic import every
from .rules import CHAINS, Rule, plan_sync

log = logging.getLogger("pynet.reconcile")

# Names pynet derives from IDs: a link of one of these names without a mark
# is a leftover of a crash between creating it and marking it.
_DERIVED = re.compile(r"^(pn-|pnh|pnc)[0-9a-f]{12}$")
_TAG = re.compile(r'--comment "pynet:([0-9a-f]{12})"')
# Seconds after Join past which a container end still on the host is no container
# starting (Docker moves it in within moments, however loaded the host).
JOIN_GRACE = 60.0

# Addresses of a subnet's pool nobody holds: (subnet, held, min_age) -> those addresses.
AddressQuery = Callable[[IPNetwork, set[IPAddress], float], Awaitable[list[IPAddress]]]
AddressRelease = Callable[[IPNetwork, IPAddress], Awaitable[None]]


@dataclass
class Finding:
    """One difference between the saved state and the kernel or the firewall."""

    action: str  # what repairing it counts as, e.g. "bridges recreated"
    subject: str  # e.g. "network 3f2a9c1b7e4d"
    problem: str
    meaning: str
    fix: str

    def to_json(self) -> dict:
        return asdict(self)


class Reconciler:
    def __init__(self, driver: NetworkDriver, unheld_addresses: Optional[AddressQuery] = None,
                 release_address: Optional[AddressRelease] = None, min_age: float = 60.0) -> None:
        self.driver = driver
        self.unheld_addresses = unheld_addresses
        self.release_address = release_address
        self.min_age = min_age  # younger endpoints and addresses may be a container starting now
        self.runs = 0
        self.totals: Counter = Counter()
        self.last: Counter = Counter()
        self.on_done: Optional[Callable[[Counter], None]] = None  # e.g. metrics
        self.fresh_state = False  # the state database was created by this pynet (app.build says)

    @property
    def spare_leftovers(self) -> bool:
        """Whether to keep pynet-made links and rules that the state does not explain.

        A state that is new, or holds no network, explains nothing: more likely the
        wrong state (a plugin upgraded without its state.source, a mistyped
        PYNET_STATE_DIR, another pynet's) than a host full of leftovers. Deleting
        then would cut running containers off, so they are only reported."""
        return self.fresh_state or not self.driver.networks

    async def inspect(self) -> list[Finding]:
        """What is out of line, changing nothing."""
        findings: list[Finding] = []
        await self._pass(findings, repair=False)
        return findings

    async def run(self, full: bool = True) -> Counter:
        """Put everything right; what was done, by action.

        `full=False` does only what must precede the first call (networks'
        bridges, addresses and rules): endpoints, leftovers and addresses can
        wait until pynet serves.
        """
        started = time.monotonic()
        done = await self._pass([], repair=True, full=full)
        self.runs += 1
        self.last = +done
        self.totals.update(self.last)
        if self.on_done is not None:
            self.on_done(self.last)
        took = time.monotonic() - started
        d = self.driver
        if self.last:
            log.warning("reconcile: %s (%.2f s)", ", ".join(f"{n} {what}" for what, n in self.last.items()), took)
        else:
            log.info("reconcile: state, kernel and firewall agree (%d networks, %d endpoints, %.2f s)",
                     len(d.networks), len(d.endpoints), took)
        return self.last

    async def _pass(self, findings: list[Finding], repair: bool, full: bool = True) -> Counter:
        done: Counter = Counter()

        async def act(finding: Finding, fix: Optional[Callable[[], Awaitable[object]]]) -> None:
            if not repair:
                findings.append(finding)
                return
            if fix is None:
                return
            try:
                result = await fix()
            except DriverError as exc:
                done[f"{finding.subject.split()[0]} repairs failed"] += 1
                log.error("reconcile: %s: %s", finding.subject, exc)
                return
            if result is not False:  # False: the object went meanwhile, nothing done
                done[finding.action] += result if type(result) is int else 1

        d = self.driver
        known = set(d.endpoints)  # before the dump: an endpoint made after it is not judged by it
        found = await links.dump_links(d.ipr)
        await self._networks(found, act, repair)
        if full:
            await self._endpoints(found, act, known)
            await self._orphan_links(found, act)
            await self._orphan_rules(act)
        await self._firewall(act, repair, done)
        if not full:
            return done
        await self._addresses(act)
        return done

    async def _networks(self, found, act, repair: bool) -> None:
        d = self.driver
        addresses = await links.dump_addresses(d.ipr)
        for net in list(d.networks.values()):
            subject = f"network {naming.short(net.network_id)}"
            fix = lambda net=net: d.repair_network(net)  # noqa: E731
            bridge = found.get(net.bridge)
            if bridge is None:
                await act(Finding("bridges recreated", subject, f"bridge {net.bridge} is missing",
                                  "its containers have no network at all",
                                  "recreate the bridge, its gateway addresses and settings"), fix)
                continue
            have = addresses.get(bridge["index"], set())
            lost = [str(g) for g in net.bridge_gateways if str(g) not in have]
            if lost or not bridge["up"]:
                problem = (f"bridge {net.bridge} is down" if not bridge["up"] else
                           f"bridge {net.bridge} lost its gateway address {', '.join(lost)}")
                await act(Finding("bridges repaired", subject, problem,
                                  "its containers cannot reach their gateway or leave the network",
                                  "bring the bridge up and put the gateway addresses back"), fix)
            else:
                await self._settings(net, subject, act, fix)

    async def _settings(self, net, subject: str, act, fix) -> None:
        d = self.driver
        wrong = await asyncio.to_thread(lambda: [k for k in d.wanted_sysctls(net) if d.sysctl.read(k) != "1"])
        if not wrong:
            return
        names = ", ".join(sysctl_name(k) for k in wrong)
        cannot = await asyncio.to_thread(d.sysctl.writable)
        await act(Finding("settings restored", subject, f"{names} not 1",
                          "its containers cannot reach outside, or ports published on 127.0.0.1 do not answer",
                          f"pynet cannot set them ({cannot}): on the host, run "
                          + " ".join(f"`sysctl -w {sysctl_name(k)}=1`" for k in wrong)
                          + ", or give pynet a writable mount of /proc/sys/net (PYNET_SYSCTL_ROOT; the"
                          " managed plugin has one)" if cannot else "set them to 1"),
                  None if cannot else fix)

    async def _endpoints(self, found, act, known: set[str]) -> None:
        d = self.driver
        sandboxes = {ep.sandbox for ep in d.endpoints.values() if ep.sandbox}
        alive = await asyncio.to_thread(lambda: {s: netns.is_alive(d.local_sandbox(s)) for s in sandboxes})
        now = time.time()
        visible = await self._sandboxes_visible(found, alive, act)
        for ep in [e for e in d.endpoints.values() if e.endpoint_id in known]:
            net = d.networks.get(ep.network_id)
            subject = f"endpoint {naming.short(ep.endpoint_id)} (network {naming.short(ep.network_id)})"
            link = found.get(ep.host_if)
            joined = d.joined_at.get(ep.endpoint_id, d.loaded_at)
            if link is not None and ep.peer_if in found and alive.get(ep.sandbox) is False and visible \
                    and now - joined >= max(self.min_age, JOIN_GRACE):
                # Docker destroyed the sandbox (libnetwork moves interfaces back to the host
                # then) but its Leave and DeleteEndpoint never reached pynet. A container
                # starting looks the same until Docker moves its end in: moments after Join.
                await act(Finding("stale endpoints reclaimed", subject,
                                  f"its container's namespace is gone and both ends of veth {ep.host_if}"
                                  " are back on the host",
                                  "its container stopped while pynet could not hear it (pynet down, or"
                                  " the plugin disabled): an address and a veth held for nothing",
                                  "forget the endpoint and free its addresses and ports"),
                          lambda ep=ep: d.reclaim_endpoint(ep, "its container stopped while pynet was away"))
                continue
            if link is not None:
                bridge = found.get(net.bridge) if net else None
                if net is not None and bridge is not None and (link["master"] != bridge["index"] or not link["up"]):
                    await act(Finding("endpoints repaired", subject,
                                      f"veth {ep.host_if} is not up on bridge {net.bridge}",
                                      "its container is cut off from the network",
                                      "attach the veth to the bridge and bring it up"),
                              lambda ep=ep: d.repair_endpoint(ep))
                continue
            if ep.sandbox and alive.get(ep.sandbox):
                await act(Finding("endpoints rebuilt", subject,
                                  f"veth {ep.host_if} is gone but the container still runs ({ep.sandbox})",
                                  "the container lost this network's interface",
                                  "create a new veth pair and move it into the container, with its"
                                  " MAC, addresses and routes"),
                          lambda ep=ep: d.rebuild_endpoint(ep))
                continue
            if not ep.sandbox and now - ep.created < self.min_age:
                continue  # being created right now
            if ep.sandbox and not visible:
                continue  # pynet cannot tell a stopped container from a running one: reported above
            why = "its container's network namespace is gone" if ep.sandbox else "its veth is gone"
            await act(Finding("stale endpoints reclaimed", subject, why,
                              "Docker tore it down while pynet could not hear it",
                              "forget the endpoint and free its addresses and ports"),
                      lambda ep=ep, why=why: d.reclaim_endpoint(ep, why, only_if_veth_gone=True))

    async def _sandboxes_visible(self, found, alive: dict[str, bool], act) -> bool:
        """Whether pynet sees containers' namespaces where it looks.

        An endpoint whose host veth is here but whose container end is not has had
        that end moved into its container: the container runs, so its namespace
        must be visible. If none is, pynet looks in the wrong place (a plugin
        without the exec-root mount, or one that misses new mounts)."""
        d = self.driver
        running = [e.sandbox for e in d.endpoints.values()
                   if e.sandbox in alive and e.host_if in found and e.peer_if not in found]
        if running and not any(alive[s] for s in running):
            where = d.local_sandbox(running[0])
            log.warning("reconcile: no namespace of %d running container(s) is visible (looked for %s):"
                        " endpoints whose veth is gone are kept until it is", len(running), where)
            await act(Finding("host problems", "host",
                              f"no namespace of the {len(running)} running container(s) is visible"
                              f" (looked for {where})",
                              "pynet cannot tell a stopped container from a running one: it neither"
                              " rebuilds a lost veth nor reclaims a stopped container's endpoint",
                              "mount Docker's netns directory where pynet looks (PYNET_NETNS_DIRS,"
                              " PYNET_NETNS_MOUNT), with mounts propagating to it (rslave)"), None)
            return False
        return True

    async def _orphan_links(self, found, act) -> None:
        d = self.driver
        known_bridges = {n.bridge for n in d.networks.values()}
        known_veths = {name for e in d.endpoints.values() for name in (e.host_if, e.peer_if)}
        in_flight = {naming.short(i) for i in d.in_flight}
        for name, info in found.items():
            alias = info["alias"] or ""
            if alias.startswith(naming.ALIAS_PREFIX + "network:"):
                owner = alias.split(":", 2)[2]
                orphan = owner not in d.networks and owner not in d.in_flight
            elif alias.startswith(naming.ALIAS_PREFIX + "endpoint:"):
                owner = alias.split(":", 2)[2]
                orphan = owner not in d.endpoints and owner not in d.in_flight
            elif not alias and _DERIVED.match(name) and info["kind"] in ("bridge", "veth"):
                orphan = (name not in known_bridges and name not in known_veths
                          and name[3:] not in in_flight)
            else:
                continue
            if orphan:
                kind = info["kind"] or "link"
                if self.spare_leftovers:
                    await act(self._unexplained(f"{kind} {name}"), None)
                    continue
                await act(Finding(f"orphan {kind}s deleted", f"{kind} {name}",
                                  "pynet made it, but no saved network or endpoint explains it",
                                  "a leftover of an interrupted call", "delete it"),
                          lambda name=name, alias=info["alias"]: links.delete_owned_link(d.ipr, name, alias))

    def _unexplained(self, subject: str) -> Finding:
        return Finding("leftovers kept", subject,
                       "pynet made it, but this state database is new or holds no network: it explains"
                       " nothing pynet made",
                       "the state may be elsewhere (another state directory, or another pynet's): deleting"
                       " it could cut running containers off",
                       "check PYNET_STATE_DIR (a plugin's state.source); if it really is a leftover,"
                       " delete it by hand (pynet deletes leftovers once its state holds a network and"
                       " it restarted on that state)")

    async def _orphan_rules(self, act) -> None:
        """Rules in pynet's chains tagged with a network pynet does not know."""
        d = self.driver
        for family in d.firewall.families:
            snap = await d.firewall.iptables.snapshot(family)
            # Known networks are read after the snapshot: a network created in
            # between has its ID in flight or saved by now, never neither.
            known = {naming.short(n) for n in (*d.networks, *d.in_flight)}
            stale: dict[str, list[Rule]] = {}
            for table, chains in CHAINS.items():
                for chain in chains:
                    for spec in snap.chain_rules(table, chain):
                        m = _TAG.search(spec)
                        if m and m.group(1) not in known:
                            stale.setdefault(m.group(1), []).append(
                                Rule(family, table, chain, tuple(spec.split(" "))))
            if stale and self.spare_leftovers:
                for tag in stale:
                    await act(self._unexplained(f"IPv{family} rules tagged pynet:{tag}"), None)
                continue
            for tag, rules in stale.items():
                async def remove(rules=rules) -> int:
                    await d.firewall.remove(rules)
                    return len(rules)
                await act(Finding("orphan rules removed", f"IPv{family} rules tagged pynet:{tag}",
                                  f"{len(rules)} rules of a network pynet does not know",
                                  "a leftover of an interrupted call or of a lost state",
                                  "delete them"), remove)

    async def _firewall(self, act, repair: bool, done: Counter) -> None:
        d = self.driver
        if repair:
            done["firewall rules restored"] += await d.firewall.check()
            return
        for family in d.firewall.families:
            snap = await d.firewall.iptables.snapshot(family)
            if plan_sync(snap, []):
                await act(Finding("firewall rules restored", f"pynet's IPv{family} chains",
                                  "chains or jumps are missing or misplaced",
                                  "no pynet network is isolated, forwarded or published correctly",
                                  "recreate the chains and jumps"), None)
            for net in d.networks.values():
                group = d.network_rules(net)
                if not _present(snap, group, family):
                    await act(Finding("firewall rules restored", f"network {naming.short(net.network_id)}",
                                      f"IPv{family} firewall rules are missing",
                                      "its isolation, forwarding or NAT is not what it should be",
                                      "put the network's rules back, in order"), None)
            for ep in d.endpoints.values():
                if ep.bindings and not _present(snap, d.binding_rules(ep), family):
                    await act(Finding("firewall rules restored", f"endpoint {naming.short(ep.endpoint_id)}",
                                      f"IPv{family} rules of published ports are missing",
                                      f"its published ports ({', '.join(map(str, ep.bindings))}) do not answer",
                                      "put the port rules back"), None)

    async def _addresses(self, act) -> None:
        if self.unheld_addresses is None or self.release_address is None:
            return
        d = self.driver
        holders = d.holders()
        for net in list(d.networks.values()):
            held = {addr for addr, (nid, _) in holders.items() if nid == net.network_id}
            for s in net.subnets:
                for addr in await self.unheld_addresses(s.pool, held, self.min_age):
                    await act(Finding("addresses reclaimed", f"network {naming.short(net.network_id)}",
                                      f"address {addr} is allocated but no endpoint holds it",
                                      "it can never be handed out again", "release it"),
                              lambda s=s, addr=addr: self.release_address(s.pool, addr))

    async def watch(self, interval: float) -> None:
        await every(interval, self.run, "reconcile")


def _present(snap, rules: list[Rule], family: int) -> bool:
    return all(snap.count(r.table, r.chain, r.text) for r in rules if r.family == family)
