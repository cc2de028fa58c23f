"""Container network namespaces, as Docker leaves them under its exec root."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from typing import AsyncIterator

from pyroute2 import AsyncIPRoute

# Where Docker mounts them: its default exec root (/var/run is /run on Debian).
DEFAULT_NETNS_DIRS = ("/var/run/docker/netns", "/run/docker/netns")


def is_alive(path: str) -> bool:
    """Whether a SandboxKey still names a network namespace.

    Docker bind-mounts each sandbox's namespace on an empty file; when the
    sandbox is destroyed the mount goes (and usually the file). A file that
    is no mount point is a dead sandbox.
    """
    try:
        return os.path.ismount(path)
    except OSError:
        return False


CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0


def _netlink_socket_in(path: str) -> int:
    """A netlink (route) socket made inside the namespace mounted at `path`.

    Made on a thread of its own that enters the namespace (setns moves only the
    calling thread) and leaves it before it ends: no fork. pyroute2's own
    `netns=` forks a child, which dies in a process that runs gRPC's threads
    (the etcd client), so pynet never uses it."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: dict[str, object] = {}

    def make() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(target, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"cannot enter the namespace {path}")
                try:
                    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
                    result["fd"] = sock.detach()
                finally:
                    libc.setns(own, CLONE_NEWNET)  # and if it cannot, the thread ends here anyway
            finally:
                os.close(target)
        except OSError as exc:
            result["error"] = exc
        finally:
            os.close(own)

    thread = threading.Thread(target=make, name="pynet-netns")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return int(result["fd"])  # type: ignore[call-overload]


@contextlib.asynccontextmanager
async def route_handle(path: str) -> AsyncIterator[AsyncIPRoute]:
    """pyroute2's handle on the namespace mounted at `path` (a container's)."""
    fd = await asyncio.to_thread(_netlink_socket_in, path)
    handle = AsyncIPRoute(fileno=fd, flags=0)
    try:
        yield handle
    finally:
        handle.close()
