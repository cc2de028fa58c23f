"""Background jobs that must outlive their own failures."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger("pynet")


async def every(interval: float, job: Callable[[], Awaitable[object]], what: str, once: bool = False) -> None:
    """Run `job` every `interval` seconds for ever (or once); a failure is logged, not fatal."""
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except Exception as exc:  # noqa: BLE001 - keep going; say why it failed, and where
            log.error("%s failed: %s", what, exc, exc_info=True)
        if once:
            return
