"""Firewall rules pynet owns, through the iptables binaries Docker uses.

Rules are built by pure functions (testable without root) and applied by an
`Iptables` runner from argv lists, never a shell string. pynet's rules live
in its own chain, PYNET-FORWARD, jumped to from FORWARD; every rule carries a
comment naming its network, so removal never touches anybody else's rules.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Sequence

from ..errors import KernelError

log = logging.getLogger("pynet.firewall")

FORWARD_CHAIN = "PYNET-FORWARD"


@dataclass(frozen=True)
class Rule:
    family: int  # 4 or 6
    table: str
    chain: str
    spec: tuple[str, ...]  # match and target, as after `-A CHAIN`


def base_rules() -> list[Rule]:
    """The jump from FORWARD to pynet's chain, for both families."""
    return [Rule(f, "filter", "FORWARD", ("-j", FORWARD_CHAIN)) for f in (4, 6)]


def network_rules(bridge: str, tag: str) -> list[Rule]:
    """Rules one network needs: traffic between containers of the bridge.

    With br_netfilter loaded and FORWARD's policy DROP (Docker's defaults),
    even frames between two ports of one bridge are filtered.
    """
    comment = ("-m", "comment", "--comment", tag)
    return [Rule(f, "filter", FORWARD_CHAIN, ("-i", bridge, "-o", bridge, *comment, "-j", "ACCEPT"))
            for f in (4, 6)]


class Iptables:
    """Runs iptables/ip6tables. `prefix` lets tests run them in a namespace."""

    def __init__(self, prefix: Sequence[str] = (), v4: str = "iptables", v6: str = "ip6tables") -> None:
        self.prefix = list(prefix)
        self.binaries = {4: v4, 6: v6}
        self._lock = asyncio.Lock()  # check-then-add must not interleave

    async def run(self, family: int, args: Sequence[str]) -> tuple[int, str]:
        argv = [*self.prefix, self.binaries[family], "-w", "5", *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise KernelError(f"cannot run {argv[0]}: {exc}") from None
        out, err = await proc.communicate()
        return proc.returncode or 0, (out + err).decode(errors="replace").strip()

    async def _must(self, family: int, args: Sequence[str]) -> None:
        code, text = await self.run(family, args)
        if code != 0:
            raise KernelError(f"{self.binaries[family]} {' '.join(args)}: {text or f'exit {code}'}")

    async def _exists(self, rule: Rule) -> bool:
        code, _ = await self.run(rule.family, ["-t", rule.table, "-C", rule.chain, *rule.spec])
        return code == 0

    async def ensure_chain(self, family: int, table: str, chain: str) -> None:
        code, _ = await self.run(family, ["-t", table, "-n", "-L", chain])
        if code != 0:
            code, text = await self.run(family, ["-t", table, "-N", chain])
            if code != 0 and "exists" not in text:
                raise KernelError(f"{self.binaries[family]}: cannot create chain {chain}: {text}")

    async def ensure_base(self) -> None:
        """pynet's chain and the jump to it, first in FORWARD."""
        async with self._lock:
            for family in (4, 6):
                await self.ensure_chain(family, "filter", FORWARD_CHAIN)
            for rule in base_rules():
                if not await self._exists(rule):
                    await self._must(rule.family, ["-t", rule.table, "-I", rule.chain, "1", *rule.spec])

    async def ensure(self, rules: Sequence[Rule]) -> list[Rule]:
        """Append the rules that are missing; returns those it added.

        All or nothing: if one cannot be added, those added before it are removed.
        """
        added: list[Rule] = []
        async with self._lock:
            try:
                for rule in rules:
                    if await self._exists(rule):
                        continue
                    await self._must(rule.family, ["-t", rule.table, "-A", rule.chain, *rule.spec])
                    added.append(rule)
            except BaseException:
                for rule in reversed(added):
                    await self.run(rule.family, ["-t", rule.table, "-D", rule.chain, *rule.spec])
                raise
        return added

    async def delete(self, rules: Sequence[Rule]) -> None:
        """Delete the rules (every copy); missing ones are fine."""
        async with self._lock:
            for rule in rules:
                while await self._exists(rule):
                    await self._must(rule.family, ["-t", rule.table, "-D", rule.chain, *rule.spec])

    async def missing(self, rules: Sequence[Rule]) -> list[Rule]:
        return [rule for rule in rules if not await self._exists(rule)]
