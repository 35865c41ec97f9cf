"""What the engine hands the MQTT uplink without knowing it: wake-ups, retained changes,
a command's reply, and stored events to publish again.

Each is built first by the app and given to both sides, so neither holds the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from gateway.adapters.schema import StoredEvent

__all__ = ["Broadcast", "CommandReply", "ReplayRequests", "RetainedChanges"]

RetainedPayload = dict[str, object] | None


class Broadcast:
    """Wakes every listener when something happened (events were committed to the outbox)."""

    def __init__(self) -> None:
        """No listener yet."""
        self._events: list[asyncio.Event] = []
        self._once: list[asyncio.Future[None]] = []

    def listener(self) -> asyncio.Event:
        """An event set at every ``notify`` (the listener clears it before it looks)."""
        event = asyncio.Event()
        self._events.append(event)
        return event

    def next(self) -> Awaitable[None]:
        """Resolves at the next ``notify``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._once.append(future)
        return future

    def notify(self) -> None:
        """Wake every listener."""
        for event in self._events:
            event.set()
        once, self._once = self._once, []
        for future in once:
            if not future.done():
                future.set_result(None)


class RetainedChanges:
    """Retained publishes not yet made: the latest payload per subtopic, and resync requests."""

    def __init__(self) -> None:
        """Nothing pending."""
        self._pending: dict[str, RetainedPayload] = {}
        self._resync = False
        self.wake = asyncio.Event()

    def set(self, subtopic: str, payload: RetainedPayload) -> None:
        """Publish ``{root}/{subtopic}`` retained (None clears it); a newer payload wins."""
        self._pending[subtopic] = payload
        self.wake.set()

    def resync(self) -> None:
        """Publish the status and every current-state item again."""
        self._resync = True
        self.wake.set()

    def take(self) -> dict[str, RetainedPayload]:
        """The pending changes, which are no longer pending."""
        pending, self._pending = self._pending, {}
        return pending

    def take_resync(self) -> bool:
        """Whether a resync was asked for since the last call."""
        asked, self._resync = self._resync, False
        return asked

    def keep(self, items: list[tuple[str, RetainedPayload]]) -> None:
        """Put back changes that may not have gone out, unless something newer came."""
        for subtopic, payload in items:
            self._pending.setdefault(subtopic, payload)

    @property
    def resync_pending(self) -> bool:
        """A resync was asked for and not yet taken."""
        return self._resync


@dataclass(frozen=True, slots=True)
class CommandReply:
    """A command's reply; ``authenticated``: its signature was verified, so the reply may go
    to the topic the command names (an unsigned message never chooses where we publish)."""

    payload: bytes
    authenticated: bool


class ReplayRequests:
    """Stored events the command pipeline asks the uplink to publish again (``replay``)."""

    def __init__(self) -> None:
        """No request."""
        self._queue: asyncio.Queue[tuple[Sequence[StoredEvent], asyncio.Future[int]]] = (
            asyncio.Queue()
        )

    async def publish(self, events: Sequence[StoredEvent]) -> int:
        """Have the uplink publish ``events`` in order; how many the broker accepted
        (LinkError if the link ended first)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((events, done))
        return await done

    async def take(self) -> tuple[Sequence[StoredEvent], asyncio.Future[int]]:
        """The next request and the future to settle (its asker may have gone: check done)."""
        return await self._queue.get()
