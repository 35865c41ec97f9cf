"""Device profiles: a device model's register map as data (config/profiles/*.toml).

A profile names each point's Modbus table, address, data type, scaling, "no value"
sentinels, enum or bit names, access, poll class and the role it plays for the core
(gateway.core.roles). Drivers plan reads from it and the simulator builds devices from
it, so a new device model is a TOML file, not code. See docs/profiles.md.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_RE = r"^[a-z][a-z0-9_]*$"
PROFILE_NAME_RE = r"^[a-z0-9][a-z0-9._-]*$"

# Spec (devices.md): max 32 registers or 64 bits per read request.
MAX_READ_REGISTERS = 32
MAX_READ_BITS = 64
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


class Table(enum.StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"

    @property
    def is_bit(self) -> bool:
        """True for the single-bit tables (coils, discrete inputs)."""
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def writable(self) -> bool:
        """True for the tables a master may write (coils, holding registers)."""
        return self in (Table.COIL, Table.HOLDING)


class DataType(enum.StrEnum):
    """How a point's raw bits or registers are read."""

    BIT = "bit"
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    U64 = "u64"
    F32 = "f32"
    BITFIELD = "bitfield"

    @property
    def width(self) -> int:
        """Registers (or bits, for BIT) one value occupies."""
        return _WIDTHS.get(self, 1)

    @property
    def signed(self) -> bool:
        """True for two's-complement types."""
        return self in (DataType.I16, DataType.I32)

    @property
    def is_float(self) -> bool:
        """True for IEEE 754 types (their raw integer is the bit pattern)."""
        return self is DataType.F32


_WIDTHS = {DataType.U32: 2, DataType.I32: 2, DataType.F32: 2, DataType.U64: 4}


class PollClass(enum.StrEnum):
    """Scheduling class of a point, highest priority first."""

    EMERGENCY = "emergency"  # call and staff counters, call lamps
    LOCK = "lock"  # door, deadbolt, tamper, log head
    ROOM = "room"  # key card, DND, MUR, window
    SLOW = "slow"  # thermostats, slot verification
    NEVER = "never"  # written or read on demand only (unlock pulse, access-log entries)


DEFAULT_INTERVALS_MS: dict[PollClass, int] = {
    PollClass.EMERGENCY: 250,
    PollClass.LOCK: 1000,
    PollClass.ROOM: 2000,
    PollClass.SLOW: 10000,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileInfo(_Model):
    """The [profile] table: identity of the device model."""

    name: Annotated[str, Field(pattern=PROFILE_NAME_RE)]
    device: Annotated[str, Field(pattern=NAME_RE)]  # the device kind: tstat, lock, rio…
    vendor: str = ""
    model: str = ""
    description: str = ""


class SerialDefaults(_Model):
    """Factory serial settings of the device model (informational defaults for its bus)."""

    baud: int = 19200
    parity: Literal["N", "E", "O"] = "N"

    @model_validator(mode="after")
    def _standard_baud(self) -> Self:
        if self.baud not in STANDARD_BAUDS:
            raise ValueError(f"baud {self.baud} is not a standard rate {STANDARD_BAUDS}")
        return self


class Point(_Model):
    """One [[point]]: a value (or an array of values) at a table address."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    table: Table
    address: Annotated[int, Field(ge=0, le=0xFFFF)]
    type: DataType = DataType.U16
    count: Annotated[int, Field(ge=1, le=256)] = 1
    stride: Annotated[int, Field(ge=1)] | None = None
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    no_value: list[int] = Field(default_factory=list)
    enum: dict[str, str] | None = None
    bits: dict[str, Annotated[int, Field(ge=0, le=15)]] | None = None
    min: float | None = None
    max: float | None = None
    access: Literal["r", "w", "rw"] = "r"
    role: Annotated[str, Field(pattern=NAME_RE)] | None = None
    poll: PollClass = PollClass.SLOW
    interval_ms: Annotated[int, Field(ge=20)] | None = None
    unit: str | None = None
    description: str = ""
    # A device of older firmware may not have it: exception 02 on it alone means "absent"
    # (never polled again, the device stays online), not a failing device.
    optional: bool = False

    @property
    def step(self) -> int:
        """Distance in registers/bits between consecutive array elements."""
        return self.stride if self.stride is not None else self.type.width

    @property
    def span(self) -> tuple[int, int]:
        """First and last address (inclusive) the point occupies."""
        return self.address, self.address + self.step * (self.count - 1) + self.type.width - 1

    @property
    def enum_map(self) -> dict[int, str]:
        """Enum as raw int -> name (keys validated as integers)."""
        return {int(k, 0): v for k, v in (self.enum or {}).items()}

    @property
    def raw_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer of the data type (for f32: its bit patterns)."""
        if self.type is DataType.BIT:
            return 0, 1
        bits = 16 * self.type.width
        if self.type.signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = _point_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _point_problems(p: Point) -> list[str]:
    out: list[str] = []
    if p.table.is_bit != (p.type is DataType.BIT):
        out.append(
            f"type {p.type} does not fit table {p.table}: coils and discrete inputs are "
            "'bit', registers are never 'bit'"
        )
    if "w" in p.access and not p.table.writable:
        out.append(f"access '{p.access}' on table {p.table}, which is read-only")
    if p.stride is not None and p.stride < p.type.width:
        out.append(f"stride {p.stride} is smaller than the {p.type} width {p.type.width}")
    last = p.address + p.step * (p.count - 1) + p.type.width - 1
    if last > 0xFFFF:
        out.append(f"points run past address 65535 (last {last})")
    lo, hi = p.raw_range
    for raw in p.no_value:
        if not lo <= raw <= hi and not (p.type.signed and 0 <= raw <= (hi - lo)):
            out.append(f"no_value {raw:#x} is outside the raw range of {p.type}")
    if p.enum is not None:
        if p.type in (DataType.BIT, DataType.BITFIELD) or p.type.is_float:
            out.append(f"enum needs an integer type, not {p.type}")
        for key in p.enum:
            if not re.fullmatch(r"-?\d+|0x[0-9a-fA-F]+", key):
                out.append(f"enum key {key!r} is not an integer raw value")
            elif not lo <= int(key, 0) <= hi:
                out.append(f"enum key {key} is outside the raw range of {p.type}")
        if len(set(p.enum.values())) != len(p.enum):
            out.append("enum names are not unique")
    if (p.bits is not None) != (p.type is DataType.BITFIELD):
        out.append("'bits' goes with type 'bitfield' and only with it")
    if p.bits is not None:
        bad = [n for n in p.bits if not re.fullmatch(NAME_RE, n)]
        if bad:
            out.append(f"bit names {bad} are not snake_case")
        if len(set(p.bits.values())) != len(p.bits):
            out.append("two bit names share a bit")
    if p.scale == 0:
        out.append("scale must not be 0")
    if p.min is not None and p.max is not None and p.min > p.max:
        out.append(f"min {p.min} is above max {p.max}")
    if p.poll is not PollClass.NEVER and "r" not in p.access:
        out.append(f"a write-only point cannot be polled (poll = '{p.poll}'); use poll = 'never'")
    return out


class Profile(_Model):
    """A whole profile file, validated against the role vocabulary of its device kind."""

    profile: ProfileInfo
    serial: SerialDefaults = SerialDefaults()
    intervals: dict[PollClass, Annotated[int, Field(ge=20)]] = Field(default_factory=dict)
    point: list[Point] = Field(min_length=1)

    @property
    def name(self) -> str:
        """The profile's name (equals its file stem)."""
        return self.profile.name

    @property
    def device(self) -> str:
        """The kind of device this profile describes (its role: ``tstat``, ``lock``…)."""
        return self.profile.device

    def interval_ms(self, point: Point) -> int | None:
        """Target poll interval of a point: its own, else its class's, else the default."""
        if point.poll is PollClass.NEVER:
            return None
        if point.interval_ms is not None:
            return point.interval_ms
        return self.intervals.get(point.poll, DEFAULT_INTERVALS_MS[point.poll])

    def by_role(self) -> dict[str, Point]:
        """Points (not bits) by the role they play."""
        return {p.role: p for p in self.point if p.role is not None}

    def roles(self, vocabulary: Collection[str]) -> set[str]:
        """Every role the profile provides: point roles, and bit names in ``vocabulary``."""
        out = set(self.by_role())
        for p in self.point:
            out.update(n for n in (p.bits or {}) if n in vocabulary)
        return out


def structure_problems(prof: Profile) -> list[tuple[str, str]]:
    """Cross-point problems of a profile, as (location, message): names and overlaps.

    Whether its roles fit its device kind is the gateway's check (gateway.core.roles).
    """
    out: list[tuple[str, str]] = []
    names: dict[str, int] = {}
    roles: dict[str, int] = {}
    for i, p in enumerate(prof.point):
        loc = f"point[{i}]"
        if p.name in names:
            out.append((f"{loc}.name", f"name {p.name!r} is already point[{names[p.name]}]"))
        names.setdefault(p.name, i)
        if p.role is not None:
            if p.role in roles:
                out.append((f"{loc}.role", f"role {p.role!r} is already point[{roles[p.role]}]"))
            roles.setdefault(p.role, i)
    out.extend(_overlaps(prof))
    return out


def _overlaps(prof: Profile) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    taken: dict[tuple[Table, int], int] = {}
    for i, p in enumerate(prof.point):
        clashes: dict[int, int] = {}  # other point -> first clashing address
        for k in range(p.count):
            start = p.address + k * p.step
            for a in range(start, start + p.type.width):
                other = taken.setdefault((p.table, a), i)
                if other != i:
                    clashes.setdefault(other, a)
        for other, a in clashes.items():
            name = prof.point[other].name
            out.append((f"point[{i}].address", f"{p.table} {a} is already point[{other}] ({name})"))
    return out
