"""The plugin's listening socket, and a stop that leaves no call of Docker's
unanswered.

Why this matters (moby#39331, moby#35459): Docker's plugin client retries a
call after a transport error with the body reader it already consumed, so
the retry arrives with an empty body and fails. A retry after a failed
*dial* is harmless: nothing was read yet. Hence the rule here: a connection
pynet accepts always gets an answer, and a connection pynet will not answer
is never accepted.

- On stop, pynet removes the socket's path first (new dials fail, and Docker
  retries them with their body), accepts what the kernel had already queued,
  answers every accepted connection, lets running handlers finish, and only
  then exits.
- Under systemd socket activation (`pynet.socket`) the listening socket
  belongs to systemd and outlives pynet: on stop pynet just stops accepting,
  and what arrives meanwhile waits in the socket's backlog for the next
  pynet, which answers it first thing.
- Every answer says `Connection: close` (see server.py), so no idle
  keep-alive connection is ever closed under a request Docker just wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
from typing import MutableMapping, Optional

from aiohttp import web

log = logging.getLogger("pynet")

DRAIN_TIMEOUT = 30.0  # seconds a stop waits for calls in flight; systemd's own stop timeout is 90
SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): the first socket systemd passes


class PluginSocket:
    """Where Docker's calls arrive: a socket pynet made, or one systemd passed."""

    def __init__(self, sock: socket.socket, path: str, inherited: bool) -> None:
        self.sock = sock
        self.path = path
        self.inherited = inherited
        self.site: Optional[web.SockSite] = None
        self.server: Optional[web.Server] = None
        self._report: Optional[asyncio.Task] = None  # referenced: the loop keeps only weak ones

    @classmethod
    def open(cls, path: str) -> "PluginSocket":
        """systemd's socket if pynet was socket-activated, else a new one at `path`."""
        inherited = systemd_socket()
        if inherited is not None:
            name = inherited.getsockname() or "(unnamed)"
            if name != path:
                log.warning("pynet: systemd passed the socket %s, not %s: Docker and `pynet` must use %s",
                            name, path, name)
            return cls(inherited, name, inherited=True)
        return cls(bind(path), path, inherited=False)

    async def start(self, runner: web.AppRunner) -> None:
        """Answer what waited in the backlog (a restart under socket activation), then serve."""
        assert runner.server is not None, "runner.setup() first"
        self.server = runner.server
        waiting = await self._answer_queued() if self.inherited else []
        if waiting:
            log.info("pynet: %d connection(s) were waiting on %s while pynet was down; answering them",
                     len(waiting), self.path)
            self._report = asyncio.create_task(self._report_waiting(waiting))
        # SockSite listens again: with asyncio's default backlog (100) it would
        # shrink systemd's (Backlog=4096) and pynet's own, and a burst would fail.
        self.site = web.SockSite(runner, self.sock, backlog=socket.SOMAXCONN)
        await self.site.start()

    async def _answer_queued(self) -> list[asyncio.BaseTransport]:
        """Accept what waits in the socket's queue and hand it to the server."""
        assert self.server is not None
        loop = asyncio.get_running_loop()
        return [(await loop.connect_accepted_socket(self.server, conn))[0] for conn in accept_waiting(self.sock)]

    async def _report_waiting(self, waiting: list[asyncio.BaseTransport]) -> None:
        if await until(lambda: all(t.is_closing() for t in waiting), DRAIN_TIMEOUT):
            log.info("pynet: answered the %d connection(s) that waited while pynet was down", len(waiting))
        else:
            still = sum(not t.is_closing() for t in waiting)
            log.warning("pynet: %d of the %d connection(s) that waited while pynet was down are still"
                        " open after %.0f s", still, len(waiting), DRAIN_TIMEOUT)

    async def stop(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop taking calls without losing one; see the module's docstring."""
        server = self.server
        assert server is not None, "start() first"
        if not self.inherited:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # from here a dial fails, and Docker retries it whole
            await asyncio.sleep(0.05)  # a dial that found the path just before lands in the queue
        # asyncio makes an accepted connection's transport in a task one loop
        # iteration after the accept, and drops it silently if the server was
        # closed meanwhile. So: stop accepting, let those tasks run, then close.
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        if not self.inherited:
            # What is still queued on pynet's own socket is Docker's too: nobody
            # else will answer it, and closing the socket would reset it.
            await self._answer_queued()
        for _ in range(5):
            await asyncio.sleep(0)
        if self.site is not None:
            await self.site.stop()  # closes pynet's copy; systemd's stays open and queues
        started = time.monotonic()
        if not await until(lambda: not server.connections, timeout, settle=3):
            log.warning("pynet: %d call(s) still unanswered %.0f s after the stop began; closing them",
                        len(server.connections), time.monotonic() - started)


def systemd_socket(environ: MutableMapping[str, str] = os.environ,
                   pid: Optional[int] = None) -> Optional[socket.socket]:
    """The listening socket systemd passed to this process (sd_listen_fds(3)), or None.

    The variables are removed so that no child of pynet takes them as its own.
    """
    if "LISTEN_FDS" not in environ:
        return None
    listen_pid, count = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(var, None)
    if listen_pid != str(pid or os.getpid()):
        return None  # meant for another process (a parent that exec'd without clearing them)
    if count != "1":
        raise SystemExit(f"pynet: systemd passed {count or 'no'} sockets (LISTEN_FDS); pynet.socket must have"
                         " exactly one ListenStream, the plugin socket")
    fd = SD_LISTEN_FDS_START
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SystemExit(f"pynet: LISTEN_FDS=1 but file descriptor {fd} is not a socket: {exc}") from None
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        raise SystemExit(f"pynet: the socket systemd passed is not a listening Unix stream socket"
                         f" ({sock.family!r}, {sock.type!r}); pynet.socket needs ListenStream=/a/path")
    os.set_inheritable(fd, False)
    sock.setblocking(False)
    return sock


def bind(path: str) -> socket.socket:
    """A new listening socket at `path`, root's only (0600) from the moment it exists."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise SystemExit(f"pynet: {path} exists and is not a socket")
        if socket_in_use(path):
            raise SystemExit(f"pynet: another process is serving on {path}")
        os.unlink(path)  # left by a pynet that was killed
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


def socket_in_use(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def accept_waiting(sock: socket.socket) -> list[socket.socket]:
    """Every connection queued on a non-blocking listening socket."""
    waiting: list[socket.socket] = []
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return waiting
        conn.setblocking(False)
        waiting.append(conn)


async def until(check, timeout: float, settle: int = 1, interval: float = 0.01) -> bool:
    """Wait until `check()` holds `settle` times in a row; False on timeout."""
    deadline = time.monotonic() + timeout
    held = 0
    while True:
        held = held + 1 if check() else 0
        if held >= settle:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
