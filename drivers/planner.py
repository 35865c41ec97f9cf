"""Read planning: from the points wanted now, the fewest Modbus read requests.

Contiguous or near-contiguous addresses of one table are merged into one request within
the spec's limits (devices.md: "Max 32 registers or 64 bits per read request") and a
configurable gap (reading a few unwanted addresses is cheaper than another transaction).
A device that answers exception 02 to a merged read has holes in its map: the request is
split, and the boundaries between its items are remembered as barriers that later plans
never merge across.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from drivers.profile import MAX_READ_BITS, MAX_READ_REGISTERS, Point, Table


@dataclass(frozen=True, slots=True)
class Want:
    """One element of a point (``index`` > 0 only for arrays such as ``slot[i]``)."""

    point: Point
    index: int = 0

    @property
    def table(self) -> Table:
        """The point's table."""
        return self.point.table

    @property
    def start(self) -> int:
        """First address of this element."""
        return self.point.address + self.index * self.point.step

    @property
    def end(self) -> int:
        """Last address (inclusive) of this element."""
        return self.start + self.point.type.width - 1


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read transaction: ``count`` addresses of ``table`` from ``address``."""

    table: Table
    address: int
    count: int
    items: tuple[Want, ...]

    def slice_for(self, want: Want, raw: Sequence[int]) -> Sequence[int]:
        """The raw words or bits of one item within this request's answer."""
        offset = want.start - self.address
        return raw[offset : offset + want.point.type.width]


@dataclass(slots=True)
class ReadPlanner:
    """Merges wants into requests; remembers where a device refused merged reads."""

    max_registers: int = MAX_READ_REGISTERS
    max_bits: int = MAX_READ_BITS
    max_gap_registers: int = 4
    max_gap_bits: int = 16
    barriers: set[tuple[Table, int]] = field(default_factory=set)
    absent: set[tuple[Table, int]] = field(default_factory=set)  # optional, refused alone

    def plan(self, wants: Iterable[Want]) -> list[ReadRequest]:
        """The fewest requests covering every want, in table then address order."""
        by_table: dict[Table, list[Want]] = {}
        for w in wants:
            if (w.table, w.start) not in self.absent:
                by_table.setdefault(w.table, []).append(w)
        out: list[ReadRequest] = []
        for table in sorted(by_table, key=list(Table).index):
            out.extend(self._plan_table(table, sorted(by_table[table], key=lambda w: w.start)))
        return out

    def refused(self, request: ReadRequest) -> list[ReadRequest]:
        """Exception 02 on ``request``: never merge across its gaps again; the split plan."""
        items = sorted(request.items, key=lambda w: w.start)
        for before, after in itertools.pairwise(items):
            if after.start > before.end + 1:
                self.barriers.add((request.table, after.start))
        plan = self.plan(items)
        if plan == [request]:  # no hole to blame: a point itself is missing, read one by one
            self.barriers.update((request.table, w.start) for w in items[1:])
            plan = self.plan(items)
        return plan

    def lacks(self, want: Want) -> None:
        """The device refused this optional element alone: never plan it again."""
        self.absent.add((want.table, want.start))

    def _plan_table(self, table: Table, wants: list[Want]) -> list[ReadRequest]:
        out: list[ReadRequest] = []
        group: list[Want] = []
        lo = hi = 0
        for w in wants:
            if group and self._joins(table, (lo, hi), w):
                group.append(w)
                hi = max(hi, w.end)
                continue
            if group:
                out.append(ReadRequest(table, lo, hi - lo + 1, tuple(group)))
            group, lo, hi = [w], w.start, w.end
        if group:
            out.append(ReadRequest(table, lo, hi - lo + 1, tuple(group)))
        return out

    def _joins(self, table: Table, span: tuple[int, int], w: Want) -> bool:
        lo, hi = span
        limit = self.max_bits if table.is_bit else self.max_registers
        gap = self.max_gap_bits if table.is_bit else self.max_gap_registers
        if w.start - hi - 1 > gap or max(hi, w.end) - lo + 1 > limit:
            return False
        return not any((table, b) in self.barriers for b in range(hi + 1, w.start + 1))


def wants_for(points: Iterable[Point]) -> list[Want]:
    """Every element of these points."""
    return [Want(p, i) for p in points for i in range(p.count)]
