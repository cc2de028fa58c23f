"""What the kernel tells about changes, instead of pynet asking every few seconds.

Two netlink subscriptions, each on a socket of its own in the handle's
namespace: link changes (rtnetlink's RTMGRP_LINK: a Docker bridge appears or
goes) and firewall changes (nftables' NFNLGRP_NFTABLES: iptables-nft, which
Docker and pynet use, writes through it, so a flush or a firewall reload is
an event). `ruleset_generation()` reads nftables' generation counter: a
change that pynet made itself leaves it where pynet's own check saw it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from typing import Callable, Optional

from pyroute2 import netns as pyroute2_netns

from .link_reader import Link, messages, parse_link

log = logging.getLogger("pynet.events")

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
RTMGRP_LINK = 1
RTM_NEWLINK, RTM_DELLINK = 16, 17
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 15, 16
NFTA_GEN_ID = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
RECV_SIZE = 1 << 16


def _netlink_socket(netns: Optional[str], protocol: int) -> socket.socket:
    sock = pyroute2_netns.create_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    sock.setblocking(False)
    return sock


class Subscription:
    """A netlink socket joined to one multicast group; `on_message(data)` for
    each datagram, `on_lost()` when the kernel dropped some (ENOBUFS: the
    reader must look again rather than trust what it was told)."""

    def __init__(self, netns: Optional[str], protocol: int, group: int,
                 on_data: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        self.sock = _netlink_socket(netns, protocol)
        self.sock.bind((0, 0))
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        self.on_data, self.on_lost = on_data, on_lost
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.on_lost()
                    continue
                log.error("events: reading netlink notifications failed: %s", exc)
                return
            self.on_data(data)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()


def link_changes(data: bytes) -> list[tuple[bool, Link]]:
    """(present, link) for each link notification in a datagram."""
    out = []
    for kind, _, _, offset, length in messages(data):
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            out.append((kind == RTM_NEWLINK, parse_link(data, offset, length)))
    return out


def link_subscription(netns: Optional[str], on_change: Callable[[bool, Link], None],
                      on_lost: Callable[[], None]) -> Subscription:
    def on_data(data: bytes) -> None:
        for present, link in link_changes(data):
            on_change(present, link)
    return Subscription(netns, NETLINK_ROUTE, RTMGRP_LINK, on_data, on_lost)


def ruleset_subscription(netns: Optional[str], on_change: Callable[[], None]) -> Subscription:
    return Subscription(netns, NETLINK_NETFILTER, NFNLGRP_NFTABLES, lambda _data: on_change(), on_change)


class RulesetGeneration:
    """nftables' ruleset generation: it moves with every committed change."""

    _HEADER = struct.Struct("=IHHII")
    _NFGEN = struct.Struct("=BBH")

    def __init__(self, netns: Optional[str]) -> None:
        self.sock = _netlink_socket(netns, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.seq = 0
        self.lock = asyncio.Lock()

    async def read(self) -> int:
        loop = asyncio.get_running_loop()
        async with self.lock:
            self.seq += 1
            body = self._NFGEN.pack(socket.AF_UNSPEC, 0, 0)
            kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
            await loop.sock_sendall(self.sock, self._HEADER.pack(self._HEADER.size + len(body), kind,
                                                                 NLM_F_REQUEST, self.seq, 0) + body)
            while True:
                data = await loop.sock_recv(self.sock, RECV_SIZE)
                for got_kind, _, seq, offset, length in messages(data):
                    if seq != self.seq:
                        continue
                    if got_kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + self._HEADER.size)
                        raise OSError(-code, f"nftables generation: {errno.errorcode.get(-code, -code)}")
                    start = offset + self._HEADER.size + self._NFGEN.size
                    while start + 4 <= offset + length:
                        alen, atype = struct.unpack_from("=HH", data, start)
                        if atype & 0x3FFF == NFTA_GEN_ID:
                            return struct.unpack_from("!I", data, start + 4)[0]
                        start += (alen + 3) & ~3
                    raise OSError(errno.EPROTO, "nftables generation: no NFTA_GEN_ID in the answer")

    def close(self) -> None:
        self.sock.close()
