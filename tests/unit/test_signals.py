"""A forked child's SIGTERM (pyroute2 forks to open sockets in other
namespaces) must never stop pynet; pynet's own SIGTERM must."""

import asyncio
import os
import signal

from driver.app import install_stop_handlers


async def test_a_forked_childs_sigterm_does_not_stop_pynet():
    stop = asyncio.Event()
    install_stop_handlers(asyncio.get_running_loop(), stop)
    try:
        pid = os.fork()
        if pid == 0:  # the child waits for its SIGTERM, as pyroute2's children do
            signal.pause()
            os._exit(1)
        await asyncio.sleep(0.1)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # it exited through the handler
        await asyncio.sleep(0.2)
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), timeout=2)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
