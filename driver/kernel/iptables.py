"""Reading and writing the firewall through the iptables tools Docker uses.

Mechanism only: `snapshot` reads a family's rules (iptables-save), `apply`
writes a batch of lines with iptables-restore --noflush, which the kernel
applies atomically per table. Which lines to write is decided elsewhere
(driver/chains.py). Everything runs from argv lists, never a shell string.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import KernelError


@dataclass
class Snapshot:
    """One family's chains and rules, as iptables-save printed them."""

    family: int
    chains: set[tuple[str, str]] = field(default_factory=set)  # (table, chain)
    rules: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # -> specs in order

    def chain_rules(self, table: str, chain: str) -> list[str]:
        return self.rules.get((table, chain), [])

    def count(self, table: str, chain: str, spec: str) -> int:
        return self.chain_rules(table, chain).count(spec)


def parse_save(family: int, text: str, counts: dict[tuple[str, str, str], int] | None = None) -> Snapshot:
    """iptables-save's text; with `-c` lines (`[packets:bytes] -A ...`), their packets
    summed by (table, chain, spec) into `counts`."""
    snap = Snapshot(family)
    table = ""
    for line in text.splitlines():
        if line.startswith("[") and counts is not None and "] -A " in line:
            packets = int(line[1:line.index(":")])
            line = line[line.index("] ") + 2:]
            _, chain, *rest = line.split(" ", 2)
            key = (table, chain, rest[0] if rest else "")
            counts[key] = counts.get(key, 0) + packets
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            snap.chains.add((table, line[1:].split()[0]))
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            snap.rules.setdefault((table, chain), []).append(rest[0] if rest else "")
    return snap


class Iptables:
    """Runs the iptables tools. `prefix` lets tests run them in a namespace."""

    def __init__(self, prefix: Sequence[str] = (), v4: str = "iptables", v6: str = "ip6tables") -> None:
        self.prefix = list(prefix)
        self.binaries = {4: v4, 6: v6}

    async def _exec(self, argv: Sequence[str], stdin: bytes | None = None) -> tuple[int, str, str]:
        argv = [*self.prefix, *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise KernelError(f"cannot run {argv[0]}: {exc}") from None
        out, err = await proc.communicate(stdin)
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace").strip()

    async def uses_nftables(self) -> bool:
        """Whether the IPv4 tool writes through nftables (`iptables v1.8.9 (nf_tables)`)."""
        code, out, _ = await self._exec([self.binaries[4], "--version"])
        return code == 0 and "nf_tables" in out

    async def snapshot(self, family: int, tables: Sequence[str] = ("filter", "nat")) -> Snapshot:
        snap = Snapshot(family)
        for table in tables:
            code, out, err = await self._exec([f"{self.binaries[family]}-save", "-t", table])
            if code != 0:
                raise KernelError(f"{self.binaries[family]}-save -t {table}: {err or f'exit {code}'}")
            part = parse_save(family, out)
            snap.chains |= part.chains
            snap.rules.update(part.rules)
        return snap

    async def counted(self, family: int) -> tuple[Snapshot, dict[tuple[str, str, str], int]]:
        """A family's filter and nat rules with their packet counters (iptables-save -c)."""
        snap, counts = Snapshot(family), dict[tuple[str, str, str], int]()
        for table in ("filter", "nat"):
            code, out, err = await self._exec([f"{self.binaries[family]}-save", "-c", "-t", table])
            if code != 0:
                raise KernelError(f"{self.binaries[family]}-save -c -t {table}: {err or f'exit {code}'}")
            part = parse_save(family, out, counts)
            snap.chains |= part.chains
            snap.rules.update(part.rules)
        return snap, counts

    async def apply(self, family: int, batch: dict[str, list[str]]) -> None:
        """Apply `-N/-A/-I/-D ...` lines per table in one atomic restore."""
        text = "".join(f"*{table}\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
                       for table, lines in batch.items() if lines)
        if not text:
            return
        tool = f"{self.binaries[family]}-restore"
        code, _, err = await self._exec([tool, "--noflush", "--wait", "5"], stdin=text.encode())
        if code != 0:
            raise KernelError(f"{tool}: {err or f'exit {code}'} (batch: {text.strip()!r})")

    async def packets(self, family: int, table: str, chain: str, spec: str) -> int:
        """Packets the rule `spec` of `chain` has matched, summed over its copies (0 if absent)."""
        code, out, err = await self._exec([f"{self.binaries[family]}-save", "-c", "-t", table])
        if code != 0:
            raise KernelError(f"{self.binaries[family]}-save -c -t {table}: {err or f'exit {code}'}")
        return count_packets(out, chain, spec)


def count_packets(saved: str, chain: str, spec: str) -> int:
    """From `iptables-save -c` text: packets of every `[p:b] -A chain spec` line."""
    total, tail = 0, f" -A {chain} {spec}"
    for line in saved.splitlines():
        if line.startswith("[") and line.endswith(tail):
            total += int(line[1:line.index(":")])
    return total
