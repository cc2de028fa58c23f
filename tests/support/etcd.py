"""A private etcd for the tests: Debian's etcd-server on loopback, its data in
a temporary directory, stopped and removed whatever happens."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificates(directory: Path, ip: str) -> dict[str, str]:
    """A CA, a server certificate for `ip` and a client certificate, with openssl."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory, timeout=60)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pynet-test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name, extra in (("server", f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth"),
                        ("client", "extendedKeyUsage=clientAuth")):
        (directory / f"{name}.ext").write_text(extra + "\n")
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=pynet-test-{name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return {k: str(directory / f) for k, f in (("ca", "ca.pem"), ("cert", "client.pem"), ("key", "client.key"),
                                                ("server_cert", "server.pem"), ("server_key", "server.key"))}


class TestEtcd:
    def __init__(self, listen: str = "127.0.0.1", tls: bool = False) -> None:
        self.listen = listen
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="pynet-etcd-"))
        self.client_port, self.peer_port = _free_port(), _free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def endpoint(self) -> str:
        return f"{self.listen}:{self.client_port}"

    def start(self) -> None:
        scheme = "https" if self.tls else "http"
        client, peer = f"{scheme}://{self.endpoint}", f"http://{self.listen}:{self.peer_port}"
        tls: list[str] = []
        if self.tls:
            self.certificates = make_certificates(self.dir, self.listen)
            tls = ["--cert-file", self.certificates["server_cert"], "--key-file", self.certificates["server_key"],
                   "--trusted-ca-file", self.certificates["ca"], "--client-cert-auth"]
        log = open(self.dir / "etcd.log", "ab")
        self.proc = subprocess.Popen(
            ["etcd", "--name", "pynet-test", "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"pynet-test={peer}", "--log-level", "warn", *tls],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited ({self.proc.returncode}); see {self.dir}/etcd.log")
            try:
                with socket.create_connection((self.listen, self.client_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("etcd did not listen within 20 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def etcd_available() -> bool:
    return shutil.which("etcd") is not None
