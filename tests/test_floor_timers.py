"""The floor's timer loop stops when cancelled, whatever it was waking up for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.adapters.store import Store
from gateway.config.load import load_floor
from gateway.floor import Floor
from tests.waiting import until


async def test_a_stop_as_a_deadline_moves_still_stops_the_timers(
    write_floor: Callable[..., Path], tmp_path: Path
) -> None:
    # The loop waited with asyncio.wait_for, which on Python 3.11 drops a cancel landing
    # as the awaited event is set (CPython gh-86296). Every room I/O counter poll sets it:
    # a daemon's stop then and there waited for the shutdown bound and exited 1.
    config, _ = load_floor(write_floor())
    clock_reads: list[datetime] = []

    def wall() -> datetime:
        clock_reads.append(datetime.now(UTC))
        return clock_reads[-1]

    async with await Store.open(tmp_path / "floor.db", synchronous="NORMAL") as store:
        floor = await Floor.open(config, store, wall=wall)
        opened = len(clock_reads)
        task = asyncio.create_task(floor.timers())
        try:
            # It read the clock, then (with no await in between) began to wait.
            await until(lambda: len(clock_reads) > opened)
            floor.timers_changed()  # a deadline moves...
            task.cancel()  # ...as the daemon stops
            done, _ = await asyncio.wait({task}, timeout=10)
            assert task in done, "the timer loop kept running after it was cancelled"
            assert task.cancelled()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
