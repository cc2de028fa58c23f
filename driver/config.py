"""pynet's settings: command-line flags, each defaulting to a PYNET_* variable.

Environment variables are how a managed plugin is tuned (`docker plugin set`).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ipam.pools import DEFAULT_POOLS_TEXT

from . import registry
from .kernel.netns import DEFAULT_NETNS_DIRS

DEFAULT_SOCKET = "/run/docker/plugins/pynet.sock"
DEFAULT_STATE_DIR = "/var/lib/pynet"
# --iptables value -> the IPv4 and IPv6 tools (each with its -save/-restore).
IPTABLES = {"iptables": ("iptables", "ip6tables"), "nft": ("iptables-nft", "ip6tables-nft"),
            "legacy": ("iptables-legacy", "ip6tables-legacy")}


@dataclass(frozen=True)
class Config:
    socket: str = DEFAULT_SOCKET
    state_dir: str = DEFAULT_STATE_DIR
    default_pools: str = DEFAULT_POOLS_TEXT
    netns_dirs: tuple[str, ...] = DEFAULT_NETNS_DIRS
    log_level: str = "INFO"
    log_format: str = "text"
    firewall_interval: float = 2.0
    reconcile_interval: float = 30.0
    stale_after: float = 60.0
    netns_mount: str = ""
    sysctl_root: str = "/proc/sys"
    iptables: str = "iptables"
    # The settings of each registered mode that has some, by mode name; a mode with
    # settings is off where they are missing or None.
    modes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return os.path.join(self.state_dir, "pynet.db")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--socket", default=env("PYNET_SOCKET", DEFAULT_SOCKET),
                        help="Unix socket to serve Docker on (PYNET_SOCKET; default %(default)s)")
    parser.add_argument("--state-dir", default=env("PYNET_STATE_DIR", DEFAULT_STATE_DIR),
                        help="directory of the state database (PYNET_STATE_DIR; default %(default)s)")
    parser.add_argument("--default-pools", default=env("PYNET_DEFAULT_POOLS", DEFAULT_POOLS_TEXT),
                        help="comma-separated BASE/SIZE ranges for networks created without --subnet"
                             " (PYNET_DEFAULT_POOLS; default %(default)s)")
    parser.add_argument("--netns-dirs", default=env("PYNET_NETNS_DIRS", ",".join(DEFAULT_NETNS_DIRS)),
                        help="comma-separated directories where Docker keeps container network"
                             " namespaces (PYNET_NETNS_DIRS; default %(default)s)")
    parser.add_argument("--netns-mount", default=env("PYNET_NETNS_MOUNT", ""), type=_optional_directory,
                        help="where pynet itself sees that directory, when not at the path Docker"
                             " gives (a managed plugin: /run/pynet/exec-root/netns; PYNET_NETNS_MOUNT;"
                             " default: the path Docker gives)")
    parser.add_argument("--sysctl-root", default=env("PYNET_SYSCTL_ROOT", "/proc/sys"), type=_directory,
                        help="where pynet writes net.* kernel settings (a managed plugin's /proc/sys is"
                             " read-only: it mounts the host's /proc/sys/net under /host/proc/sys;"
                             " PYNET_SYSCTL_ROOT; default %(default)s)")
    parser.add_argument("--iptables", default=env("PYNET_IPTABLES", "iptables"), choices=sorted(IPTABLES),
                        help="which iptables tools to use: the host's choice must match Docker's"
                             " (nft or legacy; PYNET_IPTABLES; default %(default)s, whatever"
                             " `iptables` is where pynet runs)")
    parser.add_argument("--log-level", default=env("PYNET_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                        help="(PYNET_LOG_LEVEL; default %(default)s)")
    parser.add_argument("--firewall-interval", type=interval,
                        default=env("PYNET_FIREWALL_INTERVAL", "2"),
                        help="pynet puts back its firewall rules when the kernel reports a change"
                             " to the ruleset (iptables-nft); where it cannot (iptables-legacy), it"
                             " checks every this many seconds (PYNET_FIREWALL_INTERVAL; 0 turns both"
                             " off; default %(default)s)")
    parser.add_argument("--reconcile-interval", type=interval,
                        default=env("PYNET_RECONCILE_INTERVAL", "30"),
                        help="seconds between reconciliations of state, kernel and firewall (also run"
                             " at start; PYNET_RECONCILE_INTERVAL; 0 turns the periodic one off;"
                             " default %(default)s)")
    parser.add_argument("--stale-after", type=interval, default=env("PYNET_STALE_AFTER", "60"),
                        help="age in seconds past which reconciliation may reclaim an address or an"
                             " unjoined endpoint that nothing explains: younger ones may belong to a"
                             " container Docker is starting (PYNET_STALE_AFTER; default %(default)s)")
    parser.add_argument("--log-format", default=env("PYNET_LOG_FORMAT", "text"), choices=["text", "json"],
                        help="(PYNET_LOG_FORMAT; default %(default)s)")
    for spec in registry.specs():
        if spec.settings is not None:
            spec.settings.add_arguments(parser)


def absolute_file(text: str) -> str:
    if text and not os.path.isabs(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an absolute path")
    return text


def at_least_one_second(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more seconds")
    return value


def interval(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:  # nan would make every age look old enough
        raise argparse.ArgumentTypeError("must be 0 (off) or more seconds")
    return value


def _directory(text: str) -> str:
    if not text.startswith("/") or os.path.normpath(text) != text.rstrip("/"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an absolute, normalised path")
    return os.path.normpath(text)


def _optional_directory(text: str) -> str:
    return _directory(text) if text else ""


def config_from_args(args: argparse.Namespace) -> Config:
    """pynet's settings from its parsed flags; a ValueError says which are wrong together."""
    return Config(socket=args.socket, state_dir=args.state_dir, default_pools=args.default_pools,
                  netns_dirs=tuple(d for d in args.netns_dirs.split(",") if d),
                  log_level=args.log_level, log_format=args.log_format,
                  firewall_interval=float(args.firewall_interval),
                  reconcile_interval=float(args.reconcile_interval),
                  stale_after=float(args.stale_after), netns_mount=args.netns_mount,
                  sysctl_root=args.sysctl_root, iptables=args.iptables,
                  modes={spec.name: spec.settings.from_args(args) for spec in registry.specs()
                         if spec.settings is not None})
