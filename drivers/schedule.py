"""What a bus does next: pure scheduling decisions with the clock as an argument.

A bus owner keeps one ``Schedule`` of entries, each a unit of work it may start:

- a **poll** of one device's points of one class (and interval), due every ``period_s``;
- a **probe** of an OFFLINE device (one cheap read), due when its backoff says;
- a **request** (a write, an on-demand read) queued by a caller at a priority;
- a **scan** step (floorctl scan), the lowest priority of all.

``pick(now)`` returns the best entry that is due and not already running. Order, first
to last (emergency > lock > room > slow; overdue first within a class):

    emergency requests, emergency polls, lock requests, lock polls, room requests,
    room polls, slow requests, slow polls and probes, scans

and within one level the entry most overdue relative to its period first, then the oldest.
A job of several transactions (a lock's 32 slots are four reads) asks ``pick(now,
above=level)`` between them, so an emergency poll never waits for more than one
transaction. A poll still running when it falls due again is skipped, not stacked; one
that missed a whole period starts a new phase instead of catching up. Polls of a device
that is OFFLINE are suspended: only its probe runs, when due.

On a saturated bus strict priority would starve the lower classes for ever (the bench
floor's RS-485 lines carry about 1.3x what their profiles ask for). So an entry waiting
longer than its own period is *starving* and competes at the lock-poll level by how
overdue it is; every class then slows down in proportion while emergency polls keep their
interval. As a last resort an entry waiting ``DESPERATE`` periods competes with emergency
polls, so nothing waits for ever whatever the load. A lock request (a slot write: an
authorisation change) waiting longer than ``LOCK_PATIENCE_S`` joins the emergency requests, so a
checkout is never held back for seconds behind polls; it costs one transaction.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from drivers.profile import PollClass

__all__ = ["Entry", "Kind", "Schedule", "stagger"]

K = TypeVar("K", bound=Hashable)

STAGGER_MAX_S = 1.0  # first polls of a class are spread over min(interval, this)
REQUEST_PATIENCE_S = 1.0  # a request or scan step waiting this long is starving
LOCK_PATIENCE_S = 0.3  # a lock write waiting this long (one emergency cycle) jumps ahead
DESPERATE = 8.0  # periods of waiting after which an entry competes with emergency polls

_REQUEST_LEVEL = {
    PollClass.EMERGENCY: 0,
    PollClass.LOCK: 2,
    PollClass.ROOM: 4,
    PollClass.SLOW: 6,
    PollClass.NEVER: 6,
}
_POLL_LEVEL = {
    PollClass.EMERGENCY: 1,
    PollClass.LOCK: 3,
    PollClass.ROOM: 5,
    PollClass.SLOW: 7,
    PollClass.NEVER: 7,
}
_STARVING_LEVEL = _POLL_LEVEL[PollClass.LOCK]
_DESPERATE_LEVEL = _POLL_LEVEL[PollClass.EMERGENCY]
_SCAN_LEVEL = 8


class Kind(enum.StrEnum):
    """What an entry is."""

    POLL = "poll"
    PROBE = "probe"
    REQUEST = "request"
    SCAN = "scan"


@dataclass(slots=True)
class Entry(Generic[K]):
    """One unit of work and its timing (mutable state owned by the Schedule)."""

    key: K
    kind: Kind
    poll: PollClass
    period_s: float  # poll interval, probe backoff delay, or request/scan patience
    due_at: float
    device: str | None
    seq: int
    in_flight: bool = False
    version: int = 0  # bumped whenever its place in the heaps changes

    def rank(self, now: float) -> tuple[int, float, int]:
        """Sort key at ``now``: lower goes first."""
        lateness = now - self.due_at
        ratio = lateness / self.period_s if self.period_s > 0 else lateness
        if self.kind is Kind.REQUEST:
            level = _REQUEST_LEVEL[self.poll]
        elif self.kind is Kind.SCAN:
            level = _SCAN_LEVEL
        else:
            level = _POLL_LEVEL[self.poll]
        if (
            self.kind is Kind.REQUEST
            and self.poll is PollClass.LOCK
            and lateness >= LOCK_PATIENCE_S
        ):
            # A lock write (an authorisation change) kept waiting past its patience on a
            # saturated line goes right after the emergency requests, before the emergency
            # polls: it costs them one transaction, and a checkout is not held back for
            # seconds behind polls.
            return _REQUEST_LEVEL[PollClass.EMERGENCY], math.inf, self.seq
        if level > _STARVING_LEVEL and ratio >= 1.0:
            level = _STARVING_LEVEL
        if level > _DESPERATE_LEVEL and ratio >= DESPERATE:
            level = _DESPERATE_LEVEL
        return level, -ratio, self.seq


class Schedule(Generic[K]):
    """The entries of one bus and the decision of what runs next.

    Waiting entries sit in heaps by due time, one heap per (kind, class, period): within
    one heap the earliest due is also the most overdue relative to the period, so ``pick``
    only ranks the top of each heap (a handful) rather than every entry of the bus.
    """

    def __init__(self) -> None:
        """An empty schedule."""
        self._entries: dict[K, Entry[K]] = {}
        self._heaps: dict[tuple[Kind, PollClass, float], list[tuple[float, int, int, K]]] = {}
        self._suspended: set[str] = set()
        self._by_device: dict[str, set[K]] = {}  # polls per device
        self._levels: dict[K, int] = {}  # running entries: the level they were picked at
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def entries(self) -> Iterator[Entry[K]]:
        """Every entry (for inspection and tests)."""
        return iter(self._entries.values())

    def entry(self, key: K) -> Entry[K]:
        """The entry with this key (KeyError if none)."""
        return self._entries[key]

    def add_poll(
        self, key: K, device: str, poll: PollClass, interval_s: float, first_due: float
    ) -> None:
        """A recurring poll, first due at ``first_due`` (see ``stagger``)."""
        if interval_s <= 0:
            raise ValueError(f"interval {interval_s} s must be positive")
        self._add(Entry(key, Kind.POLL, poll, interval_s, first_due, device, next(self._seq)))
        self._by_device.setdefault(device, set()).add(key)

    def add_request(
        self,
        key: K,
        priority: PollClass,
        now: float,
        *,
        device: str | None = None,
        kind: Kind = Kind.REQUEST,
        patience_s: float = REQUEST_PATIENCE_S,
    ) -> None:
        """A one-shot entry (request or scan step), due now; removed by ``done``."""
        if kind not in (Kind.REQUEST, Kind.SCAN):
            raise ValueError(f"a one-shot entry is a request or a scan step, not {kind}")
        self._add(Entry(key, kind, priority, patience_s, now, device, next(self._seq)))

    def suspend(self, device: str, probe_key: K, probe_at: float, delay_s: float) -> None:
        """The device is OFFLINE: stop its polls; probe it once at ``probe_at``."""
        self._suspended.add(device)
        old = self._entries.get(probe_key)
        if old is not None:
            if old.in_flight:
                return  # the running probe's outcome decides the next one
            self.discard(probe_key)
        probe = Entry(
            probe_key, Kind.PROBE, PollClass.SLOW, max(delay_s, 1e-3), probe_at, device,
            next(self._seq),
        )  # fmt: skip
        self._add(probe)

    def resume(self, device: str, probe_key: K, now: float) -> None:
        """The device answered: drop its probe; its polls are due now (re-observe all)."""
        self._suspended.discard(device)
        probe = self._entries.get(probe_key)
        if probe is not None and not probe.in_flight:
            self.discard(probe_key)
        for key in self._by_device.get(device, ()):
            e = self._entries[key]
            if not e.in_flight:
                e.due_at = min(e.due_at, now)
                self._push(e)

    def suspended(self, device: str) -> bool:
        """True while the device's polls are suspended (it is OFFLINE)."""
        return device in self._suspended

    def pick(self, now: float, *, above: int | None = None) -> K | None:
        """The best due entry not running, now marked running (None if nothing is due).

        With ``above``, only an entry of a better level than that (a level as returned by
        ``level``): a long job asks this between its transactions, to let urgent work in.
        """
        return self._pick(now, above)[0]

    def pick_or_wait(self, now: float) -> tuple[K | None, float | None]:
        """``pick(now)``; when nothing is due, also ``next_due()``, from the same pass over
        the heaps (a bus owner asks between almost every two transactions)."""
        return self._pick(now, None)

    def _pick(self, now: float, above: int | None) -> tuple[K | None, float | None]:
        best: Entry[K] | None = None
        best_rank: tuple[int, float, int] | None = None
        soonest: float | None = None  # of the entries not due yet
        for e in self._tops():
            if e.due_at > now:
                if soonest is None or e.due_at < soonest:
                    soonest = e.due_at
                continue
            r = e.rank(now)
            if best_rank is None or r < best_rank:
                best, best_rank = e, r
        if best is None or best_rank is None:
            return None, soonest  # nothing due: the soonest top is the soonest entry
        if above is not None and best_rank[0] >= above:
            return None, None
        heapq.heappop(self._heaps[_bucket(best)])
        best.in_flight = True
        self._levels[best.key] = best_rank[0]
        if best.kind is Kind.POLL:
            nxt = best.due_at + best.period_s
            # Missed a whole period: start a new phase rather than catch up (no stacking).
            best.due_at = nxt if nxt > now else now + best.period_s
        return best.key, None

    def level(self, key: K) -> int:
        """The level a running entry was picked at (0 = emergency requests, first)."""
        return self._levels[key]

    def done(self, key: K) -> None:
        """The entry finished: a poll waits for its next due time; one-shots are removed."""
        self._levels.pop(key, None)
        e = self._entries.get(key)
        if e is None:
            return
        e.in_flight = False
        if e.kind is Kind.POLL:
            self._push(e)
        else:
            self.discard(key)

    def discard(self, key: K) -> None:
        """Remove an entry (a cancelled request); no-op if absent."""
        e = self._entries.pop(key, None)
        if e is not None:
            e.version += 1  # its heap item is stale from now on
            if e.device is not None and e.kind is Kind.POLL:
                self._by_device[e.device].discard(key)

    def next_due(self) -> float | None:
        """When the earliest entry that is not running falls due (None if none)."""
        return min((e.due_at for e in self._tops()), default=None)

    def _tops(self) -> Iterator[Entry[K]]:
        """The earliest valid waiting entry of every heap (stale items dropped on the way)."""
        empty = []
        for bucket, heap in self._heaps.items():
            while heap:
                _, _, version, key = heap[0]
                e = self._entries.get(key)
                if e is not None and e.version == version and not e.in_flight:
                    if e.kind is Kind.POLL and e.device in self._suspended:
                        e.version += 1  # parked until resume() pushes it again
                    else:
                        yield e
                        break
                heapq.heappop(heap)
            if not heap:
                empty.append(bucket)
        for bucket in empty:
            if not self._heaps.get(bucket, True):
                del self._heaps[bucket]

    def _add(self, e: Entry[K]) -> None:
        if e.key in self._entries:
            raise ValueError(f"entry {e.key!r} already scheduled")
        self._entries[e.key] = e
        self._push(e)

    def _push(self, e: Entry[K]) -> None:
        e.version += 1
        heap = self._heaps.setdefault(_bucket(e), [])
        heapq.heappush(heap, (e.due_at, e.seq, e.version, e.key))


def _bucket(e: Entry[Any]) -> tuple[Kind, PollClass, float]:
    return e.kind, e.poll, e.period_s


def stagger(
    count: int, interval_s: float, now: float, window_s: float = STAGGER_MAX_S
) -> list[float]:
    """First due times of ``count`` polls of one interval, spread evenly from ``now``."""
    span = min(interval_s, window_s)
    return [now + span * i / count for i in range(count)]
