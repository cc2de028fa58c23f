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
        opened: list[int] = []
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            opened.append(own)
            target = os.open(path, os.O_RDONLY)
            opened.append(target)
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"cannot enter the namespace {path}")
            try:
                result["fd"] = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE).detach()
            finally:
                libc.setns(own, CLONE_NEWNET)  # and if it cannot, the thread ends here anyway
        except OSError as exc:
            result["error"] = exc
        finally:
            for fd in opened:
                os.close(fd)

    thread = threading.Thread(target=make, name="pynet-netns")
    thread.start()
    thread.join()
    if "fd" not in result:
        raise result.get("error") or OSError(f"cannot open a netlink socket in {path}")  # type: ignore[misc]
    return int(result["fd"])  # type: ignore[call-overload]


@contextlib.asynccontextmanager
async def route_handle(path: str) -> AsyncIterator[AsyncIPRoute]:
    """pyroute2's handle on the namespace mounted at `path` (a container's).

    For its own requests and `links.dump` only: the link reader (links.get_link,
    link_index) opens its own socket in pynet's namespace, never this one's."""
    made = asyncio.get_running_loop().run_in_executor(None, _netlink_socket_in, path)
    try:
        fd = await asyncio.shield(made)
    except asyncio.CancelledError:
        # The thread finishes anyway: close what it made.
        made.add_done_callback(lambda f: None if f.exception() else os.close(f.result()))
        raise
    sock = socket.socket(fileno=fd)  # owned here: closed once, whatever pyroute2 did with it
    try:
        handle = AsyncIPRoute(use_socket=sock, flags=0)
        try:
            yield handle
        finally:
            handle.close()
    finally:
        sock.close()
