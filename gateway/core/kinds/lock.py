"""The door lock (FG-LOCK-1): the door, its slots, its access log, tamper.

The lock decides at the door from its credential slots; the engine keeps the slots equal
to what is authorised (a ``ReconcileLock`` on every change, read-back of the slots) and
follows the access log (``ReadAccessLog`` when its head moves). Here: the door's events
and the held-open timer, the tamper alarm. The door also tells the room's presence and
its first opening of a stay runs the welcome scene (gateway.core.grms).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from drivers.ids import DeviceRef, RoomId
from gateway.core.effects import Emit, ReadAccessLog, ReconcileLock
from gateway.core.kinds.base import DeviceKind, Observed, RoleSpec, ValueKind, Values
from gateway.core.state import Effects, FloorState

ACCESS_RESULTS = ("granted", "denied", "denied_deadbolt", "remote_unlock")
_B = RoleSpec(ValueKind.BOOL)


@dataclass(slots=True)
class Doors:
    """Open doors: since when, and whether ``door.held_open`` was reported for the opening."""

    open_since: dict[RoomId, datetime] = field(default_factory=dict)
    held_reported: set[RoomId] = field(default_factory=set)


class Lock(DeviceKind):
    """The door and its credentials."""

    role = "lock"
    order = 1
    fields_order = 0
    points: ClassVar[Mapping[str, RoleSpec]] = {
        "door_open": _B,
        "deadbolt": _B,
        "tamper": _B,
        "battery": RoleSpec(ValueKind.NUMBER),
        "log_head": RoleSpec(ValueKind.COUNT),
        "log_seq": RoleSpec(ValueKind.COUNT, array=True),
        "log_result": RoleSpec(ValueKind.ENUM, array=True, choices=ACCESS_RESULTS),
        "log_token": RoleSpec(ValueKind.TOKEN, array=True),
        "unlock": RoleSpec(ValueKind.COUNT, writable=True),
        "slot_count": RoleSpec(ValueKind.COUNT),
        "slot": RoleSpec(ValueKind.TOKEN, writable=True, array=True),
    }
    required = (("slot",), ("door_open",))

    def new_state(self) -> Doors:
        """No door known open."""
        return Doors()

    def observe(self, floor: FloorState, seen: Observed, now: datetime) -> Effects:
        """Door events and timer, welcome scene, tamper alarm, slots and log followed."""
        obs = seen.obs
        room = obs.room
        if room is None:
            return []
        match obs.point:
            case "door_open":
                return self._door(floor, seen, room, now)
            case "tamper" if isinstance(obs.value, bool):
                out: Effects = []
                if seen.changed:
                    out.append(Emit("lock.tamper", room, {"on": obs.value}))
                floor.alarms, effects = floor.alarms.tamper(room, obs.value, now)
                return [*out, *effects]
            case "slot":
                return [ReconcileLock(room, "verify")]
            case "log_head" if isinstance(obs.value, int):
                return [ReadAccessLog(obs.device)]
            case _:
                return []

    def came_online(self, floor: FloorState, device: DeviceRef, now: datetime) -> Effects:
        """A lock back may hold what is no longer authorised: read every slot, repair."""
        if device.room is None:
            return []
        return [ReconcileLock(device.room, "verify", read_slots=True)]

    def tick(self, floor: FloorState, now: datetime) -> Effects:
        """``door.held_open`` for doors open longer than the policy allows (once per opening)."""
        doors = _doors(floor)
        held_after = timedelta(seconds=floor.layout.policy.door_held_open_s)
        out: Effects = []
        for room, since in doors.open_since.items():
            if room not in doors.held_reported and now - since >= held_after:
                doors.held_reported.add(room)
                seconds = int((now - since).total_seconds())
                out.append(Emit("door.held_open", room, {"open_s": seconds}))
        return out

    def next_deadline(self, floor: FloorState) -> datetime | None:
        """When the next ``door.held_open`` falls due."""
        doors = _doors(floor)
        held_after = timedelta(seconds=floor.layout.policy.door_held_open_s)
        due = [
            since + held_after
            for room, since in doors.open_since.items()
            if room not in doors.held_reported
        ]
        return min(due, default=None)

    def room_fields(self, values: Values | None) -> dict[str, object]:
        """``door``, ``deadbolt``, ``lock_battery``: null for a room without a lock."""
        if values is None:
            return {"door": None, "deadbolt": None, "lock_battery": None}
        door = values("door_open")
        return {
            "door": None if door is None else ("open" if door else "closed"),
            "deadbolt": values.flag("deadbolt"),
            "lock_battery": values("battery"),
        }

    def _door(self, floor: FloorState, seen: Observed, room: RoomId, now: datetime) -> Effects:
        doors = _doors(floor)
        opened = bool(seen.obs.value)
        if opened:
            doors.open_since.setdefault(room, now)
        else:
            doors.open_since.pop(room, None)
            doors.held_reported.discard(room)
        out: Effects = []
        if seen.changed:
            out.append(Emit("door.opened" if opened else "door.closed", room, {}, low_value=True))
        return out


def _doors(floor: FloorState) -> Doors:
    doors = floor.kinds["lock"]
    assert isinstance(doors, Doors)
    return doors


KIND = Lock()
