"""Per-floor event bookkeeping (mqtt-api.md "Building the central side", step 3).

Events arrive at least once and in ``seq`` order: an ``id`` seen before is a duplicate
and is dropped; a ``seq`` beyond the last one + 1 reveals a gap (events lost between the
gateway and this client), remembered until the missing events arrive, if ever. ``seq``
starting again at 1 with ``gateway.started`` means the gateway's database was replaced:
counting starts again there. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from floorgate_central.model import SeqRange

__all__ = ["Accepted", "EventFilter"]

REMEMBER_IDS = 100_000
"""Event ids remembered for duplicate detection (a floor's events over days)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A new event; ``gap``: the seqs found missing just before it (None: none)."""

    gap: SeqRange | None


class EventFilter:
    """Drops duplicates by ``id``, detects ``seq`` gaps and keeps the open ones."""

    def __init__(self, remember: int = REMEMBER_IDS) -> None:
        self._remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._missing: list[SeqRange] = []
        self.last_seq: int | None = None

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
