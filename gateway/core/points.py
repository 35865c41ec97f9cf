"""The last value of every device point, and every device's health.

Pure bookkeeping: fed observations, it says what was known of a point before (for change
detection: a first value ever is a baseline, not a change; a value stored before a restart
counts as known) and what the room state may show (nothing from a device that is offline).
Values not saved with a decision are collected for the point cache, which the engine
writes at most every few seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from drivers.ids import DeviceRef
from drivers.observations import PointObserved, PointValue

__all__ = ["PointTable", "point_key"]


def point_key(point: str, index: int, array: bool) -> str:
    """How a point element is named in the cache: ``slot[3]`` for arrays, else its name."""
    return f"{point}[{index}]" if array else point


class PointTable:
    """Last known values per device point, device health, and the cache's dirty values."""

    def __init__(
        self,
        arrays: frozenset[str],
        stored: Mapping[tuple[str, str], object] | None = None,
    ) -> None:
        """``arrays``: the point roles that are arrays; ``stored``: the cache read at start."""
        self._arrays = arrays
        # (device, point key) -> value; what this run has read
        self._values: dict[tuple[DeviceRef, str], PointValue] = {}
        # what was known before this run (the point cache), by the cache's text keys
        self._stored: dict[tuple[str, str], object] = dict(stored or {})
        self._online: dict[DeviceRef, bool] = {}
        self._was_offline: set[DeviceRef] = set()
        self._dirty: dict[tuple[str, str], object] = {}
        self._read_at: dict[DeviceRef, dict[str, datetime]] = {}  # device -> role -> last read

    # -- inputs ---------------------------------------------------------------------------

    def observe(self, obs: PointObserved, *, cache: bool = True) -> tuple[PointValue, bool]:
        """Record a new value; return the value known before and whether one was known."""
        key = self._key(obs.point, obs.index)
        mine = (obs.device, key)
        stored = (str(obs.device), key)
        if mine in self._values:
            before: object = self._values[mine]
            known = True
        else:
            known = stored in self._stored
            before = self._stored.get(stored)
        self._values[mine] = obs.value
        if cache:
            self._dirty[stored] = obs.value
        return _value(before), known

    def online_changed(self, device: DeviceRef, online: bool) -> bool:
        """Record a device's health; True when it is news (not the first answer after start)."""
        self._online[device] = online
        if not online:
            self._was_offline.add(device)
            return True
        if device in self._was_offline:
            self._was_offline.discard(device)
            return True
        return False

    def remember(self, device: str, key: str, value: PointValue) -> None:
        """Keep a value of the floor's own (not read from a device) in the point cache."""
        self._stored[(device, key)] = value
        self._dirty[(device, key)] = value

    def stored_value(self, device: str, key: str) -> PointValue:
        """A value kept with ``remember`` (or restored from the cache); None if none."""
        return _value(self._stored.get((device, key)))

    def read(self, device: DeviceRef, points: Iterable[str], at: datetime) -> None:
        """These roles of the device answered a read at ``at``."""
        times = self._read_at.setdefault(device, {})
        for point in points:
            times[point] = at

    def read_at(self, device: DeviceRef) -> Mapping[str, datetime]:
        """When each role of the device last answered a read (this run)."""
        return self._read_at.get(device, {})

    def take_dirty(self) -> dict[tuple[str, str], object]:
        """The values changed since the last call, for the point cache."""
        dirty, self._dirty = self._dirty, {}
        return dirty

    # -- queries --------------------------------------------------------------------------

    def value(self, device: DeviceRef, point: str, index: int = 0) -> PointValue:
        """The value read this run (None if never, or while the device is offline)."""
        if not self._online.get(device, False):
            return None
        return self._values.get((device, self._key(point, index)))

    def last_known(self, device: DeviceRef, point: str, index: int = 0) -> PointValue:
        """The last value ever seen (this run or stored), whatever the device's health."""
        key = self._key(point, index)
        if (device, key) in self._values:
            return self._values[(device, key)]
        return _value(self._stored.get((str(device), key)))

    def online(self, device: DeviceRef) -> bool:
        """True once the device has answered and not gone offline since."""
        return self._online.get(device, False)

    def known_offline(self, device: DeviceRef) -> bool:
        """True when the device went offline (not merely unheard since start)."""
        return self._online.get(device) is False

    def _key(self, point: str, index: int) -> str:
        return point_key(point, index, point in self._arrays)


def _value(value: object) -> PointValue:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): bool(v) for k, v in value.items()}
    return None
