"""The overlay mode's settings: the cluster (etcd, this host's name and
underlay address, and how long a host may be away). Without
--etcd-endpoints the mode is off and pynet needs no other service."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
from dataclasses import dataclass

from ..config import absolute_file, at_least_one_second, interval

NEEDS = "pynet's cluster settings (--etcd-endpoints and --vtep, or PYNET_ETCD_ENDPOINTS and PYNET_VTEP)"


@dataclass(frozen=True)
class ClusterSettings:
    etcd_endpoints: tuple[str, ...]
    etcd_ca: str = ""
    etcd_cert: str = ""
    etcd_key: str = ""
    etcd_prefix: str = "/pynet"
    cluster_host: str = ""
    vtep: str = ""
    host_lease: float = 10.0
    lost_host_grace: float = 7200.0
    reclaim_cooldown: float = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    cluster = parser.add_argument_group("cluster (the overlay mode: networks across hosts; without"
                                        " --etcd-endpoints pynet needs no other service)")
    cluster.add_argument("--etcd-endpoints", default=env("PYNET_ETCD_ENDPOINTS", ""), type=_endpoints,
                         help="comma-separated IP:port of the etcd cluster (PYNET_ETCD_ENDPOINTS)")
    for name, what in (("ca", "CA certificate"), ("cert", "client certificate"), ("key", "client key")):
        cluster.add_argument(f"--etcd-{name}", default=env(f"PYNET_ETCD_{name.upper()}", ""),
                             type=absolute_file, help=f"PEM file of the {what} for etcd over TLS"
                                                      f" (PYNET_ETCD_{name.upper()})")
    cluster.add_argument("--etcd-prefix", default=env("PYNET_ETCD_PREFIX", "/pynet"), type=_prefix,
                         help="key prefix of pynet's cluster state (PYNET_ETCD_PREFIX; default %(default)s)")
    cluster.add_argument("--cluster-host", default=env("PYNET_CLUSTER_HOST", ""), type=_host_name,
                         help="this host's name in the cluster, unique (PYNET_CLUSTER_HOST; default: the"
                              " host name)")
    cluster.add_argument("--host-lease", default=env("PYNET_HOST_LEASE", "10"), type=at_least_one_second,
                         help="seconds without a keepalive after which this host counts as away"
                              " (PYNET_HOST_LEASE; default %(default)s)")
    cluster.add_argument("--lost-host-grace", default=env("PYNET_LOST_HOST_GRACE", "7200"), type=interval,
                         help="seconds a host may stay away before another reclaims its addresses"
                              " (PYNET_LOST_HOST_GRACE; default %(default)s)")
    cluster.add_argument("--reclaim-cooldown", default=env("PYNET_RECLAIM_COOLDOWN", "600"), type=interval,
                         help="seconds a reclaimed address waits before it is handed out again"
                              " (PYNET_RECLAIM_COOLDOWN; default %(default)s)")
    cluster.add_argument("--vtep", default=env("PYNET_VTEP", ""), type=_vtep,
                         help="this host's underlay address for VXLAN, or the interface that has it"
                              " (PYNET_VTEP; needed with --etcd-endpoints)")


def from_args(args: argparse.Namespace) -> ClusterSettings | None:
    if not args.etcd_endpoints:
        return None
    if not args.vtep:
        raise ValueError("--etcd-endpoints needs --vtep (this host's underlay address or interface)")
    return ClusterSettings(args.etcd_endpoints, args.etcd_ca, args.etcd_cert, args.etcd_key, args.etcd_prefix,
                           args.cluster_host or socket.gethostname(), args.vtep, float(args.host_lease),
                           float(args.lost_host_grace), float(args.reclaim_cooldown))


def _endpoints(text: str) -> tuple[str, ...]:
    if not text.strip():
        return ()
    from .etcd import check_endpoint  # the etcd client's import is heavy: only when there are endpoints
    try:
        return tuple(check_endpoint(e.strip()) for e in text.split(",") if e.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _prefix(text: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a key prefix like /pynet")
    return text


def _host_name(text: str) -> str:
    if text and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name (letters, digits, '.', '_', '-')")
    return text


def _vtep(text: str) -> str:
    if not text:
        return ""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,15}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is neither an IP address nor an interface name")
    return text
