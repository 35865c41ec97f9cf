"""Typed identifiers of the floor, parsed once at the edge and passed around as values.

A room id (``1203``) and a bus name (``rs485-a``) are strings with a meaning; a device is
named by its room and its role (``1203/lock``), or by its role alone when it belongs to the
floor (``floorpanel``). ``DeviceRef`` holds the two parts, so nobody splits names again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

__all__ = ["BusName", "DeviceRef", "RoomId"]

RoomId = NewType("RoomId", str)
BusName = NewType("BusName", str)


@dataclass(frozen=True, slots=True, order=True)
class DeviceRef:
    """A device of the floor: a room's device by role, or a floor-level one (room None)."""

    room: RoomId | None
    role: str
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """ValueError for an empty role, or a '/' in either part."""
        if not self.role or "/" in self.role or (self.room is not None and "/" in self.room):
            raise ValueError(f"not a device: room {self.room!r}, role {self.role!r}")
        if self.room == "":
            raise ValueError("a room id is not empty")
        object.__setattr__(self, "_hash", hash((self.room, self.role)))

    def __hash__(self) -> int:
        """Kept from construction: a device is a key the floor looks up thousands of times
        a second."""
        return self._hash

    def __reduce__(self) -> tuple[type[DeviceRef], tuple[RoomId | None, str]]:
        """Rebuilt from its parts (a string's hash differs from process to process)."""
        return DeviceRef, (self.room, self.role)

    def __str__(self) -> str:
        """The contract's name of the device: ``1203/lock`` or ``floorpanel``."""
        return self.role if self.room is None else f"{self.room}/{self.role}"

    @classmethod
    def parse(cls, name: str) -> DeviceRef:
        """The device named ``ROOM/ROLE`` or ``ROLE``; ValueError if it is neither."""
        room, sep, role = name.rpartition("/")
        return cls(RoomId(room) if sep else None, role)

    @classmethod
    def of(cls, room: str | None, role: str) -> DeviceRef:
        """The device of this role in this room (None: the floor's)."""
        return cls(None if room is None else RoomId(room), role)
