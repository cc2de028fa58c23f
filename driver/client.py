"""Talking to a running pynet (its socket) and, when it answers, to Docker.

Used by the `pynet` command, never by the plugin itself: a plugin handler
that called Docker would deadlock dockerd at boot.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Optional

import aiohttp

from .config import DEFAULT_SOCKET

MANAGED_SOCKETS = "/run/docker/plugins/*/pynet.sock"
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


class ClientError(Exception):
    pass


def find_socket(explicit: Optional[str] = None) -> str:
    """--socket, $PYNET_SOCKET, the legacy socket, or a managed plugin's socket."""
    if explicit:
        return explicit
    if os.environ.get("PYNET_SOCKET"):
        return os.environ["PYNET_SOCKET"]
    if os.path.exists(DEFAULT_SOCKET):
        return DEFAULT_SOCKET
    managed = sorted(glob.glob(MANAGED_SOCKETS))
    if len(managed) == 1:
        return managed[0]
    if managed:
        raise ClientError(f"several pynet plugins are running ({', '.join(managed)}): pick one with --socket")
    raise ClientError(f"no pynet socket at {DEFAULT_SOCKET} nor {MANAGED_SOCKETS}: is pynet running?"
                      " (or pass --socket)")


async def _request(socket_path: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path),
                                         timeout=aiohttp.ClientTimeout(total=60)) as session:
            data = json.dumps(body).encode() if body is not None else None
            async with session.request(method, f"http://localhost{path}", data=data) as resp:
                text = await resp.text()
                try:
                    return resp.status, json.loads(text)
                except ValueError:
                    return resp.status, text
    except aiohttp.ClientError as exc:
        raise ClientError(f"cannot reach {socket_path}: {exc}") from None


_RAISE = object()


class Pynet:
    def __init__(self, socket_path: str) -> None:
        self.socket = socket_path

    async def get(self, path: str, missing: Any = _RAISE) -> Any:
        """The body of a GET (503 too: health says why); `missing` where the path is
        unknown, if given (a mode that is off has no endpoints)."""
        status, body = await _request(self.socket, "GET", path)
        if status == 404 and missing is not _RAISE:
            return missing
        if status not in (200, 503):
            raise ClientError(f"GET {path}: HTTP {status}: {body}")
        return body

    async def ask(self, path: str) -> tuple[int, Any]:
        """A GET's status and body, whatever the status (the caller says what it means)."""
        return await _request(self.socket, "GET", path)

    async def post(self, path: str, body: Any = None, missing: Any = _RAISE) -> Any:
        status, reply = await _request(self.socket, "POST", path, body if body is not None else {})
        if status == 404 and missing is not _RAISE:
            return missing
        if status != 200:
            raise ClientError(f"POST {path}: {reply.get('Err') if isinstance(reply, dict) else reply}")
        return reply


class Docker:
    """Just enough of the Docker API to put names on IDs and to compare."""

    def __init__(self, socket_path: str) -> None:
        self.socket = socket_path

    @classmethod
    def find(cls) -> Optional["Docker"]:
        host = os.environ.get("DOCKER_HOST", "")
        if host.startswith("unix://"):
            return cls(host[len("unix://"):])
        for path in DOCKER_SOCKETS:
            if os.path.exists(path):
                return cls(path)
        return None

    async def get(self, path: str) -> Any:
        status, body = await _request(self.socket, "GET", path)
        if status != 200:
            raise ClientError(f"Docker GET {path}: HTTP {status}")
        return body

    async def networks(self) -> list[dict]:
        return await self.get("/networks")

    async def containers(self) -> list[dict]:
        return await self.get("/containers/json?all=1")


async def docker_view() -> Optional[dict]:
    """Docker's networks and container endpoints, or None when Docker does not answer."""
    docker = Docker.find()
    if docker is None:
        return None
    try:
        networks = await docker.networks()
        containers = await docker.containers()
    except ClientError:
        return None
    endpoints = {}
    for c in containers:
        name = (c.get("Names") or ["?"])[0].lstrip("/")
        for net_name, settings in ((c.get("NetworkSettings") or {}).get("Networks") or {}).items():
            if settings.get("EndpointID"):
                endpoints[settings["EndpointID"]] = {"container": name, "container_id": c.get("Id", ""),
                                                     "network": net_name, "network_id": settings.get("NetworkID", ""),
                                                     "state": c.get("State")}
    return {"networks": {n["Id"]: n for n in networks}, "endpoints": endpoints}
