"""The floor's state as the pure core holds it, and the layout it was built from.

``FloorState`` is owned by the engine's committer and changed only by
``gateway.core.decide.decide``: authorisation and alarms are immutable values swapped for
their successors, the point table and the kinds' own states are updated in place (a copy
per observation would cost more than it protects). ``Layout`` is what the core needs of
the floor file, built once by ``gateway.config``; the core never reads the floor file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING

from drivers.ids import DeviceRef, RoomId
from gateway.core.alarms import AlarmLayout, Alarms
from gateway.core.authz import Authz
from gateway.core.effects import Effect, WritePoint
from gateway.core.points import PointTable
from gateway.core.rejections import Rejections
from gateway.core.remote_config import ConfigRecord
from gateway.core.staff import StaffRules

if TYPE_CHECKING:
    from gateway.core.grms import Rooms
    from gateway.core.kinds.base import DeviceKind, RoomChange

__all__ = [
    "CODE_LIMITS",
    "DeviceInfo",
    "Effects",
    "EnergySettings",
    "FloorState",
    "Layout",
    "Policy",
    "RoomLayout",
    "Scene",
]

Effects = list[Effect]


@dataclass(frozen=True, slots=True)
class Policy:
    """Room behaviour the hotel chose ([policy] of the floor file)."""

    vacant_setpoint_c: float = 26.0
    occupied_setpoint_c: float = 22.0
    door_held_open_s: int = 60  # after a guest key or an opening from inside
    door_held_open_staff_s: int = 120  # after a staff key


# The energy codes' limits, checked by --check while [energy] code_limits is true.
CODE_LIMITS = {"precondition_min": 60, "unsold_after_s": 1200, "away_setback_c": 2.0}
UNSOLD_COOL_CODE_C = 26.7  # 80 °F
UNSOLD_HEAT_CODE_C = 15.6  # 60 °F


@dataclass(frozen=True, slots=True)
class EnergySettings:
    """The floor file's ``[energy]`` table (and ``[policy] occupied_setpoint_c``)."""

    presence_check_s: float = 300
    away_setback_c: float = 2.0
    lights_off_absent_s: float = 600
    unsold_after_s: float = 600
    unsold_cool_c: float = UNSOLD_COOL_CODE_C
    unsold_heat_c: float = UNSOLD_HEAT_CODE_C
    precondition_min: int = 60
    window_delay_s: float = 60
    occupied_setpoint_c: float = 22.0


@dataclass(frozen=True, slots=True)
class Scene:
    """A welcome scene: the light circuits on at the first entry of a stay, and optionally
    the comfort setpoint of a stay that names it and prefers none."""

    lights: tuple[str, ...] = ("entry", "main")
    setpoint_c: float | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A Modbus device as the core needs it: its bus, the roles its profile provides."""

    ref: DeviceRef
    bus: str
    points: frozenset[str]  # roles the profile maps (bit-field members included)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # role -> min, max
    steps: Mapping[str, float] = field(default_factory=dict)  # role -> resolution (scale)
    # A value read longer ago than this, while the device is online, is stale (mqtt.md:
    # 3 x the device's slowest polled interval, at least 15 s).
    stale_after_s: float = 15.0


@dataclass(frozen=True, slots=True)
class RoomLayout:
    """A room: its devices (in the room state's order) and its call panel, if any."""

    room: RoomId
    devices: tuple[DeviceRef, ...]
    callpanel: str | None = None


@dataclass(frozen=True, slots=True)
class Layout:
    """The floor as the core sees it: rooms, devices, policy, escalation."""

    rooms: tuple[RoomLayout, ...]
    devices: Mapping[DeviceRef, DeviceInfo]
    policy: Policy
    alarms: AlarmLayout
    energy: EnergySettings = field(default_factory=EnergySettings)
    timezone: tzinfo = UTC  # the floor's local time: ledger days, staff schedules
    scenes: Mapping[str, Scene] = field(default_factory=lambda: {"welcome": Scene()})
    staff: StaffRules = field(default_factory=StaffRules)  # staff slots, time zone, keys

    def room(self, room: str) -> RoomLayout | None:
        """The room with this id, or None when it is not on this floor."""
        for r in self.rooms:
            if r.room == room:
                return r
        return None

    def device(self, room: str, role: str) -> DeviceRef | None:
        """The room's device of this role, or None."""
        ref = DeviceRef.of(room, role)
        return ref if ref in self.devices else None

    def has_point(self, device: DeviceRef, point: str) -> bool:
        """True when the device's profile has a point playing this role."""
        info = self.devices.get(device)
        return info is not None and point in info.points

    def point_step(self, device: DeviceRef, point: str) -> float | None:
        """The resolution a numeric point is written in (None: not known)."""
        info = self.devices.get(device)
        return None if info is None else info.steps.get(point)

    def point_range(self, device: DeviceRef, point: str) -> tuple[float, float]:
        """The profile's accepted range of a numeric point (unbounded if it names none)."""
        info = self.devices.get(device)
        if info is None:
            return float("-inf"), float("inf")
        return info.ranges.get(point, (float("-inf"), float("inf")))


@dataclass(slots=True)
class FloorState:
    """Everything the core decides from; see the module doc for who may change it."""

    layout: Layout
    registry: Mapping[str, DeviceKind]  # the device kinds (gateway.core.kinds.KINDS)
    points: PointTable
    authz: Authz
    alarms: Alarms
    welcomed: dict[RoomId, str]  # room -> stay whose welcome scene ran
    kinds: dict[str, object]  # each kind's own state, by role
    rooms: Rooms  # each room's presence, energy, service, housekeeping, ledger (core.grms)
    link_up: bool = False
    rejections: Rejections = field(default_factory=Rejections)  # command.rejected coalescing
    dirty_rooms: set[RoomId] = field(default_factory=set)  # room states to publish again
    stale: dict[DeviceRef, tuple[str, ...]] = field(default_factory=dict)  # as last published
    config: ConfigRecord = field(default_factory=ConfigRecord)  # remote configuration

    def room_ids(self) -> list[RoomId]:
        """Every room, in floor-file order."""
        return [r.room for r in self.layout.rooms]

    def touch(self, room: str | None) -> None:
        """The room's published state may have changed."""
        if room is not None and self.layout.room(room) is not None:
            self.dirty_rooms.add(RoomId(room))

    def room_writes(self, room: str, change: RoomChange) -> list[WritePoint]:
        """What a room change asks of the room's devices, for the points they have."""
        layout = self.layout.room(room)
        if layout is None:
            return []
        return [
            write
            for device in layout.devices
            for write in self.registry[device.role].room_writes(device, change)
            if self.layout.has_point(device, write.point)
        ]
