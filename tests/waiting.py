"""Bounded waits on a condition: the one way tests wait for something.

The bound only catches a hang: a condition that holds in 1 s on an idle machine may take
several on a loaded 2-core one, so the default leaves that headroom (a passing wait costs
no more for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def until(cond: Callable[[], Any], timeout: float = 20.0, interval: float = 0.005) -> Any:
    """Wait (bounded) until ``cond()`` is truthy; return its value."""
    async with asyncio.timeout(timeout):
        while not (value := cond()):
            await asyncio.sleep(interval)
    return value
