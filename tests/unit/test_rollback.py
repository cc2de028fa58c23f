"""The one rollback idiom: nothing undone on success; on failure every step,
last-pushed first, best effort, and the original error reported."""

import asyncio
import logging

import pytest

from driver.errors import KernelError
from driver.rollback import Rollback


async def test_success_undoes_nothing():
    done = []
    async with Rollback("network x") as undo:
        undo.push(lambda: done.append("a"), "a")
    assert done == []


async def test_failure_undoes_every_step_in_reverse_and_keeps_the_original_error(caplog):
    done = []

    async def async_step():
        done.append("async")

    def failing_step():
        done.append("failing")
        raise KernelError("link pnh1: cannot delete: busy")

    with caplog.at_level(logging.WARNING, logger="pynet.driver"), pytest.raises(ValueError, match="the cause"):
        async with Rollback("endpoint 3f2a9c1b7e4d") as undo:
            undo.push(lambda: done.append("first"), "first")
            undo.push(failing_step, "veth pnh1")
            undo.push(async_step, "its rules")
            raise ValueError("the cause")
    assert done == ["async", "failing", "first"]
    assert "endpoint 3f2a9c1b7e4d: undoing veth pnh1 failed: link pnh1: cannot delete: busy" in caplog.text
    assert "the cause" in caplog.text


async def test_cancellation_is_undone_too():
    done = []
    started = asyncio.Event()

    async def handler():
        async with Rollback("network x") as undo:
            undo.push(lambda: done.append("bridge"), "bridge")
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(handler())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == ["bridge"]
