"""Simulated time and the event journal: every physical change, timestamped.

A benchmark measures latency from the physical event, so every change the simulator
makes (a press, a presented token, a door, a write by the gateway, a panel frame) is a
journal ``Event`` carrying both clocks: ``ts`` (``time.time()``, µs resolution, for
humans and cross-process comparison) and ``mono_ns`` (``time.monotonic_ns()``, for
latency arithmetic on the same machine).

``SimClock`` is device time: ``time_scale`` > 1 makes device behaviour (thermostat
drift, door release, panel heartbeat and repeats) run that many times faster. Bus
timing (baud rate, turnaround) and durations a caller gives in milliseconds are real
time and never scaled.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "Journal", "ManualClock", "SimClock", "Stamp"]

JOURNAL_MAX = 200_000


@dataclass(frozen=True, slots=True)
class Stamp:
    """When something happened: wall clock (µs) and monotonic (ns)."""

    ts: float
    mono_ns: int

    @classmethod
    def now(cls) -> Stamp:
        """The current instant."""
        return cls(ts=round(time.time(), 6), mono_ns=time.monotonic_ns())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"ts": self.ts, "mono_ns": self.mono_ns}


@dataclass(frozen=True, slots=True)
class Event:
    """One journal entry: what happened where, and when."""

    seq: int
    stamp: Stamp
    kind: str
    target: str
    room: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (flat: seq, ts, mono_ns, kind, target, room, detail)."""
        return {
            "seq": self.seq,
            **self.stamp.as_dict(),
            "kind": self.kind,
            "target": self.target,
            "room": self.room,
            "detail": self.detail,
        }


class Journal:
    """Append-only, bounded, queryable record of events (newest JOURNAL_MAX kept)."""

    def __init__(self, maxlen: int = JOURNAL_MAX) -> None:
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._seq = itertools.count(1)

    def record(
        self,
        kind: str,
        target: str,
        *,
        room: str | None = None,
        stamp: Stamp | None = None,
        **detail: Any,
    ) -> Event:
        """Append an event (stamped now unless given) and return it."""
        event = Event(next(self._seq), stamp or Stamp.now(), kind, target, room, detail)
        self._events.append(event)
        return event

    def query(
        self,
        *,
        since_seq: int = 0,
        kind: str | None = None,
        room: str | None = None,
        target: str | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Events after ``since_seq``, oldest first, filtered by kind/room/target."""
        out = [
            e
            for e in self._events
            if e.seq > since_seq
            and (kind is None or e.kind == kind)
            and (room is None or e.room == room)
            and (target is None or e.target == target)
        ]
        return out if limit is None else out[:limit]

    @property
    def last_seq(self) -> int:
        """Seq of the newest event (0 if none)."""
        return self._events[-1].seq if self._events else 0


class SimClock:
    """Device time in seconds: monotonic, running ``time_scale`` times faster than real."""

    def __init__(self, time_scale: float = 1.0) -> None:
        self._check(time_scale)
        self._scale = time_scale
        self._real0 = time.monotonic()
        self._sim0 = self._real0

    @property
    def time_scale(self) -> float:
        """How many device seconds pass per real second."""
        return self._scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        self._check(value)
        self._sim0 = self.now()
        self._real0 = time.monotonic()
        self._scale = value

    def now(self) -> float:
        """Current device time (seconds, arbitrary origin)."""
        return self._sim0 + (time.monotonic() - self._real0) * self._scale

    def real_seconds(self, device_seconds: float) -> float:
        """Real seconds that ``device_seconds`` of device time take at the current scale."""
        return device_seconds / self._scale

    @staticmethod
    def _check(value: float) -> None:
        if not 0 < value <= 1_000_000:
            raise ValueError(f"time_scale must be in (0, 1e6], got {value!r}")


class ManualClock(SimClock):
    """Device time that moves only when its owner moves it (benches, unit tests)."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__(1.0)
        self.t = float(start)

    def now(self) -> float:
        """The time the owner set."""
        return self.t
