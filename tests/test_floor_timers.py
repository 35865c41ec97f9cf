"""The engine's timer loop stops when cancelled, whatever it was waking up for."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from gateway.core.inputs import Tick
from tests.engine_harness import running_engine
from tests.waiting import until


async def test_a_stop_as_a_deadline_moves_still_stops_the_timers(run_dir: Path) -> None:
    # A wait with asyncio.wait_for on Python 3.11 drops a cancel landing as the awaited
    # event is set (CPython gh-86296): a daemon's stop then and there waited for the
    # shutdown bound and exited 1. The loop waits with asyncio.timeout instead.
    async with running_engine(run_dir) as h:
        ticks: list[object] = []
        put = h.inbox.put

        def counting(item: object) -> None:
            if isinstance(item, Tick):
                ticks.append(item)
            put(item)  # type: ignore[arg-type]

        h.inbox.put = counting  # type: ignore[method-assign]
        task = asyncio.create_task(h.engine.timers())
        try:
            # It queued a tick, then (with no await in between) began to wait.
            await until(lambda: ticks)
            h.engine._deadlines_moved.set()  # a deadline moves...
            task.cancel()  # ...as the daemon stops
            done, _ = await asyncio.wait({task}, timeout=10)
            assert task in done, "the timer loop kept running after it was cancelled"
            assert task.cancelled()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
