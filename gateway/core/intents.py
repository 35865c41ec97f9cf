"""From what the core modules decide to what the engine does.

Authorisation speaks of rooms becoming occupied or vacant and of locks whose tokens
changed; the floor turns those into device writes (each kind's ``room_writes``) and lock
reconciliations, and marks the rooms whose published state changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.core.authz import LocksChanged, RoomOccupied, RoomVacant
from gateway.core.effects import Effect, ReconcileLock, SaveAlarm, SaveStay
from gateway.core.kinds.base import Occupied, Vacant
from gateway.core.state import Effects, FloorState

__all__ = ["Intent", "expand"]

Intent = Effect | RoomOccupied | RoomVacant | LocksChanged
"""What a core module may return: an effect, or a room or lock change to expand."""


def expand(floor: FloorState, intents: Iterable[Intent]) -> Effects:
    """The effects of ``intents``, in order; rooms whose state changed are touched."""
    out: Effects = []
    policy = floor.layout.policy
    for item in intents:
        match item:
            case RoomOccupied(room=room, setpoint_c=setpoint):
                wanted = policy.occupied_setpoint_c if setpoint is None else setpoint
                out += floor.room_writes(room, Occupied(wanted))
                floor.touch(room)
            case RoomVacant(room=room):
                out += floor.room_writes(room, Vacant(policy.vacant_setpoint_c))
                floor.touch(room)
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
