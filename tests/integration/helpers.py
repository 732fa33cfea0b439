"""Shared by the in-process worker tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pgrelay


async def run_until(worker: pgrelay.Worker, condition: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Run ``worker`` until ``condition()`` holds (fail after ``timeout``), then stop it and wait for it."""
    task = asyncio.create_task(worker.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await condition():
            assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
            assert not task.done(), f"worker stopped early: {task.exception() if task.done() else ''}"
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=15)
