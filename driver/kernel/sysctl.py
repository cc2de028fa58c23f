"""Kernel settings under /proc/sys, set only when they differ.

Keys are paths under /proc/sys (net/ipv4/conf/<bridge>/route_localnet), not
dotted names: a bridge name may itself hold dots. Inside a managed plugin
/proc/sys is read-only: plugin.json mounts the host's /proc/sys/net
elsewhere (the settings of a network namespace are those of whoever reads
them, so any mount of it works) and `root` points there. Where nothing is
writable, a setting that is already right is fine, and one that is not is
reported, never ignored.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Sequence

PROC_SYS = "/proc/sys"


def sysctl_name(key: str) -> str:
    """The name sysctl(8) takes: dotted, or the slash form where a part (a bridge name) has a dot."""
    return key if "." in key else key.replace("/", ".")


def _path(root: str, key: str) -> str:
    return os.path.join(root, *key.split("/"))


def _write(root: str, key: str, value: str) -> str | None:
    path = _path(root, key)
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return None
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        return f"cannot set {sysctl_name(key)} to {value}: {exc.strerror}"
    return None


class Sysctl:
    """Sets /proc/sys of pynet's own network namespace, or (with `prefix`,
    e.g. ip netns exec NS) of another one through the sysctl tool."""

    def __init__(self, prefix: Sequence[str] = (), root: str = PROC_SYS) -> None:
        self.prefix = list(prefix)
        self.root = root

    def read(self, key: str) -> str | None:
        """The current value (blocking: run it in a thread), or None if unreadable."""
        if self.prefix:
            proc = subprocess.run([*self.prefix, "sysctl", "-n", key], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True)
            return proc.stdout.strip() if proc.returncode == 0 else None
        try:
            with open(_path(self.root, key)) as f:
                return f.read().strip()
        except OSError:
            return None

    def writable(self) -> str | None:
        """Why pynet cannot change net.* settings here, or None if it can."""
        if self.prefix:
            return None
        path = _path(self.root, "net/ipv4/ip_forward")
        if not os.path.exists(path):
            return f"{path} does not exist"
        if not os.access(path, os.W_OK):
            return f"{self.root} is read-only here"
        return None

    async def ensure(self, key: str, value: str) -> str | None:
        """Set `key` to `value`; the problem as text, or None."""
        if not self.prefix:
            return await asyncio.to_thread(_write, self.root, key, value)
        proc = await asyncio.create_subprocess_exec(
            *self.prefix, "sysctl", "-q", "-w", f"{sysctl_name(key)}={value}", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        return f"cannot set {sysctl_name(key)} to {value}: {err.decode().strip()}" if proc.returncode else None
