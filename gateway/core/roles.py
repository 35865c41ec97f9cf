"""The roles device points play for the core, per device kind.

A profile maps a device's registers onto these roles; the core only ever speaks roles
("room 1203 bath_count"), never addresses. A role says what kind of value the core
expects, whether the core writes it, and whether it is an array (``slot[i]``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers.profile import DataType, Point, Profile


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

ROLES: dict[str, dict[str, RoleSpec]] = {
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
REQUIRED_ROLES: dict[str, tuple[tuple[str, ...], ...]] = {
    DeviceRole.TSTAT: (("room_temp",), ("setpoint",)),
    DeviceRole.LOCK: (("slot",), ("door_open",)),
    DeviceRole.RIO: (("bath_count", "bed_count"), ("staff_count",), ("dome_lamp",)),
    DeviceRole.FLOORPANEL: (("floor_call_lamp",), ("floor_sounder",)),
}


def role_problems(prof: Profile) -> list[tuple[str, str]]:
    """Whether a profile's roles fit its device kind, as (location, message)."""
    if prof.device not in ROLES:
        known = ", ".join(sorted(ROLES))
        return [("profile.device", f"unknown device kind {prof.device!r}; known: {known}")]
    out: list[tuple[str, str]] = []
    vocabulary = ROLES[prof.device]
    for i, p in enumerate(prof.point):
        loc = f"point[{i}]"
        if p.role is not None:
            spec = vocabulary.get(p.role)
            if spec is None:
                known = ", ".join(sorted(vocabulary))
                out.append(
                    (f"{loc}.role", f"unknown role {p.role!r} for a {prof.device}; known: {known}")
                )
            else:
                out.extend((f"{loc}.{k}", m) for k, m in _role_fit(p, spec))
        for bit_name in p.bits or {}:
            spec = vocabulary.get(bit_name)
            if spec is not None and spec.kind is not ValueKind.BOOL:
                out.append((f"{loc}.bits.{bit_name}", f"role {bit_name!r} is not a bit"))
    provided = prof.roles(vocabulary)
    for alternatives in REQUIRED_ROLES[prof.device]:
        if not provided.intersection(alternatives):
            want = " or ".join(repr(a) for a in alternatives)
            out.append(("point", f"a {prof.device} profile needs a point with role {want}"))
    return out


def _role_fit(p: Point, spec: RoleSpec) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not spec.array and p.count > 1:
        out.append(("count", f"role {p.role!r} is a single value, not an array"))
    if spec.writable and "w" not in p.access:
        out.append(("access", f"role {p.role!r} is written by the gateway: access must allow 'w'"))
    kind = spec.kind
    if kind is ValueKind.BOOL and p.type not in (DataType.BIT, DataType.U16):
        out.append(("type", f"role {p.role!r} is a bit, or a u16 register holding 0 or 1"))
    elif kind is ValueKind.COUNT and (p.type not in (DataType.U16, DataType.U32) or p.scale != 1):
        out.append(("type", f"role {p.role!r} is an unscaled unsigned count (u16 or u32)"))
    elif kind is ValueKind.TOKEN and p.type is not DataType.U64:
        out.append(("type", f"role {p.role!r} is a 64-bit token (u64)"))
    elif kind is ValueKind.NUMBER and p.type in (DataType.BIT, DataType.BITFIELD):
        out.append(("type", f"role {p.role!r} is a number, not {p.type}"))
    elif kind is ValueKind.ENUM:
        if not p.enum:
            out.append(("enum", f"role {p.role!r} needs an enum naming its raw values"))
        else:
            foreign = sorted(set(p.enum.values()) - set(spec.choices))
            if foreign:
                out.append(
                    ("enum", f"names {foreign} are not among {list(spec.choices)} for {p.role!r}")
                )
    return out
