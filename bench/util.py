"""Small helpers: statistics, pynet's log and its memory (its socket: tests/support/plugin_client.py)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default); nan when empty."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


# `... pynet.server: req=16 NetworkDriver.CreateEndpoint network=222975fc2511 endpoint=7a072c6db9c0 5.6ms ok`
CALL_LINE = re.compile(r"pynet\.server: req=\d+ (?P<method>\S+) (?P<ids>.*?) ?(?P<ms>\d+(?:\.\d+)?)ms (?P<outcome>ok|error.*)$")
ENDPOINT = re.compile(r"endpoint=([0-9a-f]+)")
RECONCILE = re.compile(r"reconcile: (?P<what>.*)\((?:.*, )?(?P<s>\d+(?:\.\d+)?) s\)$")


class LogReader:
    """Reads pynet's log from a remembered offset: one phase's lines only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def lines_since(self, offset: int) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace").splitlines()


def call_latencies(lines: list[str]) -> dict[str, list[float]]:
    """Plugin-side milliseconds by method, successful calls only, plus
    'CreateEndpoint+Join': the sum of both calls for each endpoint that had both."""
    out: dict[str, list[float]] = {}
    per_ep: dict[str, dict[str, float]] = {}
    for line in lines:
        m = CALL_LINE.search(line)
        if not m or m["outcome"] != "ok":
            continue
        method = m["method"].split(".", 1)[-1]
        ms = float(m["ms"])
        out.setdefault(method, []).append(ms)
        ep = ENDPOINT.search(m["ids"])
        if ep and method in ("CreateEndpoint", "Join"):
            per_ep.setdefault(ep.group(1), {})[method] = ms
    out["CreateEndpoint+Join"] = [v["CreateEndpoint"] + v["Join"] for v in per_ep.values()
                                  if "CreateEndpoint" in v and "Join" in v]
    return out


def rss_mb(pid: int) -> float:
    """VmRSS of the pynet process (the python under nsenter, if nsenter forked)."""
    pid = python_pid(pid)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process, its threads and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def python_pid(pid: int) -> int:
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if comm != "nsenter":
        return pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def iperf_gbps(server_pid: str, client_pid: str, ip: str, seconds: int, procs: list) -> float:
    """One iperf3 TCP run from one container's namespace to another's (the host's iperf3
    in them, through nsenter): Gbit/s received. The server is added to `procs`, so a
    bench that fails midway can kill it."""
    server = subprocess.Popen(["nsenter", "-t", server_pid, "-n", "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(server)
    try:
        for _ in range(50):
            proc = subprocess.run(["nsenter", "-t", client_pid, "-n", "iperf3", "-c", ip, "-t", str(seconds), "-J"],
                                  capture_output=True, text=True, timeout=seconds + 30)
            out = json.loads(proc.stdout) if proc.stdout.strip() else {}
            error = out.get("error", "") or (proc.stderr.strip() if proc.returncode else "")
            received = out.get("end", {}).get("sum_received", {}).get("bits_per_second")
            if not error and received is not None:
                return received / 1e9
            if "refused" not in error:  # anything but "the server is not listening yet"
                raise RuntimeError(f"iperf3 failed ({proc.returncode}): {error or proc.stdout[-300:]}")
            time.sleep(0.1)  # the server is not listening yet
        raise RuntimeError("iperf3 server never listened")
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
