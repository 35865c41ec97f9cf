"""Bounded waits on a condition: the one way tests wait for something."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def until(cond: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Wait (bounded) until ``cond()`` is truthy; return its value."""
    async with asyncio.timeout(timeout):
        while not (value := cond()):
            await asyncio.sleep(interval)
    return value
