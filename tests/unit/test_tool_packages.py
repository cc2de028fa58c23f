"""Every program that the tests, the bench, the scripts or pynet itself start
comes from a Debian package that scripts/test.sh installs.

A machine keeps what was installed on it by hand, so a test that starts a new
program passes there and fails on a fresh one (it happened: etcdctl, from
etcd-client, while test.sh installed only etcd-server). Here the programs are
found in the code (the heads of argv lists, and what `ip netns exec`,
`nsenter` and `unshare` run), each is looked up with `dpkg-query -S`, and its
package must be in test.sh's list, a dependency of one there, or part of
every Debian system (Essential, or Priority required).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("driver", "ipam", "tests", "bench", "scripts", "packaging")
BIN_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")
# What the code starts, named so the scan below is held to finding it.
KNOWN = {"etcd", "etcdctl", "iperf3", "debootstrap", "docker", "dockerd", "docker-compose", "busybox",
         "iptables", "ip6tables", "iptables-legacy", "ip", "bridge", "curl", "nsenter", "unshare", "openssl",
         "mount", "umount", "tar", "ss", "sysctl"}
# Calls whose first argument is a program (argv spread as arguments).
RUNNERS = {"run", "sh", "exec", "Popen", "check_output", "check_call", "call", "create_subprocess_exec",
           "netns_exec", "which"}
# Programs that run another one after their options; the options of theirs that take a value.
WRAPPERS = {"nsenter", "unshare", "chroot", "timeout"}
VALUE_OPTIONS = {"-t", "--target", "--propagation", "-S", "--setuid", "-G", "--setgid", "-w", "--wd",
                 "-R", "--root", "-s", "--signal", "-k", "--kill-after"}
PROGRAM_NAME = re.compile(r"[a-z][a-z0-9._+-]*")


def _texts(node: ast.expr) -> list[str]:
    """The string constants an argv element can be (both arms of `a if c else b`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _texts(node.body) + _texts(node.orelse)
    return []


def _wrapped(argv: list[ast.expr]) -> list[str]:
    """The programs an argv runs: its head, and what a wrapper at its head runs.
    A spread prefix (`[*enter(), "unshare", ...]`) is a wrapper of the code's own."""
    while argv and isinstance(argv[0], ast.Starred):
        argv = argv[1:]
    heads = _texts(argv[0]) if argv else []
    found = list(heads)
    rest = argv[1:]
    if heads[:1] == ["ip"]:  # ip netns exec NS PROGRAM ...
        if [t for a in rest[:2] for t in _texts(a)] == ["netns", "exec"] and len(rest) >= 4:
            return found + _wrapped(rest[3:])
        return found
    if not heads or heads[0] not in WRAPPERS:
        return found
    # WRAPPER OPTIONS... PROGRAM: an option may take the next argument as its value;
    # timeout's first operand is its duration, chroot's its new root.
    skip, operands_first = False, heads[0] in ("timeout", "chroot")
    for i, arg in enumerate(rest):
        texts = _texts(arg)
        if skip or not texts:  # an option's value, or a value the code computes
            skip = False
            continue
        if texts[0].startswith("-"):
            skip = texts[0] in VALUE_OPTIONS
            continue
        if operands_first:
            operands_first = False
            continue
        return found + _wrapped(rest[i:])
    return found


def programs_in_code() -> dict[str, set[str]]:
    """{program name: files that start it}."""
    found: dict[str, set[str]] = {}
    files = [p for d in SOURCES for p in (ROOT / d).rglob("*")
             if p.is_file() and (p.suffix == ".py" or p.name == "build-plugin")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            argv: list[ast.expr] = []
            if isinstance(node, (ast.List, ast.Tuple)):
                argv = [e.value if isinstance(e, ast.Starred) else e for e in node.elts]
            elif isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in RUNNERS:
                    argv = list(node.args)
            for program in _wrapped(argv):
                if PROGRAM_NAME.fullmatch(program):
                    found.setdefault(program, set()).add(str(path.relative_to(ROOT)))
    return found


def listed_packages() -> set[str]:
    text = (ROOT / "scripts" / "test.sh").read_text()
    match = re.search(r"^packages=\((.*)\)$", text, re.M)
    assert match, "scripts/test.sh has no packages=(...) line"
    return set(match.group(1).split())


def _dpkg(*args: str) -> str:
    """What dpkg-query prints; it exits 1 when any one name is unknown, and prints the rest."""
    return subprocess.run(["dpkg-query", *args], capture_output=True, text=True, timeout=60).stdout


@cache
def owner(program: str) -> str | None:
    """The package that ships `program` here; None if the machine has no such program.

    With merged /usr, dpkg knows a file by the path its package ships
    (/sbin/bridge), not always by the one found first (/usr/sbin/bridge)."""
    for directory in BIN_DIRS:
        path = os.path.join(directory, program)
        if not os.path.isfile(path):
            continue
        candidates = {path, os.path.realpath(path)}
        candidates |= {c[4:] if c.startswith("/usr/") else "/usr" + c for c in list(candidates)}
        for candidate in sorted(candidates):
            out = _dpkg("-S", candidate)
            if out:
                return out.split(":", 1)[0].split(",")[0].strip()
        return "(no package)"
    return None


def on_every_system(package: str) -> bool:
    essential, _, priority = _dpkg("-W", "-f=${Essential} ${Priority}", package).partition(" ")
    return essential == "yes" or priority.strip() == "required"


def dependencies(packages: set[str]) -> set[str]:
    """The packages that `packages` depend on directly (alternatives included)."""
    out = _dpkg("-W", "-f=${Depends},${Pre-Depends}\n", *sorted(packages))
    return {re.split(r"[\s(:]", dep.strip(), maxsplit=1)[0]
            for dep in re.split(r"[,|]", out) if dep.strip()}


@pytest.fixture(scope="module")
def installed_by_test_sh() -> set[str]:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian machine: no dpkg-query")
    listed = listed_packages()
    return listed | dependencies(listed)


def test_the_scan_finds_the_programs_it_should():
    found = programs_in_code()
    assert sorted(KNOWN - set(found)) == []


def test_every_program_started_comes_from_a_package_test_sh_installs(installed_by_test_sh):
    found = programs_in_code()
    missing, absent = [], []
    for program in sorted(set(found) | KNOWN):
        package = owner(program)
        if package is None:  # a word in an argv list, or a program this machine lacks
            if program in KNOWN:
                absent.append(program)
            continue
        if package not in installed_by_test_sh and not on_every_system(package):
            missing.append(f"{program} ({package}, started in {', '.join(sorted(found.get(program, {'?'})))})")
    assert missing == [], "add these packages to scripts/test.sh: " + "; ".join(missing)
    if absent and os.environ.get("PYNET_E2E") == "required":  # test.sh installed its list just before
        pytest.fail(f"not on this machine after test.sh's installs: {', '.join(absent)}")


def test_the_scan_sees_through_wrappers():
    code = ('run("ip", "netns", "exec", ns, "etcdctl", "get")\n'
            'subprocess.Popen(["nsenter", "-t", pid, "-n", "iperf3", "-s"])\n'
            'x = ["nsenter", "--net=/run/netns/a", "unshare", "-m", "dockerd", "-H", sock]\n'
            'ns.exec("iptables" if v == 4 else "ip6tables", "-S")\n'
            'y = [*self.enter(), "unshare", "-m", "--propagation", "private", "curl", "-s"]\n'
            'z = ["unshare", "tar", "-x"]\n'
            'w = ["nsenter", "-t", "1", "-n", "ss", "-ltn"]\n'
            'v = ["timeout", "5", "bridge", "link"]\n')
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.List):
            found += _wrapped(node.elts)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in RUNNERS:
            found += _wrapped(node.args)
    assert sorted(found) == sorted(["ip", "etcdctl", "nsenter", "iperf3", "nsenter", "unshare", "dockerd",
                                    "iptables", "ip6tables", "unshare", "curl", "unshare", "tar",
                                    "nsenter", "ss", "timeout", "bridge"])
