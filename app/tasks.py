"""Stopping background tasks for certain."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(*tasks: asyncio.Task[object] | None) -> None:
    """Cancels the tasks and returns once every one of them has ended.

    On Python 3.11 a cancel can be lost: `asyncio.wait_for`, used here and
    inside redis-py, drops one that arrives as the awaited call completes, and
    the task runs on. So a task still running is cancelled again.
    """
    running = {task for task in tasks if task is not None and not task.done()}
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=0.1)
    for task in tasks:
        if task is not None and not task.cancelled():
            # Retrieved, so that asyncio does not log it as never retrieved.
            task.exception()
