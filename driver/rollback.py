"""One way to undo half-built work when a handler fails.

    async with Rollback(f"network {nid}") as undo:
        created = await links.ensure_bridge(...)
        if created:
            undo.push(lambda: links.delete_link(ipr, bridge), f"bridge {bridge}")
        await links.ensure_addresses(...)   # raises: the bridge goes, this error is reported

On success nothing is undone. On failure (cancellation too) the steps run
last-pushed first, each best effort: a step that fails is logged and the
next one still runs, and the error reported is always the original one,
never an undo's.
"""

from __future__ import annotations

import inspect
import logging
from types import TracebackType
from typing import Awaitable, Callable, Optional, Union

log = logging.getLogger("pynet.driver")

Step = Callable[[], Union[Awaitable[object], object]]


class Rollback:
    def __init__(self, what: str) -> None:
        self.what = what
        self._steps: list[tuple[Step, str]] = []

    def push(self, step: Step, label: str) -> None:
        """Undo `label` with `step()` (sync or async) if the block fails."""
        self._steps.append((step, label))

    async def __aenter__(self) -> "Rollback":
        return self

    async def __aexit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> bool:
        if exc_type is None:
            return False
        for step, label in reversed(self._steps):
            try:
                result = step()
                if inspect.isawaitable(result):
                    await result
            except Exception as failed:  # noqa: BLE001 - best effort; the original error is the one to report
                log.warning("%s: undoing %s failed: %s (undoing because: %s)", self.what, label, failed, exc)
        return False  # the original error goes on
