"""How old each value of the room state is: ``observed`` and ``stale`` (mqtt.md v2).

The bus owners send values on change only, so a value that stopped being read would look
current for ever. They also report, coalesced per device, which roles answered a read
(``PointsRead``); the engine stamps that with its wall clock and this module keeps, per
device and role, when it last answered. A field of the room state is *stale* when the
point behind it has not answered for longer than its device's stale limit (``DeviceInfo.
stale_after_s``) while the device is online — an offline device's fields are null anyway.
A point never read this run is not listed: its field is null, not a value shown as
current. Each kind names which room-state field each of its points feeds (``fields``).

A room is published again when its list of stale fields changes (on a read report or on
the tick that finds a point went stale), not when ``observed`` alone moves: the document
carries the latest ``observed`` whenever it goes out for any reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from drivers.ids import DeviceRef
from drivers.observations import PointsRead
from gateway.core.state import FloorState
from gateway.model.time import format_ts

__all__ = ["read", "room_fields", "stale_fields", "tick"]


def read(floor: FloorState, obs: PointsRead, now: datetime) -> None:
    """Roles of a device answered: note when; republish its room if its stale list moved."""
    floor.points.read(obs.device, obs.points, now)
    _recheck(floor, obs.device, now)


def tick(floor: FloorState, now: datetime) -> None:
    """Find the fields that went stale (or fresh) with the passing of time."""
    for device in floor.layout.devices:
        _recheck(floor, device, now)


def stale_fields(floor: FloorState, device: DeviceRef, now: datetime) -> tuple[str, ...]:
    """The room-state fields of ``device`` whose value is older than its stale limit."""
    info = floor.layout.devices.get(device)
    kind = floor.registry.get(device.role)
    if info is None or kind is None or not floor.points.online(device):
        return ()
    before = now - timedelta(seconds=info.stale_after_s)  # read earlier than this: stale
    read_at = floor.points.read_at(device)
    out = {
        path
        for point, path in kind.fields.items()
        if (at := read_at.get(point)) is not None and at < before
    }
    return tuple(sorted(out))


def room_fields(floor: FloorState, room: str, now: datetime) -> dict[str, object]:
    """``observed`` (per device role, its last answer) and ``stale`` of one room."""
    layout = floor.layout.room(room)
    devices = () if layout is None else layout.devices
    observed: dict[str, str | None] = {}
    stale: set[str] = set()
    for device in devices:
        times = floor.points.read_at(device)
        observed[device.role] = format_ts(max(times.values())) if times else None
        stale.update(stale_fields(floor, device, now))
    return {"observed": observed, "stale": sorted(stale)}


def _recheck(floor: FloorState, device: DeviceRef, now: datetime) -> None:
    fields = stale_fields(floor, device, now)
    if floor.stale.get(device, ()) != fields:
        floor.stale[device] = fields
        floor.touch(device.room)
