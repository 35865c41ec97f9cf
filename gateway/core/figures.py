"""The floor's state in figures: what metrics and health read of it, computed once, pure.

Open alarms by kind, how long the oldest unacknowledged one of each kind has waited, the
rooms by energy mode and the open technical alarms (the health's facts). Label values
are bounded: alarm kinds and energy modes are closed sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.core.alarms import AlarmKind, AlarmState
from gateway.core.energy import Mode
from gateway.core.state import FloorState

__all__ = ["ENERGY_UNKNOWN", "FloorFigures", "floor_figures"]

ENERGY_UNKNOWN = "unknown"
"""The energy mode of a room not yet known (just after a start, until its devices answer)."""


@dataclass(frozen=True, slots=True)
class FloorFigures:
    """Counts and ages of the floor state, for metrics and health."""

    alarms_open: Mapping[str, int]  # by kind: call, technical (both always present)
    unacknowledged_s: Mapping[str, float]  # by kind: oldest active alarm's age, 0 if none
    rooms: Mapping[str, int]  # by energy mode
    technical: tuple[tuple[str, str | None], ...]  # open technical: (point, room or panel)


def floor_figures(floor: FloorState, now: datetime) -> FloorFigures:
    """The figures of ``floor`` at ``now``."""
    kinds = [str(k) for k in AlarmKind]
    open_ = dict.fromkeys(kinds, 0)
    waiting = dict.fromkeys(kinds, 0.0)
    technical = []
    for alarm in floor.alarms.open_alarms():
        kind = str(alarm.kind)
        open_[kind] += 1
        if alarm.state is AlarmState.ACTIVE:
            age = max(0.0, (now - alarm.raised_at).total_seconds())
            waiting[kind] = max(waiting[kind], age)
        if alarm.kind is AlarmKind.TECHNICAL:
            technical.append((alarm.point, alarm.room or alarm.source))
    rooms = dict.fromkeys([*(str(m) for m in Mode), ENERGY_UNKNOWN], 0)
    for room in floor.layout.rooms:
        managed = floor.rooms.by_room.get(room.room)
        mode = None if managed is None else managed.energy.mode
        rooms[ENERGY_UNKNOWN if mode is None else str(mode)] += 1
    return FloorFigures(open_, waiting, rooms, tuple(technical))
