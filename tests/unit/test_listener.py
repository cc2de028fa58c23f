"""The plugin socket: every accepted call is answered, across a stop and a
restart, with pynet's own socket and with one systemd passes."""

import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from driver.listener import PluginSocket, bind, systemd_socket
from driver.server import one_call_per_connection

WRAPPER = Path(__file__).resolve().parents[1] / "support" / "listen_fds.py"
REQUEST = b"POST /%s HTTP/1.1\r\nHost: pynet\r\nContent-Length: 2\r\n\r\n{}"


class App:
    """A plugin stand-in: /fast answers at once, /slow when `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.app = web.Application(middlewares=[one_call_per_connection])
        self.app.router.add_post("/fast", self.fast)
        self.app.router.add_post("/slow", self.slow)

    async def fast(self, _request):
        return web.json_response({})

    async def slow(self, _request):
        await self.release.wait()
        return web.json_response({"slow": True})

    async def serve(self, listener: PluginSocket) -> web.AppRunner:
        runner = web.AppRunner(self.app, handle_signals=False)
        await runner.setup()
        await listener.start(runner)
        return runner


async def call(path: str, method: str = "fast", send_after: asyncio.Event | None = None) -> bytes:
    """One call on its own connection; the whole answer, read to the server's close."""
    reader, writer = await asyncio.open_unix_connection(path)
    if send_after is not None:
        await send_after.wait()
    writer.write(REQUEST % method.encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=5)  # to EOF: the server closes
    writer.close()
    return answer


async def test_every_answer_closes_its_connection(tmp_path):
    path = str(tmp_path / "p.sock")
    app = App()
    runner = await app.serve(PluginSocket(bind(path), path, inherited=False))
    try:
        answer = await call(path)
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"Connection: close" in answer
    finally:
        await runner.cleanup()


async def test_a_stop_answers_every_accepted_call_and_refuses_new_dials(tmp_path):
    path = str(tmp_path / "p.sock")
    app = App()
    listener = PluginSocket(bind(path), path, inherited=False)
    runner = await app.serve(listener)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    late = asyncio.Event()
    in_flight = asyncio.create_task(call(path, "slow"))
    silent = asyncio.create_task(call(path, "fast", send_after=late))  # connected, request not yet written
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(listener.stop(timeout=10))
    await asyncio.sleep(0.2)
    assert not os.path.exists(path)  # a new dial fails, and Docker retries it with its body
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        await asyncio.open_unix_connection(path)
    assert not stopping.done()  # two calls are still owed an answer
    late.set()
    assert (await silent).startswith(b"HTTP/1.1 200")
    app.release.set()
    assert b'"slow": true' in await in_flight
    await asyncio.wait_for(stopping, timeout=5)
    assert runner.server.connections == []
    await runner.cleanup()


async def test_a_connection_accepted_just_before_the_stop_is_answered_before_it_returns(tmp_path):
    """asyncio accepts a connection in one loop iteration and makes its protocol
    in the next: a stop that looked only at the server's connections in
    between would miss it, and pynet would exit under Docker's request."""
    path = str(tmp_path / "p.sock")
    held = bind(path)
    listener = PluginSocket(held.dup(), path, inherited=True)
    runner = await App().serve(listener)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.sendall(REQUEST % b"fast")
    await asyncio.sleep(0)  # the loop sees the socket readable; accepts after this task's step
    await asyncio.sleep(0)  # accepted, its protocol not made yet
    await listener.stop(timeout=5)
    client.setblocking(False)
    assert client.recv(4096).startswith(b"HTTP/1.1 200")  # answered before the stop returned
    client.close()
    await runner.cleanup()
    held.close()


async def test_a_burst_of_dials_while_the_loop_is_busy_is_queued_not_refused(tmp_path):
    """The socket keeps a deep backlog once served (asyncio's default would be 100)."""
    path = str(tmp_path / "p.sock")
    listener = PluginSocket(bind(path), path, inherited=False)
    runner = await App().serve(listener)
    clients = []
    for _ in range(300):  # no await: the loop accepts none of them meanwhile
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        client.connect(path)  # BlockingIOError if the backlog were full
        client.sendall(REQUEST % b"fast")
        clients.append(client)
    await listener.stop(timeout=10)  # also drains what is still queued
    for client in clients:
        client.setblocking(True)
        client.settimeout(5)
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        client.close()
    await runner.cleanup()


async def test_a_stop_that_times_out_says_so(tmp_path, caplog):
    path = str(tmp_path / "p.sock")
    app = App()
    listener = PluginSocket(bind(path), path, inherited=False)
    runner = await app.serve(listener)
    stuck = asyncio.create_task(call(path, "slow"))
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="pynet"):
        await listener.stop(timeout=0.3)
    assert "1 call(s) still unanswered" in caplog.text
    app.release.set()
    await runner.cleanup()
    stuck.cancel()


async def test_calls_wait_in_systemds_socket_for_the_next_pynet(tmp_path, caplog):
    """Socket activation: the socket outlives pynet, and calls made while no
    pynet runs wait in its backlog and are answered by the next one."""
    path = str(tmp_path / "p.sock")
    held = bind(path)  # systemd's reference
    app = App()
    first = PluginSocket(held.dup(), path, inherited=True)
    runner = await app.serve(first)
    assert (await call(path)).startswith(b"HTTP/1.1 200")
    await first.stop(timeout=5)
    await runner.cleanup()
    assert os.path.exists(path)  # systemd's path stays

    waiting = [asyncio.create_task(call(path)) for _ in range(3)]  # nobody accepts: they queue
    await asyncio.sleep(0.2)
    assert not any(t.done() for t in waiting)
    second = PluginSocket(held.dup(), path, inherited=True)
    with caplog.at_level(logging.INFO, logger="pynet"):
        runner = await App().serve(second)
        answers = await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
        await asyncio.sleep(0.1)
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert "3 connection(s) were waiting" in caplog.text
    assert "answered the 3 connection(s)" in caplog.text
    await second.stop(timeout=5)
    await runner.cleanup()
    held.close()


def test_systemd_socket_is_taken_only_when_meant_for_this_process():
    assert systemd_socket({}) is None
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "x"}
    assert systemd_socket(env, pid=2) is None
    assert env == {}  # cleared either way: no child takes them for its own
    with pytest.raises(SystemExit, match="exactly one ListenStream"):
        systemd_socket({"LISTEN_FDS": "2", "LISTEN_PID": "7"}, pid=7)


def test_systemd_socket_as_systemd_passes_it(tmp_path):
    path = str(tmp_path / "p.sock")
    held = bind(path)
    probe = ("import os; from driver.listener import systemd_socket; s = systemd_socket();"
             " print(s.getsockname(), 'LISTEN_FDS' in os.environ, os.get_inheritable(3))")
    out = subprocess.run([sys.executable, str(WRAPPER), str(held.fileno()), sys.executable, "-c", probe],
                         pass_fds=(held.fileno(),), capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == [path, "False", "False"]
    held.close()


def test_a_passed_file_that_is_not_a_listening_socket_is_refused(tmp_path):
    a, b = socket.socketpair()
    out = subprocess.run([sys.executable, str(WRAPPER), str(a.fileno()), sys.executable, "-c",
                          "from driver.listener import systemd_socket; systemd_socket()"],
                         pass_fds=(a.fileno(),), capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode != 0
    assert "not a listening Unix stream socket" in out.stderr
    a.close()
    b.close()
