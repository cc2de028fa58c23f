"""pyroute2's handle on a thread of its own, so the kernel never holds the loop.

The kernel runs a netlink request inside the sendmsg() that carries it, and
every link change waits for the RTNL lock. While Docker starts containers it
holds that lock for long stretches (namespaces made and destroyed, links
moved): in a burst of 50 starts one send of pynet's blocked for 150 ms, and
with it every other call pynet was answering. Here AsyncIPRoute and the link
reader run on an event loop in a dedicated thread; pynet's loop awaits their
results, and the GIL is free while the thread waits in the kernel.

KernelThread offers what driver/kernel/ uses of AsyncIPRoute (link, addr,
route, brport, neigh, fdb, with dumps read to their end in the thread) and a
`link_reader` for link_reader.reader().
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Callable, Coroutine, Optional, TypeVar

from pyroute2 import AsyncIPRoute

from .link_reader import Link, LinkReader, reader

T = TypeVar("T")


async def _items(items: list) -> AsyncIterator[Any]:
    for item in items:
        yield item


class KernelThread:
    def __init__(self, netns: Optional[str] = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pynet-netlink", daemon=True)
        self._thread.start()
        self._ipr: AsyncIPRoute = self._call_sync(self._open, netns)
        self.spec = self._ipr.spec

    async def _open(self, netns: Optional[str]) -> AsyncIPRoute:
        ipr = AsyncIPRoute(netns=netns) if netns else AsyncIPRoute()
        reader(ipr)  # its socket is made here too, in the same namespace
        return ipr

    def _call_sync(self, fn: Callable[..., Coroutine[Any, Any, T]], *args) -> T:
        return asyncio.run_coroutine_threadsafe(fn(*args), self._loop).result()

    async def _call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(*args), self._loop))

    async def _request(self, what: str, command: str, kwargs: dict) -> Any:
        async def run() -> Any:
            result = await getattr(self._ipr, what)(command, **kwargs)
            return [msg async for msg in result] if command == "dump" else result
        result = await self._call(run)
        return _items(result) if command == "dump" else result

    async def link(self, command: str, **kwargs) -> Any:
        return await self._request("link", command, kwargs)

    async def addr(self, command: str, **kwargs) -> Any:
        return await self._request("addr", command, kwargs)

    async def route(self, command: str, **kwargs) -> Any:
        return await self._request("route", command, kwargs)

    async def brport(self, command: str, **kwargs) -> Any:
        return await self._request("brport", command, kwargs)

    async def neigh(self, command: str, **kwargs) -> Any:
        return await self._request("neigh", command, kwargs)

    async def fdb(self, command: str, **kwargs) -> Any:
        return await self._request("fdb", command, kwargs)

    @property
    def link_reader(self) -> "_ThreadedReader":
        return _ThreadedReader(self, reader(self._ipr))

    def close(self) -> None:
        if not self._loop.is_running():
            return

        async def shut() -> None:
            reader(self._ipr).close()
            self._ipr.close()
        try:
            self._call_sync(shut)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


class _ThreadedReader:
    """The handle's LinkReader, run on the handle's thread."""

    def __init__(self, owner: KernelThread, inner: LinkReader) -> None:
        self.owner, self.inner = owner, inner

    async def get(self, name: str) -> Optional[Link]:
        return await self.owner._call(self.inner.get, name)

    def index(self, name: str) -> Optional[int]:
        return self.inner.index(name)  # an ioctl that never waits: no need for the thread

    async def dump(self) -> list[Link]:
        return await self.owner._call(self.inner.dump)
