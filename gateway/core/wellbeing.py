"""The well-being check (operations.md v2): a present guest who shows no life raises an alarm.

Opt-in per stay (``preferences.wellbeing_h``, 1..48 hours). A sold room whose stay opted in
and that is not known to be absent, with no activity for that many hours, raises a
``wellbeing`` alarm (point ``no_activity``), escalated like a call and resolved by staff
presence at the room or ``resolve_alarm`` (gateway.core.alarms). Activity is motion (the
bit or the counter), the door, the key card, a call or the staff key at the room. The
period restarts at every activity and at the alarm itself, so a resolved alarm is raised
again only after another full period without activity.

Restart safety: the last activity and whether the room was absent then are kept in the
point cache (pseudo-device ``ROOM``, points ``wellbeing_activity`` and ``wellbeing_absent``),
written with the other cached values, so a pending deadline comes back as it was (to the
cache's few seconds). Until the presence machine knows again after a restart, the room
counts as it was when last saved. Pure.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from drivers.ids import RoomId
from gateway.core.alarms import NO_ACTIVITY
from gateway.core.effects import Effect
from gateway.core.state import FloorState
from gateway.model.time import format_ts, parse_ts

__all__ = ["ACTIVITY_POINTS", "activity", "next_deadline", "tick"]

ACTIVITY_POINTS = frozenset(
    {"motion", "motion_count", "door_open", "keycard", "bath_count", "bed_count", "staff_count"}
)
"""The room inputs (by role) whose change is a sign of life."""
PREFERENCE = "wellbeing_h"
_ACTIVITY, _ABSENT = "wellbeing_activity", "wellbeing_absent"


def activity(floor: FloorState, room: str, now: datetime) -> None:
    """A sign of life in ``room``: its period starts again."""
    _remember(floor, room, now)


def tick(floor: FloorState, now: datetime) -> list[Effect]:
    """Raise the well-being alarm of every room whose period ran out."""
    out: list[Effect] = []
    for room in floor.room_ids():
        _keep_absence(floor, room)
        if _hours(floor, room, now) is not None and _last_activity(floor, room) is None:
            _remember(floor, room, now)  # opted in since the last restart: from now
        due = _due(floor, room, now)
        if due is not None and due <= now:
            floor.alarms, effects = floor.alarms.wellbeing(room, now)
            out += effects
            _remember(floor, room, now)
    return out


def next_deadline(floor: FloorState, now: datetime) -> datetime | None:
    """When the next well-being period runs out (None: no room is checked)."""
    opted = floor.authz.rooms_with_preference(PREFERENCE)  # few, and asked after every batch
    rooms = (room for room in floor.room_ids() if room in opted)
    dues = [d for d in (_due(floor, room, now) for room in rooms) if d is not None]
    return min(dues, default=None)


def _due(floor: FloorState, room: RoomId, now: datetime) -> datetime | None:
    """When the room's alarm falls due, if the room is checked at all now."""
    hours = _hours(floor, room, now)
    if hours is None or _absent(floor, room):
        return None
    if floor.alarms.has_open(room, NO_ACTIVITY):
        return None
    since = _last_activity(floor, room)
    if since is None:  # opted in, not started yet: the next tick starts it
        return now
    return since + timedelta(hours=hours)


def _hours(floor: FloorState, room: str, now: datetime) -> float | None:
    _, stay_id = floor.authz.occupancy(room, now)
    stay = None if stay_id is None else floor.authz.stay(room, stay_id)
    if stay is None:
        return None
    hours = stay.preferences.get(PREFERENCE)
    if not isinstance(hours, int | float) or isinstance(hours, bool) or hours <= 0:
        return None
    return float(hours)


def _absent(floor: FloorState, room: RoomId) -> bool:
    m = floor.rooms.by_room.get(room)
    state = None if m is None else m.presence.state
    if state is not None:
        return not state
    return floor.points.stored_value(room, _ABSENT) is True


def _last_activity(floor: FloorState, room: str) -> datetime | None:
    saved = floor.points.stored_value(room, _ACTIVITY)
    if not isinstance(saved, str):
        return None
    try:
        return parse_ts(saved)
    except ValueError:
        return None


def _keep_absence(floor: FloorState, room: RoomId) -> None:
    """Keep whether the room is absent in the cache as the presence machine says it."""
    m = floor.rooms.by_room.get(room)
    state = None if m is None else m.presence.state
    if state is not None and floor.points.stored_value(room, _ABSENT) is not (not state):
        floor.points.remember(room, _ABSENT, not state)


def _remember(floor: FloorState, room: str, now: datetime) -> None:
    m = floor.rooms.by_room.get(RoomId(room))
    absent = m is not None and m.presence.state is False
    floor.points.remember(room, _ACTIVITY, format_ts(now))
    floor.points.remember(room, _ABSENT, absent)
