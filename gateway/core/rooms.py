"""The room model: what the floor's devices last showed, room events on change, the snapshot.

Pure: fed driver observations with the wall time ``now``; returns effects (events). It
knows nothing of stays or alarms: the engine passes occupancy and call state in when it
builds the retained room snapshot (mqtt.md "Room state").

Change events (mqtt.md): ``door.opened``/``door.closed``, ``door.held_open`` after
``policy.door_held_open_s``, ``room.dnd``/``room.mur``/``room.keycard``/``room.window``
(``data.on``), ``lock.tamper`` (``data.on``), and ``device.fault`` when a thermostat
raises its sensor-fault bit. A value seen for the first time ever (no previous value
stored) is a baseline, not a change. ``device.online``/``device.offline``
are emitted on health changes, except the first "online" after start of a device that was
not known offline (an ordinary start is not news).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from drivers.observations import (
    DeviceFault,
    DeviceOffline,
    DeviceOnline,
    PointObserved,
    PointValue,
)
from gateway.core.effects import Emit
from gateway.core.roles import ROLES, ROOM_DEVICE_ROLES, DeviceRole

__all__ = ["RoomLayout", "Rooms"]

# role of a rio/lock point -> (event type, low value?) emitted with data.on on change
_FLAG_EVENTS: dict[tuple[str, str], str] = {
    (DeviceRole.RIO, "dnd"): "room.dnd",
    (DeviceRole.RIO, "mur"): "room.mur",
    (DeviceRole.RIO, "keycard"): "room.keycard",
    (DeviceRole.RIO, "window_open"): "room.window",
    (DeviceRole.LOCK, "tamper"): "lock.tamper",
}
_LIGHTS = ("entry", "main", "bedside", "bath")
# A thermostat's own fault bits: a rising edge is a device.fault for maintenance.
_FAULT_BITS = frozenset({"sensor_fault"})
_ARRAY_ROLES = frozenset(name for specs in ROLES.values() for name, s in specs.items() if s.array)


@dataclass(frozen=True, slots=True)
class RoomLayout:
    """A room as the model needs it: its id and the roles of its Modbus devices."""

    room: str
    roles: tuple[DeviceRole, ...]
    callpanel: str | None = None


class Rooms:
    """Last known values per device point, device health, door timers; snapshots."""

    def __init__(
        self,
        layout: Iterable[RoomLayout],
        *,
        door_held_open_s: float,
        stored: Mapping[tuple[str, str], object] | None = None,
    ) -> None:
        self._layout = {r.room: r for r in layout}
        self._held_after = timedelta(seconds=door_held_open_s)
        # (device, point key) -> value; point key is "name" or "name[i]" for arrays
        self._values: dict[tuple[str, str], PointValue] = {}
        self._previous: dict[tuple[str, str], object] = dict(stored or {})
        self._online: dict[str, bool] = {}
        self._was_offline: set[str] = set()
        self._door_open_since: dict[str, datetime] = {}
        self._held_reported: set[str] = set()

    # -- inputs -------------------------------------------------------------------------

    def observe(self, obs: PointObserved, now: datetime) -> list[Emit]:
        """Record a point's new value; the change events it causes."""
        key = (obs.device, point_key(obs.point, obs.index))
        before = self._values.get(key, self._previous.get(key))
        known_before = key in self._values or key in self._previous
        self._values[key] = obs.value
        self._previous[key] = obs.value
        if obs.room is None or not known_before or before == obs.value:
            if obs.room is not None and obs.role == DeviceRole.LOCK and obs.point == "door_open":
                self._track_door(obs.room, obs.value, now)
            return []
        room = obs.room
        if obs.role == DeviceRole.LOCK and obs.point == "door_open":
            self._track_door(room, obs.value, now)
            return [Emit("door.opened" if obs.value else "door.closed", room, {}, low_value=True)]
        if obs.role == DeviceRole.TSTAT and obs.point in _FAULT_BITS and obs.value is True:
            return [Emit("device.fault", room, {"device": obs.device, "code": obs.point})]
        event = _FLAG_EVENTS.get((obs.role, obs.point))
        if event is not None and isinstance(obs.value, bool):
            return [Emit(event, room, {"on": obs.value}, low_value=event != "lock.tamper")]
        return []

    def health(self, obs: DeviceOnline | DeviceOffline | DeviceFault) -> list[Emit]:
        """Device health changes: device.online/offline/fault events."""
        data: dict[str, object] = {"device": obs.device}
        if isinstance(obs, DeviceFault):
            return [Emit("device.fault", obs.room, {**data, "code": obs.code})]
        if isinstance(obs, DeviceOffline):
            self._online[obs.device] = False
            self._was_offline.add(obs.device)
            return [Emit("device.offline", obs.room, {**data, "reason": obs.reason})]
        self._online[obs.device] = True
        if obs.device in self._was_offline:
            self._was_offline.discard(obs.device)
            return [Emit("device.online", obs.room, data)]
        return []

    def tick(self, now: datetime) -> list[Emit]:
        """``door.held_open`` for doors open longer than the policy allows (once per opening)."""
        out: list[Emit] = []
        for room, since in self._door_open_since.items():
            if room not in self._held_reported and now - since >= self._held_after:
                self._held_reported.add(room)
                seconds = int((now - since).total_seconds())
                out.append(Emit("door.held_open", room, {"open_s": seconds}))
        return out

    def next_deadline(self) -> datetime | None:
        """When the next door.held_open falls due, if any."""
        due = [
            since + self._held_after
            for room, since in self._door_open_since.items()
            if room not in self._held_reported
        ]
        return min(due, default=None)

    # -- queries ------------------------------------------------------------------------

    def value(self, device: str, point: str, index: int = 0) -> PointValue:
        """The last value read from a device point this run (None if never, or offline)."""
        if not self._online.get(device, False):
            return None
        return self._values.get((device, point_key(point, index)))

    def last_known(self, device: str, point: str, index: int = 0) -> object:
        """The last value ever seen (this run or stored), whatever the device's health."""
        key = (device, point_key(point, index))
        return self._values.get(key, self._previous.get(key))

    def online(self, device: str) -> bool:
        """True once the device has answered and not gone offline since."""
        return self._online.get(device, False)

    def known_offline(self, device: str) -> bool:
        """True when the device went offline (not merely unheard since start)."""
        return self._online.get(device) is False

    def rooms(self) -> list[str]:
        """Every room id, in floor-file order."""
        return list(self._layout)

    def layout(self, room: str) -> RoomLayout:
        """The room's layout (KeyError for a room not on this floor)."""
        return self._layout[room]

    def snapshot(
        self, room: str, *, occupancy: str, stay_id: str | None, call: str, ts: str
    ) -> dict[str, object]:
        """The retained room state of mqtt.md; unknown values are None (JSON null).

        ``climate`` is None for a room without a thermostat and ``lights`` for a room
        without room I/O (call-panel rooms): there is nothing to know.
        """
        layout = self._layout[room]
        lock, tstat, rio = f"{room}/lock", f"{room}/tstat", f"{room}/rio"
        door = self.value(lock, "door_open")
        power = self.value(tstat, "power")
        devices = {str(role): _health(self.online(f"{room}/{role}")) for role in layout.roles}
        return {
            "schema": 1,
            "room": room,
            "ts": ts,
            "occupancy": occupancy,
            "stay_id": stay_id,
            "door": None if door is None else ("open" if door else "closed"),
            "deadbolt": _bool(self.value(lock, "deadbolt")),
            "lock_battery": self.value(lock, "battery"),
            "climate": None
            if DeviceRole.TSTAT not in layout.roles
            else {
                "temp_c": self.value(tstat, "room_temp"),
                "setpoint_c": self.value(tstat, "setpoint"),
                "mode": self.value(tstat, "mode"),
                "fan": self.value(tstat, "fan_speed"),
                "power": None if power is None else bool(power),
            },
            "lights": None
            if DeviceRole.RIO not in layout.roles
            else {name: _bool(self.value(rio, f"light_{name}")) for name in _LIGHTS},
            "keycard": _bool(self.value(rio, "keycard")),
            "dnd": _bool(self.value(rio, "dnd")),
            "mur": _bool(self.value(rio, "mur")),
            "window_open": _bool(self.value(rio, "window_open")),
            "call": call,
            "devices": devices,
        }

    def _track_door(self, room: str, value: PointValue, now: datetime) -> None:
        if value:
            self._door_open_since.setdefault(room, now)
        else:
            self._door_open_since.pop(room, None)
            self._held_reported.discard(room)


def point_key(point: str, index: int) -> str:
    """How a point element is named in caches: ``slot[3]`` for arrays, else its name."""
    return f"{point}[{index}]" if point in _ARRAY_ROLES else point


def layouts(rooms: Iterable[tuple[str, Iterable[str], str | None]]) -> list[RoomLayout]:
    """Room layouts from (room id, device roles, call panel bus) triples."""
    out = []
    for room, roles, panel in rooms:
        wanted = {DeviceRole(r) for r in roles}
        out.append(RoomLayout(room, tuple(r for r in ROOM_DEVICE_ROLES if r in wanted), panel))
    return out


def _health(online: bool) -> str:
    return "online" if online else "offline"


def _bool(value: PointValue) -> bool | None:
    return None if value is None else bool(value)
