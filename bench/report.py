"""benchmarks.md and benchmarks.png from the measurements."""

from __future__ import annotations

import math
from pathlib import Path

from .overlay import programmed_percentile
from .util import mean, percentile, ratio


def _f(v, fmt: str = "{:.1f}", unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return fmt.format(v) + (f" {unit}" if unit else "")


def _ms(v) -> str:
    return _f(v, "{:.1f}", "ms")


def _x(v) -> str:
    return _f(v, "{:.3f}", "×")


def _pct(v) -> str:
    return _f(v * 100 if v is not None else None, "{:.2f}", "%")


def _kib(v) -> str:
    return _f(v / 1024 if v is not None else None, "{:.1f}", "KiB")


class Report:
    def __init__(self, meta: dict, engine: dict, engine_errors: dict, ipam: dict | None, ipam_error: str | None,
                 quick: bool, overlay: dict | None = None) -> None:
        self.meta, self.e, self.errors, self.ipam, self.ipam_error, self.quick = \
            meta, engine, engine_errors, ipam, ipam_error, quick
        self.overlay = overlay or {}
        self.rows: list[tuple[str, str, str]] = []
        self.verdicts: list[tuple[str, str, str]] = []  # (target, figure, met / not met / not measured)

    def row(self, section: str, what: str, value: str) -> None:
        self.rows.append((section, what, value))

    def verdict(self, target: str, figure: str, ok) -> None:
        self.verdicts.append((target, figure, "not measured" if ok is None else ("met" if ok else "**not met**")))

    def unmeasured(self, section: str, why: str, *targets: str) -> None:
        """A section that could not be measured, and the targets it leaves open."""
        self.row(section, "not measured", why or "n/a")
        for target in targets:
            self.verdict(target, "n/a", None)

    # --- figures -------------------------------------------------------------

    def build(self) -> None:
        m = self.meta
        for what, key in (("CPUs (nproc)", "nproc"), ("memory", "memory"), ("kernel", "kernel"),
                          ("Debian", "debian"), ("Python", "python"), ("Docker engine", "engine"),
                          ("date (UTC)", "date"), ("pynet commit", "commit"), ("mode", "mode"),
                          ("load average (1, 5, 15 min) at start", "load"), ("other network namespaces at start (other tests running?)", "others"),
                          ("bench wall time", "wall")):
            self.row("machine", what, str(m.get(key, "n/a")))
        self._idle()
        self._starts()
        self._burst()
        self._latency()
        self._scale()
        self._ipam()
        self._throughput()
        self._overlay()
        self._routed(self.overlay.get("throughput_gbps") or {})

    def _idle(self) -> None:
        i = self.e.get("idle")
        sec = "0. at rest: pynet's CPU (all threads and the iptables it runs, from /proc), as a share of one core"
        if not i or "loaded" not in i:
            self.unmeasured(sec, self.errors.get("idle"), "idle CPU < 1 % of one core, no network",
                            "idle CPU < 1 % of one core, 50 networks and 500 endpoints",
                            "a new Docker bridge isolated within 100 ms")
            return
        secs = i["seconds"]
        self.row(sec, f"no network, over {secs} s", _pct(i["empty"]))
        self.row(sec, f"{i['networks']} networks, {i['endpoints']} endpoints, over {secs} s"
                      " (a reconciliation every 30 s included)", _pct(i["loaded"]))
        iso = i.get("isolation_ms", [])
        self.row(sec, "a new Docker network's bridge isolated from pynet's: after `docker network create`"
                      " returned (each; 0: already)", ", ".join(f"{x:.0f} ms" for x in iso) or "n/a")
        self.verdict("idle CPU < 1 % of one core, no network", _pct(i["empty"]), i["empty"] < 0.01)
        self.verdict(f"idle CPU < 1 % of one core, 50 networks and 500 endpoints (measured: {i['networks']},"
                     f" {i['endpoints']})", _pct(i["loaded"]), i["loaded"] < 0.01)
        self.verdict("a new Docker bridge isolated within 100 ms (worst of the runs, polled)",
                     _ms(max(iso)) if iso else "n/a", max(iso) < 100 if iso else None)

    def _starts(self) -> None:
        s = self.e.get("starts")
        if not s:
            self.unmeasured("1. container start", self.errors.get("starts"), "start-time ratio ≤ 1.05 (median)")
            return
        n = len(s["pynet"])
        med = {d: percentile(v, 50) * 1000 for d, v in s.items()}
        p95 = {d: percentile(v, 95) * 1000 for d, v in s.items()}
        sec = f"1. container start (`docker run --rm … true`, {n} runs each, alternating)"
        for d in ("pynet", "bridge"):
            self.row(sec, f"{d} median / p95", f"{_ms(med[d])} / {_ms(p95[d])}")
        r = ratio(med["pynet"], med["bridge"])
        self.row(sec, "**ratio pynet/bridge, median**", _x(r))
        self.row(sec, "**ratio pynet/bridge, p95**", _x(ratio(p95["pynet"], p95["bridge"])))
        self.verdict("start-time ratio ≤ 1.05 (median)", _x(r), r <= 1.05)

    def _burst(self) -> None:
        b = self.e.get("burst")
        if not b:
            self.unmeasured("2. burst", self.errors.get("burst"), "burst ratio ≤ 1.10, no failures")
            return
        n = self.meta["burst"]
        sec = f"2. burst ({n} × `docker run -d` at once, {len(b['pynet'])} round(s) each)"
        walls = {d: mean([r["wall_s"] for r in runs]) for d, runs in b.items()}
        fails = {d: sum(r["failures"] for r in runs) for d, runs in b.items()}
        for d in ("pynet", "bridge"):
            each = ", ".join(f"{r['wall_s']:.2f}" for r in b[d])
            self.row(sec, f"{d} wall time (mean; each run)", f"{walls[d]:.2f} s ({each})")
            why = "; ".join(e.splitlines()[-1][:200] for r in b[d] for e in r.get("errors", []))
            self.row(sec, f"{d} failures", f"{fails[d]} of {n * len(b[d])}" + (f" ({why})" if why else ""))
        r = ratio(walls["pynet"], walls["bridge"])
        self.row(sec, "**ratio pynet/bridge, wall time**", _x(r))
        self.verdict(f"burst ratio ≤ 1.10, no failures (at {n})",
                     f"{_x(r)}, {fails['pynet']} + {fails['bridge']} failures",
                     r <= 1.10 and fails["pynet"] == 0 and fails["bridge"] == 0)

    def _latency(self) -> None:
        n = self.meta["burst"]
        results = {}
        for key, label in (("latency_c1", "concurrency 1 (sequential starts)"),
                           ("latency_burst", f"concurrency {n} (burst)")):
            lat = self.e.get(key)
            sec = f"3. plugin-side latency, from pynet's log, {label}"
            if lat is None:
                self.unmeasured(sec, "")
                results[key] = math.nan
                continue
            for method in ("CreateEndpoint", "Join", "RequestAddress", "CreateEndpoint+Join"):
                v = lat.get(method, [])
                self.row(sec, f"{method} p50 / p99 (n={len(v)})", f"{_ms(percentile(v, 50))} / {_ms(percentile(v, 99))}")
            results[key] = percentile(lat.get("CreateEndpoint+Join", []), 99)
        c1, cb = results["latency_c1"], results["latency_burst"]
        self.verdict("CreateEndpoint+Join p99 < 15 ms at concurrency 1", _ms(c1), None if math.isnan(c1) else c1 < 15)
        self.verdict(f"CreateEndpoint+Join p99 < 100 ms at concurrency 50 (measured at {n})", _ms(cb),
                     None if math.isnan(cb) else cb < 100)

    def _scale(self) -> None:
        s = self.e.get("scale")
        n = self.meta["scale"]
        sec = f"4. scale: {n} endpoints on one pynet network, through the plugin API"
        if not s or "per_endpoint_s" not in s:
            self.unmeasured(sec, self.errors.get("scale"), "RSS < 80 MB at 500 endpoints",
                            "serving within 1 s of start with 500 saved endpoints",
                            "full reconciliation of 500 endpoints < 2 s")
            return
        per = [x * 1000 for x in s["per_endpoint_s"]]
        tenth = max(1, len(per) // 10)
        self.row(sec, "RequestAddress + CreateEndpoint, client-side: mean / p50 / p99",
                 f"{_ms(mean(per))} / {_ms(percentile(per, 50))} / {_ms(percentile(per, 99))}")
        self.row(sec, f"the same, mean of the first {tenth} / of the last {tenth}",
                 f"{_ms(mean(per[:tenth]))} / {_ms(mean(per[-tenth:]))}")
        self.row(sec, "pynet RSS at 0 / at " + str(n) + " endpoints",
                 f"{_f(s.get('rss_0_mb'), unit='MB')} / {_f(s.get('rss_n_mb'), unit='MB')}")
        rn = s.get("restart_n", {})
        for count, r in sorted(s.get("restarts", {}).items()):
            self.row(sec, f"restart with {count} saved endpoints: serving (a call answered) / all verified"
                          " (/healthz ready) / its full reconciliation",
                     f"{_f(r.get('served_s'), '{:.2f}', 's')} / {_f(r.get('ready_s'), '{:.2f}', 's')}"
                     f" / {_f(r.get('reconcile_s'), '{:.2f}', 's')}")
        self.row(sec, f"endpoints pynet reported after the restart with {n}; its RSS",
                 f"{rn.get('endpoints', 'n/a')}; {_f(rn.get('rss_mb'), unit='MB')}")
        if s.get("cleaned_up"):
            self.row(sec, "clean-up: DeleteEndpoint + ReleaseAddress, mean per endpoint",
                     _ms(s["cleanup_s"] * 1000 / s["cleaned_up"]))
        rss = s.get("rss_n_mb")
        self.verdict(f"RSS < 80 MB at 500 endpoints (measured at {n})", _f(rss, unit="MB"),
                     None if rss is None else rss < 80)
        served, recon = rn.get("served_s"), rn.get("reconcile_s")
        self.verdict(f"serving within 1 s of start with 500 saved endpoints (measured at {n})",
                     _f(served, "{:.2f}", "s"), None if served is None else served < 1)
        self.verdict(f"full reconciliation of 500 endpoints < 2 s (measured at {n})", _f(recon, "{:.2f}", "s"),
                     None if recon is None or math.isnan(recon) else recon < 2)

    def _ipam(self) -> None:
        if self.ipam is None:
            self.unmeasured("5. IPAM", self.ipam_error, "reload of 100,000 saved addresses < 1 s",
                            "a /8 pool costs kilobytes")
            return
        f, b = self.ipam["fill"], self.ipam["big"]
        sec = "5. IPAM in process (IpamService + SQLite state, one RequestAddress each)"
        self.row(sec, f"allocate all {f['addresses']} of a /{f['subnet'].split('/')[1]} "
                      f"(each persisted): total / per address",
                 f"{f['alloc_s']:.2f} s / {f['alloc_s'] / f['addresses'] * 1e6:.0f} µs")
        self.row(sec, "then release them all: total / per address",
                 f"{f['release_s']:.2f} s / {f['release_s'] / f['addresses'] * 1e6:.0f} µs")
        self.row(sec, "pool exhausted after the last; nothing left after release",
                 f"{f['exhausted_after']}; {f['left_after_release'] == 0}")
        self.row(sec, "database file with the full pool", _kib(f["db_bytes_full"]))
        self.row(sec, f"{b['addresses']} addresses of a /8: total / per address",
                 f"{b['alloc_s']:.2f} s / {b['alloc_s'] / b['addresses'] * 1e6:.0f} µs")
        self.row(sec, f"allocator memory (tracemalloc): empty /8 / after {b['addresses']} picks",
                 f"{_kib(b['alloc_mem_empty'])} / {_kib(b['alloc_mem'])}")
        self.row(sec, f"allocator memory, worst case: {b['frag_addresses']} addresses every other one",
                 _kib(b["frag_mem"]))
        self.row(sec, f"database file: empty pool / with {b['addresses']} addresses",
                 f"{_kib(b['db_bytes_empty'])} / {_kib(b['db_bytes'])}")
        self.row(sec, f"reload of the {b['addresses']} saved addresses (as at start): time / memory",
                 f"{b['load_s']:.2f} s / {_kib(b['load_mem'])}")
        self.verdict(f"reload of 100,000 saved addresses < 1 s (measured: {b['addresses']})", f"{b['load_s']:.2f} s",
                     b["load_s"] < 1 if b["addresses"] >= 100_000 else None)
        self.verdict("a /8 pool costs kilobytes (allocator)", f"{_kib(b['alloc_mem'])} after {b['addresses']} picks",
                     b["alloc_mem"] < 100 * 1024)

    def _throughput(self) -> None:
        t = self.e.get("throughput_gbps")
        if not t:
            self.unmeasured("6. data plane", self.errors.get("throughput"), "throughput ≥ 0.95 of bridge")
            return
        sec = (f"6. data plane (iperf3 TCP between two containers, {len(t['pynet'])} run(s) of "
               f"{self.e.get('iperf_seconds')} s each, interleaved)")
        for d in ("pynet", "bridge"):
            each = ", ".join(f"{x:.2f}" for x in t[d])
            self.row(sec, f"{d} mean (each run)", f"{mean(t[d]):.2f} Gbit/s ({each})")
        r = ratio(mean(t["pynet"]), mean(t["bridge"]))
        self.row(sec, "**ratio pynet/bridge, throughput**", _x(r))
        self.verdict("throughput ≥ 0.95 of bridge", _x(r), r >= 0.95)

    def _overlay(self) -> None:
        o = self.overlay
        sec = "7. overlay (two private Docker hosts on one underlay, VXLAN, one etcd)"
        if not o.get("start_times") or not o.get("throughput_gbps"):
            self.unmeasured(sec, self.errors.get("overlay"), "cross-host throughput ≥ 0.80 of same-host (overlay)",
                            "publish-to-programmed p99 < 250 ms")
            return
        st = o["start_times"]
        med = {k: percentile(v, 50) * 1000 for k, v in st.items()}
        self.row(sec, f"container start on the overlay / on the built-in bridge, median ({len(st['overlay'])} each)",
                 f"{_ms(med['overlay'])} / {_ms(med['bridge'])} (ratio {_x(ratio(med['overlay'], med['bridge']))})")
        if "routed" in med:
            self.row(sec, "container start on a routed network, median", _ms(med["routed"]))
        if "swarm" in med:
            r = ratio(med["overlay"], med["swarm"])
            self.row(sec, "container start on Docker's Swarm overlay (attachable), median", _ms(med["swarm"]))
            self.row(sec, "**ratio overlay/Swarm, container start (median)**", _x(r))
            self.verdict("container start ≤ 0.70 of Swarm's (overlay)", _x(r), r <= 0.70)
        elif o.get("swarm_error"):
            self.row(sec, "Docker's Swarm overlay", f"not measured: {o['swarm_error']}")
        fp = {k: percentile(v, 50) * 1000 for k, v in o.get("first_packet", {}).items() if v}
        if fp:
            self.row(sec, "`docker run` to the first ping answered from the other host, median"
                     f" ({len(o['first_packet']['overlay'])} each): " + " / ".join(fp),
                     " / ".join(_ms(v) for v in fp.values()))
        if "swarm" in fp:
            r = ratio(fp["overlay"], fp["swarm"])
            self.row(sec, "**ratio overlay/Swarm, start to first packet across hosts (median)**", _x(r))
            self.verdict("start to first cross-host packet ≤ 0.70 of Swarm's (overlay)", _x(r), r <= 0.70)
        self.row(sec, "etcd transactions per container, started and removed (`--rm`), on its host", f"{o['txn_per_start']:.1f}")
        prog = o.get("programmed", {})
        total = prog.get(float("inf"), 0.0)
        shares = ", ".join(f"≤ {le * 1000:g} ms: {prog[le] / total:.0%}" for le in (0.005, 0.01, 0.025, 0.1, 0.25)
                           if le in prog and total)
        self.row(sec, f"publish to programmed on the other host (n={total:.0f}; share within)", shares or "n/a")
        t = o["throughput_gbps"]
        for kind in ("cross-host", "same host"):
            each = ", ".join(f"{x:.2f}" for x in t[kind])
            self.row(sec, f"iperf3 {kind} on the overlay network, mean (each run)", f"{mean(t[kind]):.2f} Gbit/s ({each})")
        r = ratio(mean(t["cross-host"]), mean(t["same host"]))
        self.row(sec, "**ratio cross-host/same-host, throughput**", _x(r))
        self.verdict("cross-host throughput ≥ 0.80 of same-host (overlay)", _x(r), r >= 0.80)
        if t.get("swarm cross-host"):
            each = ", ".join(f"{x:.2f}" for x in t["swarm cross-host"])
            self.row(sec, "iperf3 cross-host on Docker's Swarm overlay, mean (each run)",
                     f"{mean(t['swarm cross-host']):.2f} Gbit/s ({each})")
            r = ratio(mean(t["cross-host"]), mean(t["swarm cross-host"]))
            self.row(sec, "**ratio overlay/Swarm, cross-host throughput**", _x(r))
            self.verdict("cross-host throughput ≥ 1.00 of Swarm's (overlay)", _x(r), r >= 1.00)
        p99 = programmed_percentile(prog, 99)
        self.verdict("publish-to-programmed p99 < 250 ms (bucket bound)", _ms(p99 * 1000),
                     None if math.isnan(p99) else p99 <= 0.25)

    def _routed(self, t: dict) -> None:
        sec = "8. routed (the same two hosts, no encapsulation: a route per remote container)"
        if not t.get("routed cross-host") or not t.get("underlay"):
            self.unmeasured(sec, self.errors.get("overlay"), "routed cross-host throughput ≥ 0.95 of the underlay")
            return
        for kind, what in (("routed cross-host", "routed network, cross-host"), ("underlay", "the underlay itself,"
                                                                                 " host to host (control)")):
            each = ", ".join(f"{x:.2f}" for x in t[kind])
            self.row(sec, f"iperf3 {what}, mean (each run)", f"{mean(t[kind]):.2f} Gbit/s ({each})")
        self.row(sec, "ratio routed/overlay, cross-host throughput",
                 _x(ratio(mean(t["routed cross-host"]), mean(t["cross-host"]))))
        if t.get("swarm cross-host"):
            self.row(sec, "ratio routed/Swarm, cross-host throughput",
                     _x(ratio(mean(t["routed cross-host"]), mean(t["swarm cross-host"]))))
        r = ratio(mean(t["routed cross-host"]), mean(t["underlay"]))
        self.row(sec, "**ratio routed/underlay, throughput**", _x(r))
        self.verdict("routed cross-host throughput ≥ 0.95 of the underlay", _x(r), r >= 0.95)

    # --- output --------------------------------------------------------------------

    def markdown(self) -> str:
        m = self.meta
        out = ["# pynet benchmarks", "",
               f"`python -m bench{' --quick' if self.quick else ''}` on {m.get('date')}: pynet against "
               "Docker's built-in bridge driver (default IPAM), on one private engine "
               "(tests/support/harness.py's DockerHost), interleaved run by run. pynet runs as an operator "
               "runs it (`--log-level INFO`, reconciliation every 30 s). Times are wall "
               "times seen by the client unless the row says plugin-side. p99 of a few dozen samples "
               "is close to their maximum.", ""]
        if self.quick:
            out += ["**Quick mode**: smaller sizes than the targets name; the verdicts below are "
                    "indicative only.", ""]
        out += ["| section | measure | value |", "|---|---|---|"]
        last = None
        for section, what, value in self.rows:
            out.append(f"| {section if section != last else ''} | {what} | {value} |")
            last = section
        out += ["", "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
        out += [f"| {t} | {f} | {v} |" for t, f, v in self.verdicts]
        out += ["", self.summary(), ""]
        errors = {**self.errors, **({"ipam": self.ipam_error} if self.ipam_error else {})}
        if errors:
            out += ["## What could not be measured", ""] + [f"- {k}: {v}" for k, v in errors.items()] + [""]
        return "\n".join(out)

    def summary(self) -> str:
        met = [t for t, _, v in self.verdicts if v == "met"]
        missed = [f"{t} ({f})" for t, f, v in self.verdicts if v == "**not met**"]
        unmeasured = [t for t, _, v in self.verdicts if v == "not measured"]
        text = f"In this run {len(met)} of {len(self.verdicts)} targets are met"
        text += (": " + "; ".join(met) + "." if met else ".")
        if missed:
            text += " Not met: " + "; ".join(missed) + "."
        if unmeasured:
            text += " Not judged here: " + "; ".join(unmeasured) + "."
        others = self.meta.get("others")
        if others and others != "none":
            text += (f" Other network namespaces ({others}) existed when the run started: other tests "
                     "were probably running on the same machine, so the absolute times and the ratios "
                     "carry their noise (see the load average).")
        return text

    def plot(self, path: Path) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 3, figsize=(16, 9))
        self._plot_starts(axes[0][0])
        self._plot_burst(axes[0][1])
        self._plot_throughput(axes[0][2])
        self._plot_latency(axes[1][0])
        self._plot_restarts(axes[1][1])
        self._plot_idle(axes[1][2])
        fig.suptitle(f"pynet vs bridge — {self.meta.get('date')} — {self.meta.get('mode')}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    def _plot_starts(self, ax) -> None:
        s = self.e.get("starts")
        if s:
            data = [[x * 1000 for x in s[d]] for d in ("pynet", "bridge")]
            ax.boxplot(data, showfliers=True)
            ax.set_xticks([1, 2], ["pynet", "bridge"])
            for i, d in enumerate(data, 1):
                ax.scatter([i + 0.08] * len(d), d, s=8, alpha=0.5)
        ax.set_title("container start (docker run --rm … true)")
        ax.set_ylabel("ms")

    def _plot_burst(self, ax) -> None:
        b = self.e.get("burst")
        if b:
            walls = [mean([r["wall_s"] for r in b[d]]) for d in ("pynet", "bridge")]
            ax.bar(["pynet", "bridge"], walls, color=["tab:blue", "tab:orange"])
            for i, w in enumerate(walls):
                ax.text(i, w, f"{w:.2f} s", ha="center", va="bottom")
        ax.set_title(f"burst of {self.meta['burst']} containers (wall time)")
        ax.set_ylabel("s")

    def _plot_throughput(self, ax) -> None:
        t = self.e.get("throughput_gbps")
        if t:
            means = [mean(t[d]) for d in ("pynet", "bridge")]
            lows = [m - min(t[d]) for m, d in zip(means, ("pynet", "bridge"), strict=True)]
            highs = [max(t[d]) - m for m, d in zip(means, ("pynet", "bridge"), strict=True)]
            ax.bar(["pynet", "bridge"], means, yerr=[lows, highs], capsize=6, color=["tab:blue", "tab:orange"])
            for i, v in enumerate(means):
                ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
        ax.set_title("iperf3 TCP throughput (mean, min–max)")
        ax.set_ylabel("Gbit/s")

    def _plot_latency(self, ax) -> None:
        """Distribution (CDF) of CreateEndpoint+Join, plugin-side, at concurrency 1 and in the burst."""
        for key, label in (("latency_c1", "concurrency 1"), ("latency_burst", f"concurrency {self.meta['burst']}")):
            v = sorted((self.e.get(key) or {}).get("CreateEndpoint+Join", []))
            if v:
                ax.step(v, [(i + 1) / len(v) for i in range(len(v))], where="post",
                        label=f"{label} (p99 {percentile(v, 99):.0f} ms)")
        ax.axvline(100, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_title("CreateEndpoint+Join, plugin-side (CDF)")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("share of calls")
        ax.legend(loc="lower right", fontsize=8)

    def _plot_restarts(self, ax) -> None:
        restarts = sorted(((self.e.get("scale") or {}).get("restarts") or {}).items())
        if restarts:
            counts = [c for c, _ in restarts]
            for key, label in (("served_s", "serving (a call answered)"), ("ready_s", "all verified (/healthz)")):
                ax.plot(counts, [r.get(key) or math.nan for _, r in restarts], marker="o", label=label)
            ax.axhline(1, color="grey", linestyle=":", linewidth=1)
            ax.legend(fontsize=8)
        ax.set_title("restart: time until pynet serves, by saved endpoints")
        ax.set_xlabel("saved endpoints")
        ax.set_ylabel("s")

    def _plot_idle(self, ax) -> None:
        i = self.e.get("idle")
        if i and "loaded" in i:
            labels = ["no network", f"{i['networks']} networks,\n{i['endpoints']} endpoints"]
            values = [i["empty"] * 100, i["loaded"] * 100]
            ax.bar(labels, values, color="tab:blue")
            for k, v in enumerate(values):
                ax.text(k, v, f"{v:.2f} %", ha="center", va="bottom")
            ax.axhline(1, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"idle CPU over {(i or {}).get('seconds', '?')} s (share of one core)")
        ax.set_ylabel("%")
