"""Background tasks stop even when they swallow a cancel."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from app.tasks import cancel_and_wait


async def test_a_task_that_swallows_a_cancel_is_cancelled_again() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            # What asyncio.wait_for does on 3.11 when the cancel and the result
            # arrive together: the cancel is lost.
            with suppress(asyncio.CancelledError):
                await asyncio.sleep(10)
                continue
            swallowed += 1
            if swallowed == 1:
                continue
            raise asyncio.CancelledError

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)

    await asyncio.wait_for(cancel_and_wait(task, None), timeout=5)

    assert task.cancelled() and swallowed == 2


async def test_failed_and_finished_tasks_are_waited_for_quietly() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fail())
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)

    await cancel_and_wait(failed, done)

    assert failed.done() and done.done()
