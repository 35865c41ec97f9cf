"""From what the core modules decide to what the engine does.

Authorisation speaks of rooms becoming occupied or vacant and of locks whose tokens
changed; the floor turns those into the rooms' energy modes (gateway.core.grms, whose
writes are each kind's ``room_writes``) and lock reconciliations, and marks the rooms
whose published state changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from gateway.core import grms
from gateway.core.authz import LocksChanged, RoomOccupied, RoomVacant
from gateway.core.effects import Effect, ReconcileLock, SaveAlarm, SaveStay
from gateway.core.state import Effects, FloorState

__all__ = ["Intent", "expand"]

Intent = Effect | RoomOccupied | RoomVacant | LocksChanged
"""What a core module may return: an effect, or a room or lock change to expand."""


def expand(floor: FloorState, intents: Iterable[Intent], now: datetime) -> Effects:
    """The effects of ``intents``, in order; rooms whose state changed are touched."""
    out: Effects = []
    for item in intents:
        match item:
            case RoomOccupied(room=room):
                out += grms.rental(floor, room, True, now)
            case RoomVacant(room=room):
                out += grms.rental(floor, room, False, now)
            case LocksChanged(rooms=rooms, routine=routine):
                out += [
                    ReconcileLock(r.room, "routine" if routine else "change")
                    for room in rooms
                    if (r := floor.layout.room(room)) is not None
                    and floor.layout.device(room, "lock") is not None
                ]
            case SaveStay(stay=stay):
                floor.touch(stay.room)
                out.append(item)
            case SaveAlarm(alarm=alarm):
                floor.touch(alarm.room)
                out.append(item)
            case _:
                out.append(item)
    return out
