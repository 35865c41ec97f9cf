"""``command.rejected`` under a flood of refused commands (mqtt.md v2), pure.

Up to ``INDIVIDUAL`` refusals in any ``WINDOW`` each get their own ``command.rejected``
event (``data.id``, ``data.code``), as in v1. Beyond that, refusals are counted per code,
and one ``command.rejected`` per code (``data.code``, ``data.count``, no ``data.id``) is
emitted ``WINDOW`` after the first one counted: a peer sending garbage with readable ids
at 1 000/s adds a few events per 10 s to the outbox, not 1 000 per second. Replies are not
this module's business: every refused command with a readable id still gets its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from gateway.core.effects import Emit

__all__ = ["INDIVIDUAL", "WINDOW", "Rejections"]

INDIVIDUAL = 20  # mqtt.md v2: up to 20 refusals in any 10 s have their own event
WINDOW = timedelta(seconds=10)
EVENT = "command.rejected"


@dataclass(frozen=True, slots=True)
class Counted:
    """Refusals of one code beyond the individual limit, counted since ``first``."""

    code: str
    count: int
    first: datetime


@dataclass(frozen=True, slots=True)
class Rejections:
    """The floor's recent refusals: operations return the next value and the events due."""

    recent: tuple[datetime, ...] = ()  # when the individual events of the last WINDOW were
    counted: tuple[Counted, ...] = ()  # per code, in order of their first refusal

    def refused(self, command_id: str, code: str, now: datetime) -> tuple[Rejections, list[Emit]]:
        """A command was refused at ``now``: its own event, or one more counted."""
        cur, emitted = self.due(now)
        recent = tuple(t for t in cur.recent if t > now - WINDOW)
        if len(recent) < INDIVIDUAL:
            own = Emit(EVENT, None, {"id": command_id, "code": code})
            return replace(cur, recent=(*recent, now)), [*emitted, own]
        counted = list(cur.counted)
        index = next((i for i, c in enumerate(counted) if c.code == code), None)
        if index is None:
            counted.append(Counted(code, 1, now))
        else:
            counted[index] = replace(counted[index], count=counted[index].count + 1)
        return replace(cur, recent=recent, counted=tuple(counted)), emitted

    def due(self, now: datetime) -> tuple[Rejections, list[Emit]]:
        """The counted events whose window has ended by ``now``."""
        ended = [c for c in self.counted if c.first + WINDOW <= now]
        if not ended:
            return self, []
        events = [Emit(EVENT, None, {"code": c.code, "count": c.count}) for c in ended]
        left = tuple(c for c in self.counted if c.first + WINDOW > now)
        return replace(self, counted=left), events

    def next_deadline(self) -> datetime | None:
        """When ``due`` next has an event to emit (None: nothing counted)."""
        return min((c.first + WINDOW for c in self.counted), default=None)
