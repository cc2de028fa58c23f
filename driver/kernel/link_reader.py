"""Reading links from the kernel, decoding only the fields pynet reads.

pyroute2 decodes every attribute of every link message (statistics, af_spec,
per-protocol settings): about a millisecond a link on the loop thread. The
profile of a 50-container burst and of a restart with 500 endpoints (issue
13) showed those decodes as pynet's largest cost: a dump of 1000 links held
the event loop for about a second. pynet reads six fields of a link, so
lookups and dumps ask the kernel here (RTM_GETLINK without statistics, on a
netlink socket of their own in the handle's namespace) and parse those six
with struct. Every change still goes through pyroute2.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import socket
import struct
import weakref
from dataclasses import dataclass
from typing import Optional

from pyroute2 import AsyncIPRoute
from pyroute2 import netns as pyroute2_netns

from ..errors import KernelError

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_EXT_MASK = 18, 20, 29
IFLA_INFO_KIND = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFF_UP = 0x1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_ATTR = struct.Struct("=HH")  # rtattr: length, type
_IFREQ = struct.Struct("=16si20x")  # struct ifreq: name, ifindex (and the rest of the union)
SIOCGIFINDEX = 0x8933
RECV_SIZE = 1 << 18


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: Optional[str]
    alias: Optional[str]
    master: Optional[int]
    up: bool
    mtu: int = 0
    mac: str = ""


def _attributes(data: bytes, start: int, end: int) -> dict[int, bytes]:
    found = {}
    while start + 4 <= end:
        length, kind = _ATTR.unpack_from(data, start)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[start + 4:start + length]  # without NLA_F_NESTED/NET_BYTEORDER
        start += (length + 3) & ~3
    return found


def _text(raw: Optional[bytes]) -> Optional[str]:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw is not None else None


def parse_link(data: bytes, offset: int, length: int) -> Link:
    """One RTM_NEWLINK message (its nlmsghdr at `offset`)."""
    body = offset + _HEADER.size
    _, _, index, flags, _ = _IFINFO.unpack_from(data, body)
    attrs = _attributes(data, body + _IFINFO.size, offset + length)
    kind = None
    if IFLA_LINKINFO in attrs:
        info = attrs[IFLA_LINKINFO]
        kind = _text(_attributes(info, 0, len(info)).get(IFLA_INFO_KIND))
    master = attrs.get(IFLA_MASTER)
    mtu = attrs.get(IFLA_MTU)
    return Link(index=index, name=_text(attrs.get(IFLA_IFNAME)) or "", kind=kind,
                alias=_text(attrs.get(IFLA_IFALIAS)) or None,
                master=struct.unpack("=I", master)[0] if master else None, up=bool(flags & IFF_UP),
                mtu=struct.unpack("=I", mtu)[0] if mtu else 0,
                mac=":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b"")))


def messages(data: bytes):
    """(type, flags, sequence, offset, length) of each netlink message in a datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, flags, seq, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return
        yield kind, flags, seq, offset, length
        offset += (length + 3) & ~3


def _request(seq: int, flags: int, name: Optional[str]) -> bytes:
    attrs = _attr(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS))
    if name is not None:
        attrs += _attr(IFLA_IFNAME, name.encode() + b"\0")
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attrs
    return _HEADER.pack(_HEADER.size + len(body), RTM_GETLINK, NLM_F_REQUEST | flags, seq, 0) + body


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


class LinkReader:
    """One netlink socket, one request at a time, in the namespace of the
    pyroute2 handle it was made for."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.seq = 0
        self.lock = asyncio.Lock()

    async def _ask(self, name: Optional[str]) -> list[Link]:
        # Read to its end even if the caller is cancelled: a dump left half-read
        # makes the kernel refuse the next one (EBUSY).
        return await asyncio.shield(self._ask_whole(name))

    async def _ask_whole(self, name: Optional[str]) -> list[Link]:
        loop = asyncio.get_running_loop()
        async with self.lock:
            self.seq += 1
            seq = self.seq
            await loop.sock_sendall(self.sock, _request(seq, 0 if name else NLM_F_DUMP, name))
            found: list[Link] = []
            while True:
                data = await loop.sock_recv(self.sock, RECV_SIZE)
                for kind, _, got, offset, length in messages(data):
                    if got != seq:
                        continue  # the answer to a request that was cancelled
                    if kind == NLMSG_ERROR or kind == NLMSG_DONE:
                        (code,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                        if code == -errno.ENODEV and name is not None:
                            return []
                        if code < 0:
                            what = f"link {name}" if name else "link dump"
                            raise KernelError(f"{what}: {errno.errorcode.get(-code, -code)}")
                        return found
                    if kind == RTM_NEWLINK:
                        found.append(parse_link(data, offset, length))
                        if name is not None:
                            return found

    async def get(self, name: str) -> Optional[Link]:
        found = await self._ask(name)
        return found[0] if found else None

    def index(self, name: str) -> Optional[int]:
        """The index of link `name`, or None: SIOCGIFINDEX on this socket, which
        the kernel answers for the socket's namespace under RCU. RTM_GETLINK
        waits for the RTNL lock, and while Docker starts containers that took
        up to 275 ms; this never waits, so it is called straight from the loop."""
        try:
            answer = fcntl.ioctl(self.sock.fileno(), SIOCGIFINDEX, _IFREQ.pack(name.encode(), 0))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise KernelError(f"link {name}: {exc}") from None
        return _IFREQ.unpack(answer)[1]

    async def dump(self) -> list[Link]:
        return await self._ask(None)

    def close(self) -> None:
        self.sock.close()


_readers: "weakref.WeakKeyDictionary[AsyncIPRoute, LinkReader]" = weakref.WeakKeyDictionary()


def reader(ipr: AsyncIPRoute) -> LinkReader:
    """The reader for this handle's namespace (made once; pyroute2 makes its
    socket). A handle that brings its own (the unit tests' in-memory kernel)
    is read through that."""
    own = getattr(ipr, "link_reader", None)
    if own is not None:
        return own
    found = _readers.get(ipr)
    if found is None:
        where = ipr.spec["netns"]  # None: pynet's own namespace
        sock = pyroute2_netns.create_socket(where, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        sock.bind((0, 0))
        found = _readers[ipr] = LinkReader(sock)
        weakref.finalize(ipr, found.close)
    return found
