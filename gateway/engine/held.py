"""Decisions the store could not write, kept in memory, in decision order, until it can.

While the database cannot be written (disk full, I/O error, locked beyond the busy
timeout) the committer keeps each decision's persisting effects here and writes them, in
order, once the store works again: the events get their ``seq`` only then, so ``seq``
order stays decision order and the central system sees no gap.

The queue is bounded (``limit`` decisions). When it is full, room is made by dropping the
oldest decision of the least value first: one whose effects are all low-value events
(those the outbox may shed at its disk cap anyway), then any decision that saves no
alarm. A decision that saves an alarm (a call, a trouble, the storage alarm itself) is
never dropped: if only those are left, the queue grows past its limit rather than lose
one. What was dropped is counted and logged; its in-memory effects (the state, the lamps)
stand, only its record is lost.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.core.effects import Emit, Persisted, SaveAlarm

__all__ = ["HELD_LIMIT", "Held", "HeldDecisions", "Value"]

HELD_LIMIT = 10_000
"""Decisions held at most (a few kB each) before the least valuable are dropped."""


class Value(enum.IntEnum):
    """What losing a held decision would cost, lowest first."""

    LOW = 0  # only low-value events
    NORMAL = 1  # anything else that saves no alarm
    ALARM = 2  # saves an alarm: never dropped


@dataclass(slots=True)
class Held:
    """One decision's persisting effects and the time it was decided at."""

    effects: Sequence[Persisted]
    now: datetime
    value: Value
    dropped: bool = False


def value_of(effects: Sequence[Persisted]) -> Value:
    """How much a decision's record is worth keeping."""
    if any(isinstance(e, SaveAlarm) for e in effects):
        return Value.ALARM
    if all(isinstance(e, Emit) and e.low_value for e in effects):
        return Value.LOW
    return Value.NORMAL


class HeldDecisions:
    """A bounded FIFO of held decisions that drops the least valuable first when full."""

    def __init__(self, limit: int = HELD_LIMIT) -> None:
        """Empty; at most ``limit`` decisions (alarms excepted)."""
        self._limit = limit
        self._queue: collections.deque[Held] = collections.deque()
        self._by_value: dict[Value, collections.deque[Held]] = {
            Value.LOW: collections.deque(),
            Value.NORMAL: collections.deque(),
        }
        self._live = 0
        self.dropped = 0  # decisions dropped since the queue last emptied

    def __len__(self) -> int:
        """Decisions held (not dropped)."""
        return self._live

    def add(self, effects: Sequence[Persisted], now: datetime) -> Held | None:
        """Hold one decision's effects; the decision dropped to make room, if any."""
        held = Held(effects, now, value_of(effects))
        self._queue.append(held)
        self._live += 1
        if held.value is not Value.ALARM:
            self._by_value[held.value].append(held)
        if self._live <= self._limit:
            return None
        return self._drop()

    def head(self, count: int) -> list[Held]:
        """The oldest ``count`` decisions still held, in order."""
        self._skip_dropped()
        out: list[Held] = []
        for held in self._queue:
            if len(out) == count:
                break
            if not held.dropped:
                out.append(held)
        return out

    def written(self, count: int) -> None:
        """The oldest ``count`` held decisions are on disk now."""
        while count:
            held = self._queue.popleft()
            if held.dropped:
                continue
            count -= 1
            self._live -= 1
            if held.value is not Value.ALARM:
                self._forget(held)
        self._skip_dropped()
        if not self._live:
            self.dropped = 0

    def _forget(self, held: Held) -> None:
        """``held`` left the queue: it is the oldest of its value, so the leftmost there."""
        line = self._by_value[held.value]
        if line and line[0] is held:
            line.popleft()
        else:  # cannot happen: both queues keep decision order
            line.remove(held)

    def _drop(self) -> Held | None:
        for value in (Value.LOW, Value.NORMAL):
            line = self._by_value[value]
            if line:
                victim = line.popleft()
                victim.dropped = True
                self._live -= 1
                self.dropped += 1
                self._compact()
                return victim
        return None  # only alarms: kept, over the limit

    def _skip_dropped(self) -> None:
        while self._queue and self._queue[0].dropped:
            self._queue.popleft()

    def _compact(self) -> None:
        """Drop the tombstones once they outnumber the live entries (amortised O(1))."""
        if len(self._queue) > 2 * max(self._live, 1):
            self._queue = collections.deque(h for h in self._queue if not h.dropped)
