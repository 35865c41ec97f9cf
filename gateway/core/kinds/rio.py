"""The room I/O module (FG-RIO-1): lights, the call lamps, call points and room inputs.

Its call counters raise calls and staff presence resolves them (gateway.core.alarms); the
counters are saved with the decision they cause, so a press made while the gateway was down
is raised on the first read after start. A room I/O that goes offline makes its call
points unreachable (a technical alarm). Switches (DND, MUR, key card, window) become room
events on change; its motion sensor, key card, window, staff key and MUR switch feed the
room's presence, energy and service (gateway.core.grms); an energy mode that says so
switches the lights off; the first entry of a stay gets the welcome scene.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import ClassVar

from drivers.ids import DeviceRef
from drivers.profile import PollClass
from gateway.core.effects import Emit, SaveCounter, WritePoint
from gateway.core.kinds.base import (
    DeviceKind,
    EnergyMode,
    LightsOff,
    Observed,
    RoleSpec,
    RoomChange,
    ValueKind,
    Values,
    Welcome,
)
from gateway.core.state import Effects, FloorState

_B = RoleSpec(ValueKind.BOOL)
_BW = RoleSpec(ValueKind.BOOL, writable=True)
LIGHTS = ("entry", "main", "bedside", "bath")
COUNTERS = frozenset({"bath_count", "bed_count", "staff_count"})
# switch -> the event its change emits (data.on); all may be shed at the outbox's disk cap
SWITCH_EVENTS = {
    "dnd": "room.dnd",
    "mur": "room.mur",
    "keycard": "room.keycard",
    "window_open": "room.window",
}


class RoomIO(DeviceKind):
    """Lights, call points and room inputs."""

    role = "rio"
    order = 2
    fields_order = 2
    points: ClassVar[Mapping[str, RoleSpec]] = {
        **{f"light_{c}": _BW for c in LIGHTS},
        "dome_lamp": _BW,
        "reassure_lamp": _BW,
        "call_bath": _B,
        "call_bed": _B,
        "keycard": _B,
        "dnd": _B,
        "mur": _B,
        "window_open": _B,
        "staff_present": _B,
        "motion": _B,  # v1.1 presence sensor: held 30 s after movement
        "motion_count": RoleSpec(ValueKind.COUNT),  # v1.1: +1 per detection, wrapping
        "bath_count": RoleSpec(ValueKind.COUNT),
        "staff_count": RoleSpec(ValueKind.COUNT),
        "bed_count": RoleSpec(ValueKind.COUNT),
    }
    required = (("bath_count", "bed_count"), ("staff_count",), ("dome_lamp",))
    fields: ClassVar[Mapping[str, str]] = {
        **{f"light_{c}": f"lights.{c}" for c in LIGHTS},
        "keycard": "keycard",
        "dnd": "dnd",
        "mur": "mur",
        "window_open": "window_open",
        # the call counters: a call that could not be read is not "idle" for sure
        "bath_count": "call",
        "bed_count": "call",
    }
    saved_with_decision = COUNTERS

    def observe(self, floor: FloorState, seen: Observed, now: datetime) -> Effects:
        """Counters raise and resolve calls; switches become events on change."""
        obs = seen.obs
        room = obs.room
        if room is None:
            return []
        if obs.point in COUNTERS and isinstance(obs.value, int):
            old = seen.before if isinstance(seen.before, int) and seen.known_before else None
            floor.alarms, effects = floor.alarms.counter(room, obs.point, old, obs.value, now)
            return [*effects, SaveCounter(obs.device, obs.point, obs.value)]
        event = SWITCH_EVENTS.get(obs.point)
        if event is not None and seen.changed and isinstance(obs.value, bool):
            return [Emit(event, room, {"on": obs.value}, low_value=True)]
        return []

    def went_offline(self, floor: FloorState, device: DeviceRef, now: datetime) -> Effects:
        """Its call points can no longer be heard: a technical alarm."""
        if device.room is None:
            return []
        floor.alarms, effects = floor.alarms.call_point_unreachable(device.room, now)
        return list(effects)

    def came_online(self, floor: FloorState, device: DeviceRef, now: datetime) -> Effects:
        """Its call points are heard again."""
        if device.room is None:
            return []
        floor.alarms, effects = floor.alarms.call_point_reachable(device.room, now)
        return list(effects)

    def room_fields(self, values: Values | None) -> dict[str, object]:
        """``lights`` (null without a room I/O) and the room's switches."""
        if values is None:
            return {"lights": None, "keycard": None, "dnd": None, "mur": None, "window_open": None}
        return {
            "lights": {c: values.flag(f"light_{c}") for c in LIGHTS},
            "keycard": values.flag("keycard"),
            "dnd": values.flag("dnd"),
            "mur": values.flag("mur"),
            "window_open": values.flag("window_open"),
        }

    def room_writes(self, device: DeviceRef, change: RoomChange) -> list[WritePoint]:
        """Lights off with a mode that says so (or an absent guest's delay); the welcome
        scene: its circuits on, the others off."""
        match change:
            case EnergyMode(lights_off=True) | LightsOff():
                return [_w(device, f"light_{c}", False) for c in LIGHTS]
            case Welcome(lights=lights):
                return [_w(device, f"light_{c}", c in lights) for c in LIGHTS]
            case _:
                return []


def _w(device: DeviceRef, point: str, value: bool) -> WritePoint:
    return WritePoint(device, point, value, priority=PollClass.ROOM)


KIND = RoomIO()
