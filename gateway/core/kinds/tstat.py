"""The room thermostat / fan-coil controller (FG-TSTAT-1 and profiles like it).

Shows the room's climate; a rising sensor-fault bit is a ``device.fault`` for maintenance;
each energy mode (gateway.core.energy) sets its setpoint, keypad lock and power here. Its
run time, fan and temperature feed the savings ledger and the policy's cooling/heating.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import ClassVar

from drivers.ids import DeviceRef
from drivers.profile import PollClass
from gateway.core.effects import Emit, WritePoint
from gateway.core.kinds.base import (
    DeviceKind,
    EnergyMode,
    Observed,
    RoleSpec,
    RoomChange,
    ValueKind,
    Values,
)
from gateway.core.state import Effects, FloorState

MODES = ("auto", "cool", "heat", "fan_only")
FANS = ("auto", "low", "medium", "high")
_B = RoleSpec(ValueKind.BOOL)
_BW = RoleSpec(ValueKind.BOOL, writable=True)
# A thermostat's own fault bits: a rising edge is a device.fault for maintenance.
FAULT_BITS = frozenset({"sensor_fault"})


class Thermostat(DeviceKind):
    """Room climate."""

    role = "tstat"
    order = 0
    fields_order = 1
    points: ClassVar[Mapping[str, RoleSpec]] = {
        "room_temp": RoleSpec(ValueKind.NUMBER),
        "humidity": RoleSpec(ValueKind.NUMBER),
        "fan_state": RoleSpec(ValueKind.COUNT),
        "run_minutes": RoleSpec(ValueKind.COUNT),  # v1.1: fan-coil run time, wrapping
        "sensor_fault": _B,
        "frost_protection": _B,
        "power": _BW,
        "mode": RoleSpec(ValueKind.ENUM, writable=True, choices=MODES),
        "setpoint": RoleSpec(ValueKind.NUMBER, writable=True),
        "fan_speed": RoleSpec(ValueKind.ENUM, writable=True, choices=FANS),
        "setpoint_min": RoleSpec(ValueKind.NUMBER, writable=True),
        "setpoint_max": RoleSpec(ValueKind.NUMBER, writable=True),
        "keypad_lock": _BW,
        # Thermostats with an occupancy-style operating mode (e.g. Siemens comfort/economy).
        "operating_mode": RoleSpec(
            ValueKind.ENUM, writable=True, choices=("comfort", "economy", "protection")
        ),
    }
    required = (("room_temp",), ("setpoint",))
    fields: ClassVar[Mapping[str, str]] = {
        "room_temp": "climate.temp_c",
        "setpoint": "climate.setpoint_c",
        "mode": "climate.mode",
        "fan_speed": "climate.fan",
        "power": "climate.power",
    }

    def observe(self, floor: FloorState, seen: Observed, now: datetime) -> Effects:
        """A sensor fault raised is reported once per rising edge."""
        obs = seen.obs
        if seen.changed and obs.point in FAULT_BITS and obs.value is True:
            return [Emit("device.fault", obs.room, {"device": str(obs.device), "code": obs.point})]
        return []

    def room_fields(self, values: Values | None) -> dict[str, object]:
        """``climate``: null for a room without a thermostat."""
        if values is None:
            return {"climate": None}
        return {
            "climate": {
                "temp_c": values("room_temp"),
                "setpoint_c": values("setpoint"),
                "mode": values("mode"),
                "fan": values("fan_speed"),
                "power": values.flag("power"),
            }
        }

    def room_writes(self, device: DeviceRef, change: RoomChange) -> list[WritePoint]:
        """An energy mode: its thermostat mode, setpoint, keypad lock and power, each when
        the mode sets it."""
        match change:
            case EnergyMode(setpoint_c=setpoint, keypad_locked=locked, power=power):
                out = []
                if change.tstat_mode is not None:
                    out.append(_w(device, "mode", change.tstat_mode))
                if setpoint is not None:
                    out.append(_w(device, "setpoint", float(setpoint)))
                if locked is not None:
                    out.append(_w(device, "keypad_lock", int(locked)))
                if power is not None:
                    out.append(_w(device, "power", int(power)))
                return out
            case _:
                return []


def _w(device: DeviceRef, point: str, value: float | str) -> WritePoint:
    return WritePoint(device, point, value, priority=PollClass.ROOM)


KIND = Thermostat()
