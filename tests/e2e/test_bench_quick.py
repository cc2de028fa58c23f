"""The benchmark harness runs end to end: `python -m bench --quick` (its own private host, "bench")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the benchmark needs root")
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n{proc.stdout[-4000:]}"
    md, png = tmp_path / "benchmarks.md", tmp_path / "benchmarks.png"
    assert md.exists() and png.exists()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    for row in ("ratio pynet/bridge, median", "ratio pynet/bridge, p95", "ratio pynet/bridge, wall time",
                "ratio pynet/bridge, throughput"):
        assert re.search(rf"\| \*\*{re.escape(row)}\*\* \| \d+\.\d+ × \|", text), f"no figure for {row!r}:\n{text}"
    assert "## Targets" in text and "not measured" not in text.split("## Targets")[0]
    # It left nothing behind.
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "pynet-e2e-bench" not in netns


def test_cluster_scale_quick(tmp_path):
    """The cluster's scale simulation (its own etcd on loopback, no Docker) runs end to end."""
    import shutil
    if shutil.which("etcd") is None:
        pytest.fail("the scale simulation needs etcd (apt-get install etcd-server)")
    proc = subprocess.run([sys.executable, "-m", "bench.cluster_scale", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n{proc.stdout[-4000:]}"
    text = (tmp_path / "benchmarks-cluster.md").read_text()
    assert re.search(r"^\| 3 \| 6 \| \d+\.\d+ s \| ", text, re.M) and re.search(r"^\| 10 \| 20 \| ", text, re.M), text
    assert "(not all)" not in text
    assert (tmp_path / "benchmarks-cluster.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
