"""The door lock (FG-LOCK-1): the door, its slots, its access log, tamper, its battery.

The lock decides at the door from its credential slots; the engine keeps the slots equal
to what is authorised (a ``ReconcileLock`` on every change, read-back of the slots) and
follows the access log (``ReadAccessLog`` when its head moves). Here: the door's events
and the held-open timer, the tamper alarm, and the battery. The door also tells the
room's presence and its first opening of a stay runs the welcome scene (gateway.core.grms).

operations.md: "``door.held_open`` after ``door_held_open_s`` (default 60) when the last
opening was a guest key or from inside, ``door_held_open_staff_s`` (default 120) after a
staff key". The access log tells a staff key from a guest key by its token; its entry is
read just after the door is seen open (or, rarely, just before), so an opening counts as
a staff one when a staff key was granted within ``STAFF_GRANT_S`` before it or while it
is open. mqtt.md ``lock.battery``: "``low`` (<= 20) or ``critical`` (<= 10), on entering a
level (also when the first reading after start is already in one)": announced when the
level gets worse (ok to low, low or ok to critical), not on the way back. A level is left
only once the battery reads ``BATTERY_HYSTERESIS`` above its limit, so a reading that
wavers on a limit does not announce it again and again. operations.md: "a battery value not read
for 24 h is null and flagged stale": while the lock answers its battery is read with its
polls; ``battery`` says how old the last value is once it does not.
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
STAFF_GRANT_S = 10.0  # a staff key granted this long before the door opens opened it
BATTERY_LEVELS = (("critical", 10), ("low", 20))  # mqtt.md lock.battery, worst first
BATTERY_HYSTERESIS = 2  # percent above a limit before its level is left
BATTERY_STALE = timedelta(hours=24)
_RANK = {"ok": 0, "low": 1, "critical": 2}
_B = RoleSpec(ValueKind.BOOL)


@dataclass(slots=True)
class Doors:
    """The locks' own state: open doors (since when, by whom, held-open reported), the
    last staff grant per door, and each battery's level and when it was last read."""

    open_since: dict[RoomId, datetime] = field(default_factory=dict)
    held_reported: set[RoomId] = field(default_factory=set)
    staff_open: set[RoomId] = field(default_factory=set)  # opened by a staff key
    staff_granted: dict[RoomId, datetime] = field(default_factory=dict)
    battery_level: dict[RoomId, str] = field(default_factory=dict)  # ok | low | critical
    battery_read: dict[RoomId, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Battery:
    """A lock's battery as known now: the percentage (None when unknown or stale)."""

    percent: int | None
    level: str | None  # ok | low | critical; None before the first reading
    stale: bool  # a value exists but was not read for 24 h (or not since start)


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
    fields: ClassVar[Mapping[str, str]] = {
        "door_open": "door",
        "deadbolt": "deadbolt",
        "battery": "lock_battery",
    }

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
            case "battery" if isinstance(obs.value, int | float) and not isinstance(
                obs.value, bool
            ):
                return _battery(floor, room, int(obs.value), now)
            case "slot":
                return [ReconcileLock(room, "verify")]
            case "log_head" if isinstance(obs.value, int):
                return [ReadAccessLog(obs.device)]
            case _:
                return []

    def went_offline(self, floor: FloorState, device: DeviceRef, now: datetime) -> Effects:
        """Its battery was being read until now: its age counts from here."""
        room = device.room
        if room is not None and room in _doors(floor).battery_level:
            _doors(floor).battery_read[room] = now
        return []

    def came_online(self, floor: FloorState, device: DeviceRef, now: datetime) -> Effects:
        """A lock back may hold what is no longer authorised: read every slot, repair."""
        if device.room is None:
            return []
        return [ReconcileLock(device.room, "verify", read_slots=True)]

    def tick(self, floor: FloorState, now: datetime) -> Effects:
        """``door.held_open`` for doors open longer than the policy allows (once per opening)."""
        doors = _doors(floor)
        out: Effects = []
        for room, since in doors.open_since.items():
            due = since + _held_after(floor, room)
            if room not in doors.held_reported and now >= due:
                doors.held_reported.add(room)
                seconds = int((now - since).total_seconds())
                opening = "staff" if room in doors.staff_open else "guest"
                data = {"open_s": seconds, "opening": opening}
                out.append(Emit("door.held_open", room, data))
        return out

    def next_deadline(self, floor: FloorState) -> datetime | None:
        """When the next ``door.held_open`` falls due."""
        doors = _doors(floor)
        due = [
            since + _held_after(floor, room)
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
            if room not in doors.open_since:
                doors.open_since[room] = now
                granted = doors.staff_granted.get(room)
                if granted is not None and (now - granted).total_seconds() <= STAFF_GRANT_S:
                    doors.staff_open.add(room)
        else:
            doors.open_since.pop(room, None)
            doors.held_reported.discard(room)
            doors.staff_open.discard(room)
        out: Effects = []
        if seen.changed:
            out.append(Emit("door.opened" if opened else "door.closed", room, {}, low_value=True))
        return out


def key_granted(floor: FloorState, room: str, *, staff: bool, at: datetime) -> None:
    """The access log says a key was granted at the door at ``at``: a staff key makes the
    opening (the one under way, or the one about to be seen) a staff one."""
    if not staff:
        return
    doors = _doors(floor)
    r = RoomId(room)
    doors.staff_granted[r] = at
    if r in doors.open_since:
        doors.staff_open.add(r)


def battery(floor: FloorState, room: str, now: datetime) -> Battery:
    """The lock's battery now: a value not read for 24 h (or not since start) is stale."""
    doors = _doors(floor)
    device = DeviceRef.of(room, "lock")
    value = floor.points.last_known(device, "battery")
    percent = int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    r = RoomId(room)
    level = doors.battery_level.get(r)
    if percent is None:
        return Battery(None, level, stale=False)
    if floor.points.online(device) and level is not None:
        return Battery(percent, level, stale=False)
    read = doors.battery_read.get(r)
    if read is None or now - read >= BATTERY_STALE:
        return Battery(None, level, stale=True)
    return Battery(percent, level, stale=False)


def _battery(floor: FloorState, room: RoomId, percent: int, now: datetime) -> Effects:
    """Track the battery's level; ``lock.battery`` on entering ``low`` or ``critical``."""
    doors = _doors(floor)
    doors.battery_read[room] = now
    before = doors.battery_level.get(room)
    level = _level(percent, before)
    doors.battery_level[room] = level
    if _RANK[level] <= _RANK.get(before or "ok", 0):
        return []  # better, or the same: nothing entered
    return [Emit("lock.battery", room, {"percent": percent, "level": level})]


def _level(percent: int, before: str | None) -> str:
    """The battery's level: the worst whose limit it is at or under; a level already held is
    kept until the reading is ``BATTERY_HYSTERESIS`` above its limit."""
    for name, limit in BATTERY_LEVELS:
        if percent <= limit or (before == name and percent <= limit + BATTERY_HYSTERESIS):
            return name
    return "ok"


def _held_after(floor: FloorState, room: RoomId) -> timedelta:
    policy = floor.layout.policy
    staff = room in _doors(floor).staff_open
    return timedelta(seconds=policy.door_held_open_staff_s if staff else policy.door_held_open_s)


def _doors(floor: FloorState) -> Doors:
    doors = floor.kinds["lock"]
    assert isinstance(doors, Doors)
    return doors


KIND = Lock()
