"""pynet's etcd client: aetcd, with TLS, several endpoints, short timeouts,
and errors that name the cluster and say what still works.

aetcd 1.0 has neither TLS nor a list of endpoints: TLS comes from a secure
gRPC channel made here (aetcd's own stubs on it), and several endpoints
from gRPC's own name resolution (`ipv4:a:port,b:port`, round robin).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

import aetcd
import grpc
from aetcd import rpc, watcher

from ..errors import DriverError

log = logging.getLogger("pynet.cluster")

# gRPC keepalive, so a frozen etcd ends a watch in seconds rather than never;
# etcd accepts pings no more often than every 5 s by default.
CHANNEL_OPTIONS = {"grpc.keepalive_time_ms": 5000, "grpc.keepalive_timeout_ms": 3000,
                   "grpc.http2.ping_timeout_ms": 3000, "grpc.keepalive_permit_without_calls": 1,
                   "grpc.max_reconnect_backoff_ms": 2000}


class ClusterUnavailable(DriverError):
    """etcd cannot be reached: cluster networks cannot change, nothing else stops."""


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...]  # host:port each
    ca: Optional[str] = None  # PEM files
    cert: Optional[str] = None
    key: Optional[str] = None
    timeout: float = 2.5  # a call that waits longer fails: a container start must not hang

    def target(self) -> tuple[str, int]:
        """aetcd's (host, port): one endpoint as it is, several as a gRPC ipv4: list."""
        hosts = [_split(e) for e in self.endpoints]
        if len(hosts) == 1:
            return hosts[0]
        return "ipv4:" + ",".join(f"{h}:{p}" for h, p in hosts[:-1]) + f",{hosts[-1][0]}", hosts[-1][1]

    def describe(self) -> str:
        return ", ".join(self.endpoints)


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.removeprefix("https://").removeprefix("http://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


def check_endpoint(endpoint: str) -> str:
    """host:port with an IP address host (several endpoints go through gRPC's ipv4: resolver)."""
    host, port = _split(endpoint)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"etcd endpoint {endpoint!r}: port out of range")
    return f"{host}:{port}"


class _TlsClient(aetcd.Client):
    """aetcd's client over a TLS channel (client certificate and CA)."""

    def __init__(self, *args: Any, credentials: grpc.ChannelCredentials, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        self.channel = grpc.aio.secure_channel(f"{self._host}:{self._port}", self._credentials,
                                               options=list(self._options.items()))
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout)
        self._connected.set()


class Etcd:
    """The calls pynet makes, each failing with ClusterUnavailable when etcd is away."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        host, port = settings.target()
        options: dict[str, object] = dict(CHANNEL_OPTIONS)
        if len(settings.endpoints) > 1:
            options["grpc.lb_policy_name"] = "round_robin"
        if settings.ca or settings.cert:
            creds = grpc.ssl_channel_credentials(_read(settings.ca), _read(settings.key), _read(settings.cert))
            self.client: aetcd.Client = _TlsClient(host=host, port=port, timeout=settings.timeout,
                                                   options=options, credentials=creds)
        else:
            self.client = aetcd.Client(host=host, port=port, timeout=settings.timeout, options=options)
        self.tx = self.client.transactions
        self.observer: Optional[Callable[[str, float, bool], None]] = None  # metrics: (call, seconds, ok)

    def _observe(self, call: str, started: float, ok: bool) -> None:
        if self.observer is not None:
            self.observer(call, time.monotonic() - started, ok)

    def unavailable(self, exc: BaseException) -> ClusterUnavailable:
        return ClusterUnavailable(f"etcd at {self.settings.describe()} is unreachable ({exc}): cluster networks"
                                  " cannot change until it is back; running containers are unaffected")

    async def connect(self) -> None:
        try:
            await self.client.connect()
        except aetcd.ClientError as exc:
            raise self.unavailable(exc) from None

    async def transaction(self, compare: list, success: list, failure: list) -> tuple[bool, list]:
        started = time.monotonic()
        try:
            answer = await self.client.transaction(compare=compare, success=success, failure=failure)
        except aetcd.ClientError as exc:
            self._observe("txn", started, False)
            raise self.unavailable(exc) from None
        self._observe("txn", started, True)
        return answer

    async def get(self, key: bytes) -> Optional[bytes]:
        started = time.monotonic()
        try:
            found = await self.client.get(key)
        except aetcd.ClientError as exc:
            self._observe("get", started, False)
            raise self.unavailable(exc) from None
        self._observe("get", started, True)
        return found.value if found is not None else None

    async def get_prefix(self, prefix: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
        """Every (key, value) under the prefix, and the store's revision they were read at."""
        found, revision = await self.get_prefix_revisions(prefix)
        return [(key, value) for key, value, _ in found], revision

    async def get_prefix_revisions(self, prefix: bytes) -> tuple[list[tuple[bytes, bytes, int]], int]:
        """Every (key, value, revision it was last written at) under the prefix, and the
        store's revision they were read at."""
        started = time.monotonic()
        try:
            found = await self.client.get_prefix(prefix)
        except aetcd.ClientError as exc:
            self._observe("range", started, False)
            raise self.unavailable(exc) from None
        self._observe("range", started, True)
        return [(kv.key, kv.value, kv.mod_revision) for kv in found], found.header.revision

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> AsyncIterator[Any]:
        """Events after a snapshot; raises aetcd.RevisionCompactedError or ClusterUnavailable
        when the caller must list again."""
        try:
            watch = await self.client.watch_prefix(prefix, start_revision=start_revision)
            try:
                async for event in watch:
                    yield event
            finally:
                try:
                    await watch.cancel()
                except aetcd.ClientError:
                    pass
        except aetcd.RevisionCompactedError:
            raise
        except aetcd.ClientError as exc:
            raise self.unavailable(exc) from None

    async def follow(self, prefix: bytes, snapshot: Callable[[], Awaitable[int]],
                     apply: Callable[[Any], Awaitable[None]], what: str, retry: float = 1.0) -> None:
        """For ever: `snapshot()` (it lists the prefix and returns the revision it read at),
        then `apply` each later event; list again whenever the watch ends (etcd away,
        the revision compacted), so nothing between is missed."""
        while True:
            try:
                revision = await snapshot()
                async for event in self.watch_prefix(prefix, revision + 1):
                    await apply(event)
            except aetcd.RevisionCompactedError:
                log.warning("cluster: the %s watch fell behind a compaction; listing again", what)
            except ClusterUnavailable as exc:
                log.warning("cluster: the %s watch ended: %s; listing again when etcd is back", what, exc)
                await asyncio.sleep(retry)
            except Exception as exc:  # noqa: BLE001 - keep learning; say why
                log.error("cluster: the %s watch failed: %s", what, exc, exc_info=True)
                await asyncio.sleep(retry)

    async def lease(self, ttl: int) -> Any:
        try:
            return await self.client.lease(ttl)
        except aetcd.ClientError as exc:
            raise self.unavailable(exc) from None

    async def put(self, key: bytes, value: bytes, lease: Any = None) -> None:
        try:
            await self.client.put(key, value, lease=lease)
        except aetcd.ClientError as exc:
            raise self.unavailable(exc) from None

    async def close(self) -> None:
        try:
            await self.client.close()
        except aetcd.ClientError:
            pass


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()
