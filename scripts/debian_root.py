#!/usr/bin/env python3
"""A Debian root filesystem as a cached tarball, made by debootstrap from the
mirror this host's apt uses (never a built-in one).

    scripts/debian_root.py RELEASE --include PKG[,PKG...] --cache DIR [--updates] [--mirror URL]

prints the tarball's path; a tarball already in the cache is used as it is
(--refresh makes it again). Used by scripts/build-plugin (the plugin's base
image) and by the end-to-end tests (a second Docker engine from the other
Debian release). Needs root and debootstrap.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

JUNK = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale",
        "usr/share/info")


def host_release() -> str:
    with open("/etc/os-release") as f:
        fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    return fields.get("VERSION_CODENAME", "").strip('"') or "bookworm"


def apt_mirror(archive: str = "debian") -> Optional[str]:
    """The mirror of `archive` (debian, debian-security) this host's apt uses, so that
    debootstrap goes where apt may go; None if apt names none."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/" + archive):
                return uri
    return None


def debian_mirror() -> str:
    mirror = apt_mirror("debian")
    if mirror is None:
        raise SystemExit("no Debian mirror in this host's apt sources (/etc/apt/sources.list or"
                         " /etc/apt/sources.list.d/*.sources): name one with --mirror URL")
    return mirror


def run(*argv: str, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(argv), check=True, **kw)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed (exit {exc.returncode})") from None


def apply_updates(target: Path, release: str, mirror: str, log: Callable[[str], None]) -> None:
    """Debian's stable and security updates: debootstrap fetches the release as first published."""
    security = apt_mirror("debian-security")
    lines = [f"deb {mirror} {release} main", f"deb {mirror} {release}-updates main"]
    if security is None:
        log("no debian-security mirror in this host's apt sources: the root gets no security updates")
    else:
        lines.append(f"deb {security} {release}-security main")
    (target / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
    apt = ["chroot", str(target), "/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]
    run(*apt, "update", stdout=subprocess.DEVNULL)
    run(*apt, "upgrade", stdout=subprocess.DEVNULL)


def unmount_under(directory: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    prefix = str(directory) + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def root_tarball(release: str, include: Sequence[str], cache: Path, name: str, mirror: Optional[str] = None,
                 updates: bool = False, refresh: bool = False,
                 log: Callable[[str], None] = lambda text: print(text, file=sys.stderr)) -> Path:
    """cache/NAME.tar: a minbase root of `release` with `include`, made once."""
    tarball = cache / f"{name}.tar"
    if refresh:
        tarball.unlink(missing_ok=True)
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is needed (apt-get install debootstrap)")
    mirror = mirror or debian_mirror()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=cache) as tmp:
        target = Path(tmp) / "root"
        log(f"debootstrap {release} with {','.join(include)} from {mirror} (a minute or two; cached in {tarball})")
        started = time.monotonic()
        try:
            run("debootstrap", "--variant=minbase", f"--include={','.join(include)}", release, str(target),
                mirror, stdout=subprocess.DEVNULL)
            if updates:
                apply_updates(target, release, mirror, log)
        finally:
            unmount_under(target)  # a failed debootstrap may leave /proc mounted: never rm -r that
        for junk in JUNK:
            shutil.rmtree(target / junk, ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        run("tar", "-C", str(target), "--numeric-owner", "-cf", str(partial), ".")
        partial.rename(tarball)
        log(f"{release} root made in {time.monotonic() - started:.0f} s")
    return tarball


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release")
    parser.add_argument("--include", required=True, help="comma-separated packages")
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--name", help=f"tarball name (default RELEASE-{platform.machine()})")
    parser.add_argument("--mirror", help="Debian mirror (default: apt's)")
    parser.add_argument("--updates", action="store_true", help="apply stable and security updates")
    parser.add_argument("--refresh", action="store_true", help="make it again")
    args = parser.parse_args()
    name = args.name or f"{args.release}-{platform.machine()}"
    print(root_tarball(args.release, args.include.split(","), args.cache, name, args.mirror, args.updates,
                       args.refresh))


if __name__ == "__main__":
    main()
