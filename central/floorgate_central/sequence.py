"""Per-floor event bookkeeping (mqtt-api.md "Building the central side", step 3).

Events arrive at least once and in ``seq`` order: an ``id`` seen before is a duplicate
and is dropped; a ``seq`` beyond the last one + 1 reveals a gap (events lost between the
gateway and this client), remembered until the missing events arrive, if ever. ``seq``
starting again at 1 with ``gateway.started`` means the gateway's database was replaced:
counting starts again there. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

from floorgate_central.model import Event, SeqRange

__all__ = ["Accepted", "EventFilter", "Sequencer"]

REMEMBER_IDS = 100_000
"""Event ids remembered for duplicate detection (a floor's events over days)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A new event; ``gap``: the seqs found missing just before it (None: none)."""

    gap: SeqRange | None


class EventFilter:
    """Drops duplicates by ``id``, detects ``seq`` gaps and keeps the open ones."""

    def __init__(self, remember: int = REMEMBER_IDS, last_seq: int | None = None) -> None:
        """``last_seq``: the last seq already processed elsewhere (gaps count from it)."""
        self._remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._missing: list[SeqRange] = []
        self.last_seq: int | None = last_seq

    @property
    def missing(self) -> list[SeqRange]:
        """The seqs found missing and not received since, oldest first."""
        return list(self._missing)

    def accept(self, seq: int, event_id: str, type_: str) -> Accepted | None:
        """None for a duplicate; else the event is new (and recorded)."""
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            return None
        self._seen[event_id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        last = self.last_seq
        if last is None or (seq == 1 and type_ == "gateway.started" and not self._fills(1)):
            if last is not None:  # a new database: its seqs are not the old one's
                self._missing.clear()
            self.last_seq = seq
            return Accepted(None)
        if seq > last + 1:
            gap = SeqRange(last + 1, seq - 1)
            self._missing.append(gap)
            self.last_seq = seq
            return Accepted(gap)
        if seq == last + 1:
            self.last_seq = seq
        else:  # a late arrival: it may fill a gap seen before
            self._fill(seq)
        return Accepted(None)

    def forget(self, lost: SeqRange) -> None:
        """Stop waiting for the seqs of ``lost`` (nobody can deliver them any more)."""
        kept: list[SeqRange] = []
        for r in self._missing:
            if r.last < lost.first or lost.last < r.first:
                kept.append(r)
                continue
            if r.first < lost.first:
                kept.append(SeqRange(r.first, lost.first - 1))
            if lost.last < r.last:
                kept.append(SeqRange(lost.last + 1, r.last))
        self._missing = kept

    def _fills(self, seq: int) -> bool:
        return any(r.first <= seq <= r.last for r in self._missing)

    def _fill(self, seq: int) -> None:
        kept: list[SeqRange] = []
        for r in self._missing:
            if not r.first <= seq <= r.last:
                kept.append(r)
                continue
            if r.first < seq:
                kept.append(SeqRange(r.first, seq - 1))
            if seq < r.last:
                kept.append(SeqRange(seq + 1, r.last))
        self._missing = kept


class Sequencer:
    """Per-floor delivery in ``seq`` order: events behind an open gap are held until the
    gap is filled, declared lost (``lose``) or given up on (``release``).

    ``accept``, ``lose`` and ``release`` return the events now deliverable, in order;
    the first one after seqs that will not come carries them as ``gap``. Without
    ``hold`` every new event is deliverable at once (a gap marked on the event after it).
    """

    def __init__(
        self, *, hold: bool, remember: int = REMEMBER_IDS, last_seq: int | None = None
    ) -> None:
        self.filter = EventFilter(remember, last_seq)
        self.hold = hold
        self._next: int | None = None if last_seq is None else last_seq + 1
        self._held: dict[int, Event] = {}
        self._skipped: SeqRange | None = None  # given up or lost, to mark on the next event

    @property
    def held(self) -> int:
        """Events received but held behind a gap."""
        return len(self._held)

    def accept(self, event: Event) -> list[Event]:
        """A received event (duplicates give nothing)."""
        restart = self.filter.last_seq is not None and event.seq == 1
        restart = restart and event.type == "gateway.started"
        accepted = self.filter.accept(event.seq, event.id, event.type)
        if accepted is None:
            return []
        if restart and self.filter.last_seq == 1 and not self.filter.missing:
            out = self.release()  # a new database: what was held comes first
            self._next = 2
            return [*out, event]
        if self._next is None:
            self._next = event.seq + 1
            return [event]
        if not self.hold:
            self._next = max(self._next, event.seq + 1)
            return [dataclasses.replace(event, gap=accepted.gap) if accepted.gap else event]
        if event.seq < self._next:  # late, after a release: delivered out of order
            return [event]
        self._held[event.seq] = event
        return self._advance()

    def lose(self, lost: SeqRange) -> list[Event]:
        """``lost`` will never come (the gateway no longer stores it)."""
        self.filter.forget(lost)
        return self._advance()

    def release(self) -> list[Event]:
        """Stop holding: every held event, in order (seqs still missing marked as gaps)."""
        out: list[Event] = []
        for seq in sorted(self._held):
            assert self._next is not None
            if seq > self._next:
                self._skip(SeqRange(self._next, seq - 1))
            out.append(self._mark(self._held.pop(seq)))
            self._next = seq + 1
        return out

    def _advance(self) -> list[Event]:
        out: list[Event] = []
        missing = self.filter.missing
        while self._next is not None:
            if self._next in self._held:
                out.append(self._mark(self._held.pop(self._next)))
                self._next += 1
                continue
            if not self._held or any(r.first <= self._next <= r.last for r in missing):
                break
            # Neither held nor awaited: declared lost, up to what is held or awaited next.
            upto = min(
                [min(self._held) - 1, *(r.first - 1 for r in missing if r.first > self._next)]
            )
            self._skip(SeqRange(self._next, upto))
            self._next = upto + 1
        return out

    def _skip(self, r: SeqRange) -> None:
        if self._skipped is None:
            self._skipped = r
        else:
            self._skipped = SeqRange(self._skipped.first, r.last)

    def _mark(self, event: Event) -> Event:
        skipped, self._skipped = self._skipped, None
        return dataclasses.replace(event, gap=skipped)
