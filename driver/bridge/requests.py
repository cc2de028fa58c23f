"""Docker's bridge-mode requests read into records: every field checked
before anything reaches the kernel, and errors that name the object."""

from __future__ import annotations

import os
import re

from ipam.addr import parse_address, parse_interface, parse_network

from .. import naming
from ..errors import InvalidRequest
from ..wire import CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, IPAMData, InterfaceReply
from . import store
from .options import parse_network_options

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_SANDBOX = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # Docker's are 12 hex digits


def network_from_request(req: CreateNetworkRequest, ipv6_works: bool) -> store.Network:
    """The network Docker asks for, every field checked; InvalidRequest says what is wrong."""
    nid = naming.short(req.NetworkID)
    opts = parse_network_options(req.Options or {})
    ipv4 = [subnet(nid, d, 4) for d in req.IPv4Data or []]
    ipv6 = [subnet(nid, d, 6) for d in req.IPv6Data or []] if opts.ipv6 else []
    if opts.ipv6 and not ipv6:
        raise InvalidRequest(f"network {nid}: --ipv6 was asked for but Docker sent no IPv6 pool")
    if ipv6 and not ipv6_works:
        raise InvalidRequest(f"network {nid}: IPv6 needs ip6tables, which does not work on this host")
    bridge = opts.bridge_name or naming.bridge_name(req.NetworkID)
    return store.Network(req.NetworkID, bridge, opts, ipv4, ipv6)


def endpoint_from_request(net: store.Network, req: CreateEndpointRequest) -> store.Endpoint:
    """The endpoint Docker asks for on `net`, every field checked."""
    eid = naming.short(req.EndpointID)
    iface = req.Interface
    address = address6 = None
    try:
        if iface and iface.Address:
            address = parse_interface(iface.Address, "Interface.Address")
        if iface and iface.AddressIPv6:
            address6 = parse_interface(iface.AddressIPv6, "Interface.AddressIPv6")
    except ValueError as exc:
        raise InvalidRequest(f"endpoint {eid}: {exc}") from None
    for addr, subnets in ((address, net.ipv4), (address6, net.ipv6)):
        if addr is not None and not any(addr.ip in s.pool for s in subnets):
            pools = ", ".join(str(s.pool) for s in subnets) or "none"
            raise InvalidRequest(f"endpoint {eid}: address {addr} is outside the subnets of"
                                 f" network {naming.short(net.network_id)} ({pools})")
    mac = iface.MacAddress if iface else ""
    if mac and not _MAC.fullmatch(mac):
        raise InvalidRequest(f"endpoint {eid}: MacAddress {mac!r} is not a MAC address")
    host, peer = naming.veth_names(req.EndpointID)
    return store.Endpoint(req.EndpointID, req.NetworkID, host, peer,
                          mac.lower() or naming.endpoint_mac(req.EndpointID), not mac,
                          address, address6)


def checked_sandbox(eid: str, key: str, netns_dirs: tuple[str, ...]) -> str:
    """A SandboxKey, only inside Docker's netns directories (pynet opens it later)."""
    path = os.path.normpath(key)
    if not key.startswith("/") or path != key.rstrip("/") or \
            os.path.dirname(path) not in netns_dirs or not _SANDBOX.fullmatch(os.path.basename(path)):
        raise InvalidRequest(f"endpoint {eid}: SandboxKey {key!r} is not inside Docker's netns"
                             f" directory ({', '.join(netns_dirs)}; set PYNET_NETNS_DIRS"
                             " for a daemon with another --exec-root)")
    return path


def subnet(nid: str, data: IPAMData, version: int) -> store.Subnet:
    try:
        pool = parse_network(data.Pool, f"IPv{version}Data.Pool")
        gateway = parse_interface(data.Gateway, f"IPv{version}Data.Gateway") if data.Gateway else None
        aux = {name: parse_address(value, f"aux address {name!r}")
               for name, value in (data.AuxAddresses or {}).items()}
    except ValueError as exc:
        raise InvalidRequest(f"network {nid}: {exc}") from None
    if pool.version != version:
        raise InvalidRequest(f"network {nid}: IPv{version}Data.Pool {pool} is not IPv{version}")
    if gateway is not None and gateway.ip not in pool:
        raise InvalidRequest(f"network {nid}: gateway {gateway.ip} is outside subnet {pool}")
    for name, addr in aux.items():
        if addr not in pool:
            raise InvalidRequest(f"network {nid}: aux address {name}={addr} is outside subnet {pool}")
    return store.Subnet(pool, gateway, aux)


def endpoint_reply(ep: store.Endpoint) -> CreateEndpointResponse:
    # Docker refuses a reply that sets a field it had set itself: only report
    # the MAC when pynet chose it.
    return CreateEndpointResponse(Interface=InterfaceReply(MacAddress=ep.mac) if ep.mac_reported else None)
