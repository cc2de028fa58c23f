"""python -m bench [--quick] [--out DIR]: run every benchmark, write DIR/benchmarks.{md,png}."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.harness import NS_PREFIX, docker_host

from . import ipam_bench
from .engine import EngineBench, Sizes
from .overlay import OverlayBench
from .report import Report

PRODUCTION_FLAGS = ("--reconcile-interval", "30", "--stale-after", "60")
HOST_NAME = "bench"  # not the e2e session's "h1": both may run at once


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine() -> dict:
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                  if l.startswith("MemTotal:"))
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "n/a"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "driver", "ipam"], capture_output=True,
                           text=True).stdout.strip()
    others = [l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                   text=True).stdout.splitlines()
              if l.split() and l.split()[0] != NS_PREFIX + HOST_NAME]  # other tests' namespaces, say
    return {"nproc": os.cpu_count(), "memory": f"{mem_kb / 1024 / 1024:.1f} GiB", "kernel": platform.release(),
            "debian": debian, "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": (commit or "n/a") + (" (driver/ or ipam/ modified)" if dirty else ""),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "others": ", ".join(others) or "none"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a check in under two minutes")
    ap.add_argument("--out", help="directory of benchmarks.md and .png (default: docs, or a temp dir with --quick)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        say("bench: run as root (it starts a private dockerd in a network namespace)")
        return 1
    missing = [t for t in ("dockerd", "docker", "containerd", "nsenter", "unshare", "curl", "iptables", "iperf3")
               if shutil.which(t) is None]
    if missing:
        say(f"bench: missing tools: {', '.join(missing)} (iperf3: apt-get install -y iperf3)")
        return 1
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="pynet-bench-"))
                                           if args.quick else Path("docs"))
    out.mkdir(parents=True, exist_ok=True)

    # SIGTERM tears down like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    sizes = Sizes.for_mode(args.quick)
    meta = machine()
    meta.update(mode="quick" if args.quick else "full", burst=sizes.burst, scale=sizes.scale)

    say("bench: IPAM in process ...")
    ipam, ipam_error = None, None
    try:
        t0 = time.monotonic()
        ipam = ipam_bench.run(args.quick)
        say(f"bench: IPAM done in {time.monotonic() - t0:.1f} s")
    except Exception as exc:  # noqa: BLE001 - reported
        ipam_error = f"{type(exc).__name__}: {exc}"
        say(f"bench: IPAM could not be measured: {ipam_error}")

    bench = None
    host_error = None
    try:
        say(f"bench: starting the private host {NS_PREFIX + HOST_NAME} ...")
        # A host left by a killed bench run is cleared first (never another one's).
        with docker_host(HOST_NAME) as host:
            bench = EngineBench(host, sizes, say=say)
            try:
                # pynet as an operator runs it (the test host's are for fast tests): INFO
                # logging (the per-call lines the latency figures come from) and the
                # default reconciliation interval and reclaim delay.
                bench.pynet_flags = ("--log-level", "INFO", *PRODUCTION_FLAGS)
                host.restart_pynet_with(*bench.pynet_flags)
                meta["engine"] = "Docker " + host.docker("version", "-f", "{{.Server.Version}}")
                bench.run_all()
            finally:
                bench.kill_procs()
    except Exception as exc:  # noqa: BLE001 - the host itself failed
        host_error = f"{type(exc).__name__}: {exc}"
        say(f"bench: the private host failed: {host_error}")

    overlay, overlay_error = None, None
    if shutil.which("etcd") is None:
        overlay_error = "etcd is not installed (apt-get install etcd-server)"
    else:
        say("bench: overlay (two private hosts, VXLAN, etcd) ...")
        t0 = time.monotonic()
        try:
            overlay = OverlayBench(args.quick, ("--log-level", "INFO", *PRODUCTION_FLAGS), say).run()
            say(f"bench: overlay done in {time.monotonic() - t0:.1f} s")
        except Exception as exc:  # noqa: BLE001 - reported
            overlay_error = f"{type(exc).__name__}: {exc}"
            say(f"bench: the overlay could not be measured: {overlay_error}")

    meta["wall"] = f"{time.monotonic() - started:.0f} s"
    meta["load"] += " (at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ")"
    errors = dict(bench.errors) if bench is not None else {}
    if host_error:
        errors["host"] = host_error
    if overlay_error:
        errors["overlay"] = overlay_error
    report = Report(meta, bench.results if bench is not None else {}, errors, ipam, ipam_error, args.quick,
                    overlay or {})
    report.build()
    text = report.markdown()
    (out / "benchmarks.md").write_text(text)
    try:
        report.plot(out / "benchmarks.png")
    except Exception as exc:  # noqa: BLE001
        errors["plot"] = f"{type(exc).__name__}: {exc}"
        say(f"bench: no plot: {errors['plot']}")
    print(text)
    say(f"bench: wrote {out / 'benchmarks.md'} and {out / 'benchmarks.png'} in {meta['wall']}")
    return 0 if not errors and ipam_error is None else 2


if __name__ == "__main__":
    sys.exit(main())
