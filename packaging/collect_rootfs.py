"""Copy into a new root only the files pynet needs to run, with the libraries they load.

Usage (inside the Dockerfile's build stage, with that image's python3):
    python3 collect_rootfs.py OUT PATH... [--exclude PATH...]

Each PATH (a file or a directory, followed through every symlink on the
way, merged-/usr links included) is copied to OUT at the same place;
every ELF file among them brings the shared libraries `ldd` names. This
is how the plugin's root filesystem holds a Python interpreter, its
standard library, pynet's virtual environment and the iptables tools,
and not a package manager, a shell or documentation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys



class Collector:
    def __init__(self, out: str, exclude: set[str]) -> None:
        self.out = out
        self.seen: set[str] = set(exclude)
        self.elves: list[str] = []

    def add(self, path: str) -> None:
        """Copy `path`, resolving each symlink on the way (and copying the link too)."""
        path = os.path.normpath(path)
        if path in self.seen:
            return
        self.seen.add(path)
        current = "/"
        parts = [p for p in path.split("/") if p]
        for i, part in enumerate(parts):
            current = os.path.join(current, part)
            if os.path.islink(current):
                self._link(current)
                target = os.path.join(os.path.dirname(current), os.readlink(current))
                self.add(os.path.join(target, *parts[i + 1:]))
                return
        if os.path.isdir(path):
            self._dir(path)
            for name in sorted(os.listdir(path)):
                self.add(os.path.join(path, name))
        elif os.path.isfile(path):
            self._file(path)
        else:
            raise SystemExit(f"collect_rootfs: {path} does not exist")

    def _dir(self, path: str) -> None:
        dest = self.out + path
        os.makedirs(dest, exist_ok=True)
        shutil.copystat(path, dest)

    def _link(self, path: str) -> None:
        dest = self.out + path
        self._parent(path)
        if not os.path.lexists(dest):
            os.symlink(os.readlink(path), dest)

    def _file(self, path: str) -> None:
        self._parent(path)
        shutil.copy2(path, self.out + path)
        with open(path, "rb") as f:
            if f.read(4) == b"\x7fELF":
                self.elves.append(path)

    def _parent(self, path: str) -> None:
        # Its parents are real directories here: add() resolved every link above it.
        os.makedirs(self.out + os.path.dirname(path), exist_ok=True)

    def libraries(self) -> None:
        """Add what every ELF file copied so far loads, until nothing new comes."""
        done: set[str] = set()
        while pending := [e for e in self.elves if e not in done]:
            for elf in pending:
                done.add(elf)
                proc = subprocess.run(["ldd", elf], capture_output=True, text=True)
                if "not found" in proc.stdout:
                    raise SystemExit(f"collect_rootfs: {elf} needs a library that is not here:\n{proc.stdout}")
                for line in proc.stdout.splitlines():
                    words = line.split()
                    lib = words[2] if "=>" in words and len(words) > 2 else words[0] if words else ""
                    if lib.startswith("/"):
                        self.add(lib)


def main() -> None:
    out, *rest = sys.argv[1:]
    cut = rest.index("--exclude") if "--exclude" in rest else len(rest)
    paths, exclude = rest[:cut], {os.path.normpath(p) for p in rest[cut + 1:]}
    c = Collector(out, exclude)
    for path in paths:
        c.add(path)
    c.libraries()
    print(f"collect_rootfs: {len(c.seen)} paths, {len(c.elves)} ELF files")


if __name__ == "__main__":
    main()
