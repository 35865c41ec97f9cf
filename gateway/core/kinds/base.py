"""What a device kind is to the floor: its points, how they fold into the room, its writes.

A kind (thermostat, lock, room I/O, floor panel, meter…) is one module in
``gateway.core.kinds`` that defines ``KIND``, an instance of a ``DeviceKind`` subclass. It
declares:

- its **role** (``lock``) and **points**: the role of each point a profile may map, with
  the shape of value the gateway expects and whether the gateway writes it;
- how an **observation** of one of its points becomes events and decisions (``observe``),
  with the kind's own state if it keeps one (``new_state``, ``tick``, ``next_deadline``);
- what it shows in the room state (``room_fields``) — its fields with nulls when the room
  has no such device, so the document keeps its shape — and which field each point feeds
  (``fields``, for the freshness of each value);
- which **writes** it makes when the room changes mode (``room_writes``).

Everything here is pure: ``now`` is an argument and nothing is read or written outside
the ``FloorState`` passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from drivers.ids import DeviceRef
from drivers.observations import PointObserved, PointValue

if TYPE_CHECKING:
    from gateway.core.effects import WritePoint
    from gateway.core.state import Effects, FloorState

__all__ = [
    "DeviceKind",
    "EnergyMode",
    "LightsOff",
    "Observed",
    "RoleSpec",
    "RoomChange",
    "ValueKind",
    "Values",
    "Welcome",
]


class ValueKind(enum.StrEnum):
    """The shape of value the gateway expects of a point."""

    BOOL = "bool"  # a coil, a discrete input, or one bit of a bit field
    COUNT = "count"  # an unscaled unsigned integer (counters, sequence numbers)
    NUMBER = "number"  # a scaled number (temperature, percent, kWh)
    ENUM = "enum"  # named values; the names must be among RoleSpec.choices
    TOKEN = "token"  # noqa: S105 (a value kind, not a secret): a 64-bit credential


@dataclass(frozen=True, slots=True)
class RoleSpec:
    """What the gateway needs of the point that plays a role."""

    kind: ValueKind
    writable: bool = False
    array: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Observed:
    """A point observation with what was known of the point before it."""

    obs: PointObserved
    before: PointValue
    known_before: bool  # a value was known (this run or stored): else this one is a baseline

    @property
    def changed(self) -> bool:
        """A known value changed (a first value ever is a baseline, not a change)."""
        return self.known_before and self.before != self.obs.value


@dataclass(frozen=True, slots=True)
class EnergyMode:
    """The room entered (or is brought back to) an energy mode: what its devices must hold.

    ``None`` leaves a setting as it is; ``lights_off`` switches every light circuit off;
    ``tstat_mode`` the thermostat's own mode (an ``auto`` thermostat is held to ``cool`` or
    ``heat`` while set back, so one setpoint cannot drive it the wrong way).
    """

    mode: str
    setpoint_c: float | None = None
    power: bool | None = None
    keypad_locked: bool | None = None
    lights_off: bool = False
    tstat_mode: str | None = None


@dataclass(frozen=True, slots=True)
class LightsOff:
    """Every light circuit off (an absent guest's lights, after their delay)."""


@dataclass(frozen=True, slots=True)
class Welcome:
    """The guest's first entry of the stay: the scene's lights on (the others off)."""

    scene: str | None
    lights: tuple[str, ...] = ("entry", "main")


RoomChange = EnergyMode | LightsOff | Welcome


class Values:
    """The values of one device as the room state shows them: None if unknown or offline."""

    __slots__ = ("_get", "device")

    def __init__(self, device: DeviceRef, get: Any) -> None:
        """``get(device, point, index)``: the current value (PointTable.value)."""
        self.device = device
        self._get = get

    def __call__(self, point: str, index: int = 0) -> PointValue:
        """The point's current value."""
        value: PointValue = self._get(self.device, point, index)
        return value

    def flag(self, point: str) -> bool | None:
        """A bit point as a JSON bool (None when unknown)."""
        value = self(point)
        return None if value is None else bool(value)


class DeviceKind:
    """One kind of device. Subclasses set the class attributes and override what they need."""

    role: ClassVar[str]
    points: ClassVar[Mapping[str, RoleSpec]]
    # Point roles a profile must provide: at least one of each group.
    required: ClassVar[tuple[tuple[str, ...], ...]] = ()
    room_level: ClassVar[bool] = True  # a room's device (False: the floor's, e.g. the panel)
    order: ClassVar[int] = 100  # place in the room state's ``devices`` map
    fields_order: ClassVar[int] = 100  # place of its fields in the room state
    # Point role -> the room-state field it feeds, as a dotted path (``climate.temp_c``):
    # what ``stale`` lists when that point stops answering.
    fields: ClassVar[Mapping[str, str]] = {}
    # Points whose value is saved with the decision they cause (not in the point cache).
    saved_with_decision: ClassVar[frozenset[str]] = frozenset()

    def new_state(self) -> object:
        """The kind's own state at start (None if it keeps none)."""
        return None

    def observe(self, floor: FloorState, seen: Observed, now: datetime) -> Effects:
        """What a new value of one of its points decides."""
        return []

    def came_online(self, floor: FloorState, device: DeviceRef, now: datetime) -> Effects:
        """What a device of this kind answering again decides."""
        return []

    def went_offline(self, floor: FloorState, device: DeviceRef, now: datetime) -> Effects:
        """What a device of this kind going offline decides."""
        return []

    def tick(self, floor: FloorState, now: datetime) -> Effects:
        """What falls due at ``now`` in the kind's own state."""
        return []

    def next_deadline(self, floor: FloorState) -> datetime | None:
        """When ``tick`` next has something to do."""
        return None

    def room_fields(self, values: Values | None) -> dict[str, object]:
        """Its fields of the room state; ``values`` None: the room has no such device."""
        return {}

    def room_writes(self, device: DeviceRef, change: RoomChange) -> list[WritePoint]:
        """The writes a room change asks of this device (filtered to the points it has)."""
        return []
