"""What reconciliation finds, in words an operator can act on, and the fix.
Modes decide them (e.g. bridge/repair.py); reconcile.py applies or shows them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Awaitable, Callable, Optional

from .chains import Rule


@dataclass
class Finding:
    """One difference between the saved state and the kernel or the firewall."""

    action: str  # what repairing it counts as, e.g. "bridges recreated"
    subject: str  # e.g. "network 3f2a9c1b7e4d"
    problem: str
    meaning: str
    fix: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Expected:
    """A group of rules a mode wants in place, for pynet doctor's view of the
    firewall: `finding.problem` may name the family as {family}."""

    finding: Finding
    rules: list[Rule]


@dataclass
class Decision:
    finding: Finding
    fix: Optional[Callable[[], Awaitable[object]]]  # None: nothing pynet can do by itself
    warn: str = ""  # logged each time it is found while repairing


def unexplained(subject: str) -> Finding:
    return Finding("leftovers kept", subject,
                   "pynet made it, but this state database is new or holds no network: it explains"
                   " nothing pynet made",
                   "the state may be elsewhere (another state directory, or another pynet's): deleting"
                   " it could cut running containers off",
                   "check PYNET_STATE_DIR (a plugin's state.source); if it really is a leftover,"
                   " delete it by hand (pynet deletes leftovers once its state holds a network and"
                   " it restarted on that state)")
