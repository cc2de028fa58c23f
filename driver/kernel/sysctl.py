"""Kernel settings under /proc/sys, set only when they differ.

Keys are paths under /proc/sys (net/ipv4/conf/<bridge>/route_localnet), not
dotted names: a bridge name may itself hold dots. Inside a managed plugin
/proc/sys is read-only: then a setting that is already right is fine, and
one that is not is reported, never ignored.
"""

from __future__ import annotations

import asyncio
import os
from typing import Sequence

PROC_SYS = "/proc/sys"


def _write(key: str, value: str) -> str | None:
    path = os.path.join(PROC_SYS, *key.split("/"))
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return None
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        return f"cannot set {key.replace('/', '.')} to {value}: {exc.strerror}"
    return None


class Sysctl:
    """Sets /proc/sys of pynet's own network namespace, or (with `prefix`,
    e.g. ip netns exec NS) of another one through the sysctl tool."""

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.prefix = list(prefix)

    async def ensure(self, key: str, value: str) -> str | None:
        """Set `key` to `value`; the problem as text, or None."""
        if not self.prefix:
            return await asyncio.to_thread(_write, key, value)
        proc = await asyncio.create_subprocess_exec(
            *self.prefix, "sysctl", "-q", "-w", f"{key}={value}", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        return f"cannot set {key} to {value}: {err.decode().strip()}" if proc.returncode else None
