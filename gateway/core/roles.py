"""The roles device points play for the core, per device kind.

A profile maps a device's registers onto these roles; the core only ever speaks roles
("room 1203 bath_count"), never addresses. A role says what kind of value the core
expects, whether the core writes it, and whether it is an array (``slot[i]``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DeviceRole(enum.StrEnum):
    """What a device is to the floor: the ``role`` of a room device or the floor panel."""

    TSTAT = "tstat"
    LOCK = "lock"
    RIO = "rio"
    FLOORPANEL = "floorpanel"


ROOM_DEVICE_ROLES = (DeviceRole.TSTAT, DeviceRole.LOCK, DeviceRole.RIO)


class ValueKind(enum.StrEnum):
    """The shape of value the core expects for a role."""

    BOOL = "bool"  # a coil, a discrete input, or one bit of a bit field
    COUNT = "count"  # an unscaled unsigned integer (counters, sequence numbers)
    NUMBER = "number"  # a scaled number (temperature, percent)
    ENUM = "enum"  # named values; the names must be among RoleSpec.choices
    TOKEN = "token"  # noqa: S105 (a value kind, not a secret): a 64-bit credential


@dataclass(frozen=True, slots=True)
class RoleSpec:
    """What the core needs of the point that plays a role."""

    kind: ValueKind
    writable: bool = False
    array: bool = False
    choices: tuple[str, ...] = ()


MODES = ("auto", "cool", "heat", "fan_only")
FANS = ("auto", "low", "medium", "high")
ACCESS_RESULTS = ("granted", "denied", "denied_deadbolt", "remote_unlock")

_B = RoleSpec(ValueKind.BOOL)
_BW = RoleSpec(ValueKind.BOOL, writable=True)

ROLES: dict[DeviceRole, dict[str, RoleSpec]] = {
    DeviceRole.TSTAT: {
        "room_temp": RoleSpec(ValueKind.NUMBER),
        "humidity": RoleSpec(ValueKind.NUMBER),
        "fan_state": RoleSpec(ValueKind.COUNT),
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
    },
    DeviceRole.LOCK: {
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
    },
    DeviceRole.RIO: {
        "light_entry": _BW,
        "light_main": _BW,
        "light_bedside": _BW,
        "light_bath": _BW,
        "dome_lamp": _BW,
        "reassure_lamp": _BW,
        "call_bath": _B,
        "call_bed": _B,
        "keycard": _B,
        "dnd": _B,
        "mur": _B,
        "window_open": _B,
        "staff_present": _B,
        "bath_count": RoleSpec(ValueKind.COUNT),
        "staff_count": RoleSpec(ValueKind.COUNT),
        "bed_count": RoleSpec(ValueKind.COUNT),
    },
    DeviceRole.FLOORPANEL: {
        "floor_sounder": _BW,
        "floor_call_lamp": _BW,
    },
}

# Roles a profile must provide for the gateway to do its job with that device.
# Each entry is a set of alternatives: at least one of them must be present.
REQUIRED_ROLES: dict[DeviceRole, tuple[tuple[str, ...], ...]] = {
    DeviceRole.TSTAT: (("room_temp",), ("setpoint",)),
    DeviceRole.LOCK: (("slot",), ("door_open",)),
    DeviceRole.RIO: (("bath_count", "bed_count"), ("staff_count",), ("dome_lamp",)),
    DeviceRole.FLOORPANEL: (("floor_call_lamp",), ("floor_sounder",)),
}
