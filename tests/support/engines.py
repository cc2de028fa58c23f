"""The Docker engines the end-to-end tier runs against.

The machine's own (Debian's docker.io: 20.10 on Debian 12, 26 on Debian 13),
and for the scenarios marked `both_engines`, the other release's docker.io
(26 on a Debian 12 machine, 20.10 on a Debian 13 one), run from a
debootstrapped root of that release (engine_root.py). The root is made once
by scripts/debian_root.py and its tarball kept in /var/cache/pynet-test
(PYNET_TEST_CACHE) between runs.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PYNET_TEST_CACHE", "/var/cache/pynet-test"))
OTHER_RELEASE = {"bookworm": "trixie", "trixie": "bookworm"}
PACKAGES = ("docker.io", "containerd", "runc", "iptables", "iproute2", "ca-certificates")


def _debian_root():
    spec = importlib.util.spec_from_file_location("debian_root", ROOT / "scripts" / "debian_root.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


debian_root = _debian_root()


@dataclass(frozen=True)
class Engine:
    release: str  # whose docker.io it is
    tarball: Optional[Path] = None  # its root filesystem; None: the machine's own engine

    @property
    def native(self) -> bool:
        return self.tarball is None

    def host_name(self, base: str) -> str:
        """A test host's name on this engine (namespaces, cgroups): never shared between engines."""
        return base if self.native else f"{base}-{self.release}"

    def unpack(self, dest: Path) -> Path:
        """The root filesystem, unpacked under `dest` (once)."""
        assert self.tarball is not None
        root = dest / "engine-root"
        if not (root / "usr" / "sbin" / "dockerd").exists():
            root.mkdir(parents=True, exist_ok=True)
            subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(self.tarball)], check=True)
        return root


def native() -> Engine:
    return Engine(debian_root.host_release())


def other() -> Engine:
    """The other Debian release's engine; SystemExit says why it cannot be made."""
    mine = debian_root.host_release()
    release = OTHER_RELEASE.get(mine)
    if release is None:
        raise SystemExit(f"no second engine is known for Debian {mine!r} (known: {', '.join(OTHER_RELEASE)})")
    tarball = debian_root.root_tarball(release, PACKAGES, CACHE, f"docker-{release}-{platform.machine()}",
                                       log=lambda text: print(f"e2e: {text}", flush=True))
    return Engine(release, tarball)
