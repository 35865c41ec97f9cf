"""What leaves the drivers: typed observations by role, never raw registers.

A bus scheduler turns answers into these values and hands them to the floor engine; the
core decides from them. ``at`` is the gateway's monotonic clock in seconds when the answer
arrived (latency figures and sampling periods use it); the engine stamps wall time itself.

Point observations are sent on change only: the first value a point shows after start-up
or after its device comes back online, then every change. A counter that advanced while
the gateway was down is therefore seen on the first read, and the engine compares it with
the last value it stored (devices.md: a press is never lost to a restart).

Because values go out on change only, which points a device still answers is told apart:
``PointsRead`` names the roles read successfully, coalesced per device (at most every
``READ_REPORT_S``) and sent a bus at a time, so the floor knows how old each value is
without one message per read.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ids import DeviceRef, RoomId

__all__ = [
    "READ_REPORT_S",
    "DeviceFault",
    "DeviceOffline",
    "DeviceOnline",
    "DriverObservation",
    "PointObserved",
    "PointsRead",
]

READ_REPORT_S = 1.0

# Same shapes as drivers.codec.Value.
PointValue = bool | int | float | str | dict[str, bool] | None


@dataclass(frozen=True, slots=True)
class PointObserved:
    """A point of a device shows a new value (``index`` is the array element, else 0)."""

    device: DeviceRef
    point: str  # the role the point plays, e.g. "bath_count", "slot"
    index: int
    value: PointValue
    at: float

    @property
    def room(self) -> RoomId | None:
        """The device's room (None for a floor-level device)."""
        return self.device.room


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    """A device answered again (or for the first time since start)."""

    device: DeviceRef
    at: float


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    """A device failed ``offline_after`` consecutive transactions (reason: the last error)."""

    device: DeviceRef
    reason: str  # "timeout", "crc", "exception 04", "bus gone"
    at: float


@dataclass(frozen=True, slots=True)
class DeviceFault:
    """A device answers but reports a failure of its own (Modbus exception 04, a fault bit)."""

    device: DeviceRef
    code: str
    at: float


@dataclass(frozen=True, slots=True)
class PointsRead:
    """These roles of a device were read successfully since the last report (``at``: when
    reported; a bus reports all its devices together, at most every ``READ_REPORT_S``)."""

    device: DeviceRef
    points: tuple[str, ...]
    at: float


DriverObservation = PointObserved | PointsRead | DeviceOnline | DeviceOffline | DeviceFault
