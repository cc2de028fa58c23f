"""HTTP on pynet's Unix socket, one kept-alive connection (no curl per call):
for the benchmark and the tests that speak the plugin API themselves."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Optional


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("pynet", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class PluginClient:
    """HTTP on pynet's Unix socket, one kept-alive connection (no curl per call)."""

    def __init__(self, path: Path, timeout: float = 30) -> None:
        self.path, self.timeout = str(path), timeout
        self.conn: Optional[_UnixConnection] = None

    def request(self, verb: str, target: str, body: Optional[dict] = None) -> tuple[int, dict]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = _UnixConnection(self.path, self.timeout)
            try:
                data = json.dumps(body).encode() if body is not None else None
                self.conn.request(verb, target, body=data,
                                  headers={"Content-Type": "application/json"} if data else {})
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else {})
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, body: dict) -> dict:
        status, reply = self.request("POST", f"/{method}", body)
        if status != 200 or reply.get("Err"):
            raise RuntimeError(f"{method} failed ({status}): {reply.get('Err', reply)}")
        return reply

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
