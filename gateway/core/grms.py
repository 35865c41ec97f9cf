"""Guest-room management: each room's presence, energy mode, service, housekeeping, ledger.

The rules are in gateway.core.presence, .energy, .service and .ledger; this module ties
them to the floor.

The kinds' points feed it (``ROOM_INPUTS``: the door, the key card, motion, the window,
the staff key, MUR, the fan-coil, the lights, the meter), authorisation tells it when a
stay starts and ends (``rental``), time passes (``tick``), and commands override it
(``manual``, ``hold``, ``set_housekeeping``). Its decisions are effects like any other:
``energy.mode`` / ``room.presence`` / ``service.*`` / ``housekeeping.changed`` /
``room.unsold_presence`` / ``energy.daily`` events, the room's device writes of each mode
(each kind's ``room_writes`` of an ``EnergyMode``), and saved records. Pure.

Every room is brought to what its mode says at start (``start``) and whenever one of its
devices answers again (``device_back``), so a room never keeps a mode's settings stale.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drivers.ids import DeviceRef, RoomId
from gateway.core.authz import Stay
from gateway.core.effects import Emit, MarkWelcomed, SaveLedger, SaveRoomStatus
from gateway.core.energy import Facts, Mode, RoomEnergy, choose, is_cooling, target
from gateway.core.kinds.base import EnergyMode, LightsOff, Observed, Welcome
from gateway.core.ledger import DayTotals, RoomLedger, local_date, next_midnight
from gateway.core.presence import Cause, Presence, PresenceChange
from gateway.core.service import HOUSEKEEPING, Service, housekeeping_change
from gateway.core.state import Effects, FloorState, Layout, Scene
from gateway.model.time import format_ts

__all__ = [
    "LEDGER_CHECKPOINT_S",
    "LEDGER_KEEP_DAYS",
    "ROOM_INPUTS",
    "RoomMgmt",
    "Rooms",
]

LEDGER_KEEP_DAYS = 400
LEDGER_CHECKPOINT_S = 600  # today's totals are saved at least this often
LIGHT_POINTS = frozenset({"light_entry", "light_main", "light_bedside", "light_bath"})
ROOM_INPUTS = frozenset(
    {
        "door_open",
        "keycard",
        "motion",
        "motion_count",
        "window_open",
        "staff_present",
        "staff_count",
        "mur",
        "fan_state",
        "run_minutes",
        "energy_kwh",
        *LIGHT_POINTS,
    }
)
"""The points (by role) whose observations this module follows."""


@dataclass(slots=True)
class RoomMgmt:
    """One room's guest-room management state."""

    presence: Presence
    energy: RoomEnergy
    ledger: RoomLedger
    housekeeping: str | None = None
    service: Service = field(default_factory=Service)


@dataclass(slots=True)
class Rooms:
    """Every room's management state, and when today's ledger is next saved."""

    by_room: dict[RoomId, RoomMgmt] = field(default_factory=dict)
    checkpoint_at: datetime | None = None
    # days that ended while the gateway was down: their energy.daily is still owed
    owed: list[tuple[RoomId, DayTotals]] = field(default_factory=list)

    @classmethod
    def restore(
        cls,
        layout: Layout,
        now: datetime,
        status: Mapping[str, tuple[str | None, str | None]],
        ledger: Mapping[str, Mapping[str, object]],
    ) -> Rooms:
        """Every room of the layout, with what was saved: housekeeping, hold, today's totals."""
        today = local_date(now, layout.timezone)
        rooms = cls(checkpoint_at=now + timedelta(seconds=LEDGER_CHECKPOINT_S))
        for room in (r.room for r in layout.rooms):
            housekeeping, hold = status.get(room, (None, None))
            day = DayTotals(today)
            saved = ledger.get(room)
            if saved is not None:
                try:
                    stored_day = DayTotals.from_doc(dict(saved))
                except (KeyError, TypeError, ValueError):
                    stored_day = day
                if stored_day.day == today:
                    day = stored_day
                elif stored_day.day < today:
                    rooms.owed.append((room, stored_day))
            rooms.by_room[room] = RoomMgmt(
                Presence(),
                RoomEnergy(hold_stay=hold),
                RoomLedger(day, now),
                housekeeping=housekeeping if housekeeping in HOUSEKEEPING else None,
            )
        return rooms


# -- the floor's entry points ------------------------------------------------------------


def start(floor: FloorState, now: datetime) -> Effects:
    """Every room in its mode from the first second (devices brought to it as they answer);
    the ``energy.daily`` of days that ended while the gateway was down (to its last save)."""
    out: Effects = [Emit("energy.daily", room, day.doc()) for room, day in floor.rooms.owed]
    floor.rooms.owed.clear()
    for room in floor.room_ids():
        out += _settle(floor, room, now, "start", force=True)
    return out


def device_back(floor: FloorState, device: DeviceRef, now: datetime) -> Effects:
    """A device answers again: it gets what the room's mode says, whatever it holds."""
    room = device.room
    if room is None or room not in floor.rooms.by_room:
        return []
    m = floor.rooms.by_room[room]
    out = _settle(floor, room, now, "device")
    mode = m.energy.mode
    if mode is None or out:
        return out
    change = _target(floor, room, mode, now)
    return [w for w in floor.room_writes(room, change) if w.device == device]


def device_offline(floor: FloorState, device: DeviceRef, now: datetime) -> Effects:
    """Presence cannot be told while the room's lock or room I/O is offline."""
    room = device.room
    if room is None or room not in floor.rooms.by_room or device.role not in ("lock", "rio"):
        return []
    m = floor.rooms.by_room[room]
    if m.presence.state is None:
        return []
    m.presence.unknown()
    floor.touch(room)
    return _settle(floor, room, now, "presence")


def observe(floor: FloorState, seen: Observed, now: datetime, *, call_open: bool) -> Effects:
    """A room input's new value (``call_open``: a call was open before the kind decided)."""
    obs = seen.obs
    room = obs.room
    if room is None or room not in floor.rooms.by_room:
        return []
    m = floor.rooms.by_room[room]
    value = obs.value
    point = obs.point
    out: Effects = []
    if point == "door_open" and isinstance(value, bool):
        if seen.changed or (value and not seen.known_before):  # a first "closed" tells nothing
            rio = floor.layout.device(room, "rio")
            keycard = rio is not None and floor.points.value(rio, "keycard") is True
            check = floor.layout.energy.presence_check_s
            out += _presence(floor, room, m.presence.door(value, now, check, keycard), now)
        if value:
            out += _welcome(floor, room, now)
    elif point == "keycard" and value is True and (seen.changed or not seen.known_before):
        out += _presence(floor, room, m.presence.detection(Cause.KEYCARD), now)
    elif point == "motion_count" and seen.changed:
        out += _presence(floor, room, m.presence.detection(Cause.MOTION), now)
    elif point == "motion" and value is True:
        held = not seen.changed
        change = m.presence.motion_held(now) if held else m.presence.detection(Cause.MOTION)
        out += _presence(floor, room, change, now)
    elif point == "window_open" and isinstance(value, bool):
        m.energy.window_since = (m.energy.window_since or now) if value else None
        if not value:
            out += _settle(floor, room, now, "window_closed")
    elif point == "staff_count" and seen.changed and call_open:
        m.service.call_answered(now)
    elif point == "staff_present" and isinstance(value, bool) and seen.changed:
        call = floor.alarms.call_state(room) != "idle"
        happened = m.service.staff_key(value, now, call_open=call)
        if happened is not None:
            floor.touch(room)
            out.append(Emit(happened[0], room, happened[1]))
    elif point == "mur" and isinstance(value, bool):
        m.service.mur(value, now)
    elif point == "fan_state" and isinstance(value, int):
        m.ledger.set_fan(now, value > 0)
    elif point == "run_minutes" and isinstance(value, int):
        m.ledger.run_minutes_read(now, value)
    elif point == "energy_kwh" and isinstance(value, int | float) and not isinstance(value, bool):
        m.ledger.kwh_read(now, float(value))
    if point in LIGHT_POINTS:
        _lights_absent(floor, room, now)
    return out


def rental(floor: FloorState, room: str, started: bool, now: datetime) -> Effects:
    """A stay of the room started (``started``) or ended (checkout, expiry)."""
    m = floor.rooms.by_room.get(RoomId(room))
    if m is None:
        return []
    m.energy.manual = False
    out: Effects = []
    if started:
        m.presence.reset()  # the new guest's presence is not known until an input tells
        m.energy.unsold_due = None
        reason = "stay_started"
    else:
        m.energy.unsold_due = now + timedelta(seconds=floor.layout.energy.unsold_after_s)
        if m.energy.hold_stay is not None:
            m.energy.hold_stay = None
        out += _housekeeping(floor, room, "dirty", "gateway")
        out.append(SaveRoomStatus(RoomId(room), m.housekeeping, None))
        reason = "stay_ended"
    floor.touch(room)
    out += _settle(floor, room, now, reason, force=True)
    _lights_absent(floor, room, now)
    return out


def tick(floor: FloorState, now: datetime) -> Effects:
    """What fell due: presence re-checks, windows, lights, unsold, precondition, the ledger."""
    out: Effects = []
    settings = floor.layout.energy
    for room, m in floor.rooms.by_room.items():
        out += _presence(floor, room, m.presence.tick(now), now)
        e = m.energy
        due = _room_deadline(floor, room, m, now)
        if due is not None and due <= now:
            out += _settle(floor, room, now, _due_reason(m, now, settings.window_delay_s))
        if e.mode is Mode.AWAY and e.lights_off_due is not None and now >= e.lights_off_due:
            e.lights_off_due = None
            out += floor.room_writes(room, LightsOff())
        done = m.ledger.rollover(now, floor.layout.timezone)
        if done is not None:
            out.append(Emit("energy.daily", room, done.doc()))
            out.append(SaveLedger(((room, done.doc()),), keep_days=LEDGER_KEEP_DAYS))
    checkpoint = floor.rooms.checkpoint_at
    if checkpoint is not None and now >= checkpoint:
        out.append(checkpoint_ledger(floor, now))
    return out


def checkpoint_ledger(floor: FloorState, now: datetime) -> SaveLedger:
    """Today's totals of every room, brought up to now, to be saved."""
    floor.rooms.checkpoint_at = now + timedelta(seconds=LEDGER_CHECKPOINT_S)
    rows = []
    for room, m in floor.rooms.by_room.items():
        m.ledger.advance(now)
        rows.append((room, m.ledger.day.doc()))
    return SaveLedger(tuple(rows))


def next_deadline(floor: FloorState, now: datetime) -> datetime | None:
    """When ``tick`` next has something to do."""
    tz = floor.layout.timezone
    best = floor.rooms.checkpoint_at
    midnights: dict[object, datetime] = {}
    for room, m in floor.rooms.by_room.items():
        day = m.ledger.day.day
        if day not in midnights:
            midnights[day] = next_midnight(day, tz)
        for due in (
            m.presence.check_until,
            m.energy.lights_off_due if m.energy.mode is Mode.AWAY else None,
            _room_deadline(floor, room, m, now),
            midnights[day],
        ):
            if due is not None and (best is None or due < best):
                best = due
    return best


def room_fields(floor: FloorState, room: str, now: datetime) -> dict[str, object]:
    """The room state's v2 fields: rental, presence, energy, housekeeping, service."""
    m = floor.rooms.by_room.get(RoomId(room))
    occupancy, _ = floor.authz.occupancy(room, now)
    if m is None:
        return {"rental": "sold" if occupancy == "occupied" else "unsold"}
    presence = m.presence.state
    return {
        "rental": "sold" if occupancy == "occupied" else "unsold",
        "presence": None if presence is None else ("present" if presence else "absent"),
        "energy": {
            "mode": None if m.energy.mode is None else str(m.energy.mode),
            "since": None if m.energy.since is None else format_ts(m.energy.since),
        },
        "housekeeping": m.housekeeping,
        "service": "in_progress" if m.service.in_progress else "idle",
    }


# -- commands -----------------------------------------------------------------------------


def manual(floor: FloorState, room: str, now: datetime) -> Effects:
    """A ``set_climate`` override: ``manual`` until the next change of rental or presence."""
    m = floor.rooms.by_room.get(RoomId(room))
    if m is None:
        return []
    m.energy.manual = True
    return _settle(floor, room, now, "set_climate")


def hold(floor: FloorState, room: str, on: bool, now: datetime) -> Effects:
    """``set_energy``: comfort whatever the presence until the current stay ends (or off)."""
    m = floor.rooms.by_room[RoomId(room)]
    _, stay_id = floor.authz.occupancy(room, now)
    m.energy.hold_stay = stay_id if on else None
    out: Effects = [SaveRoomStatus(RoomId(room), m.housekeeping, m.energy.hold_stay)]
    floor.touch(room)
    return out + _settle(floor, room, now, "set_energy")


def set_housekeeping(floor: FloorState, room: str, status: str, by: str) -> Effects:
    """The PMS's housekeeping status of the room."""
    m = floor.rooms.by_room[RoomId(room)]
    out = _housekeeping(floor, room, status, by)
    return [*out, SaveRoomStatus(RoomId(room), m.housekeeping, m.energy.hold_stay)]


# -- helpers ------------------------------------------------------------------------------


def _presence(
    floor: FloorState, room: str, change: PresenceChange | None, now: datetime
) -> Effects:
    if change is None:
        return []
    m = floor.rooms.by_room[RoomId(room)]
    floor.touch(room)
    m.energy.manual = False
    out: Effects = [
        Emit("room.presence", room, {"present": change.present, "cause": str(change.cause)})
    ]
    sold = floor.authz.occupancy(room, now)[0] == "occupied"
    if (
        change.present
        and not sold
        and not m.service.in_progress
        and change.cause in (Cause.MOTION, Cause.KEYCARD)
    ):
        out.append(Emit("room.unsold_presence", room, {"cause": str(change.cause)}))
    out += _settle(floor, room, now, "presence")
    _lights_absent(floor, room, now)
    return out


def _facts(floor: FloorState, room: str, m: RoomMgmt, now: datetime) -> Facts:
    settings = floor.layout.energy
    occupancy, stay_id = floor.authz.occupancy(room, now)
    sold = occupancy == "occupied"
    e = m.energy
    window = e.window_since is not None and (now - e.window_since).total_seconds() >= (
        settings.window_delay_s
    )
    start = _next_stay_start(floor, room, now) if not sold else None
    ahead = timedelta(minutes=settings.precondition_min)
    return Facts(
        sold=sold,
        presence=m.presence.state,
        hold=sold and e.hold_stay is not None and e.hold_stay == stay_id,
        manual=e.manual,
        window=window,
        precondition=start is not None and start - ahead <= now,
        leaving=e.unsold_due is not None and now < e.unsold_due and m.presence.state is not False,
    )


def _settle(
    floor: FloorState, room: str, now: datetime, reason: str, *, force: bool = False
) -> Effects:
    """Choose the room's mode now; on a change (or ``force``), its writes and event."""
    m = floor.rooms.by_room[RoomId(room)]
    e = m.energy
    mode = choose(_facts(floor, room, m, now), e.mode)
    out: Effects = []
    changed = mode is not e.mode
    if changed:
        if e.mode is not None:  # the first mode after start is news to nobody (room state)
            data = {"mode": str(mode), "previous": str(e.mode), "reason": reason}
            out.append(Emit("energy.mode", room, data))
        e.mode, e.since, e.reason = mode, now, reason
        if mode is Mode.UNSOLD:
            e.unsold_due = None
        e.lights_off_due = (
            now + timedelta(seconds=floor.layout.energy.lights_off_absent_s)
            if mode is Mode.AWAY
            else None
        )
        floor.touch(room)
    if changed or force:
        change = _target(floor, room, mode, now)
        e.setpoint_c = change.setpoint_c
        comfort = _comfort(floor, room, now)
        setback = 0.0
        if change.setpoint_c is not None and mode in (Mode.AWAY, Mode.UNSOLD):
            setback = abs(change.setpoint_c - comfort)
        m.ledger.set_mode(now, str(mode), setback)
        if mode is not Mode.MANUAL:
            out += floor.room_writes(room, change)
    return out


def _target(floor: FloorState, room: str, mode: Mode, now: datetime) -> EnergyMode:
    settings = floor.layout.energy
    comfort = _comfort(floor, room, now)
    e = floor.rooms.by_room[RoomId(room)].energy
    tstat = floor.layout.device(room, "tstat")
    temp = tstat_mode = None
    if tstat is not None:
        temp = floor.points.last_known(tstat, "room_temp")
        tstat_mode = floor.points.last_known(tstat, "mode")
    if e.auto_held:  # it was auto until we held it to one way
        tstat_mode = "auto"
    temp_c = float(temp) if isinstance(temp, int | float) and not isinstance(temp, bool) else None
    cooling = is_cooling(comfort, temp_c, tstat_mode)
    auto = tstat_mode == "auto" and tstat is not None and floor.layout.has_point(tstat, "mode")
    lights_off = mode is Mode.AWAY and e.lights_off_due is None
    change = target(mode, settings, comfort, cooling, lights_off=lights_off, auto=auto)
    if change.setpoint_c is not None and tstat is not None:
        saving = mode in (Mode.AWAY, Mode.UNSOLD)
        held = _writable(floor, tstat, change.setpoint_c, up=cooling if saving else None)
        change = dataclasses.replace(change, setpoint_c=held)
    if change.tstat_mode == "auto" and not e.auto_held:
        return dataclasses.replace(change, tstat_mode=None)  # it is auto already
    if change.tstat_mode is not None:
        e.auto_held = change.tstat_mode != "auto"
    return change


def _writable(floor: FloorState, tstat: DeviceRef, value: float, *, up: bool | None) -> float:
    """``value`` as the thermostat can hold it: in its range, on its resolution (a set-back
    rounded toward saving, ``up`` when cooling; anything else to the nearest step)."""
    step = floor.layout.point_step(tstat, "setpoint")
    if step:
        steps = value / step
        n = (
            round(steps)
            if up is None
            else (math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9))
        )
        value = round(n * step, 6)
    low, high = floor.layout.point_range(tstat, "setpoint")
    return min(max(value, low), high)


def _comfort(floor: FloorState, room: str, now: datetime) -> float:
    """The comfort setpoint: the stay's (or the coming stay's) preference, its scene's, or
    ``occupied_setpoint_c``."""
    stay = _current_or_next_stay(floor, room, now)
    if stay is not None:
        sp = stay.preferences.get("setpoint_c")
        if isinstance(sp, int | float) and not isinstance(sp, bool):
            return float(sp)
        scene = _scene(floor, stay.preferences.get("scene"))
        if scene.setpoint_c is not None:
            return scene.setpoint_c
    return floor.layout.energy.occupied_setpoint_c


def _scene(floor: FloorState, name: object) -> Scene:
    scenes = floor.layout.scenes
    if isinstance(name, str) and name in scenes:
        return scenes[name]
    return scenes.get("welcome", Scene())


def _welcome(floor: FloorState, room: str, now: datetime) -> Effects:
    """The first entry of a stay: its scene's lights, and its climate (comfort), once."""
    occupancy, stay_id = floor.authz.occupancy(room, now)
    if occupancy != "occupied" or not stay_id or floor.welcomed.get(RoomId(room)) == stay_id:
        return []
    floor.welcomed[RoomId(room)] = stay_id
    stay = floor.authz.stay(room, stay_id)
    name = stay.preferences.get("scene") if stay is not None else None
    scene = _scene(floor, name)
    out: Effects = [MarkWelcomed(RoomId(room), stay_id)]
    out += floor.room_writes(room, Welcome(name if isinstance(name, str) else None, scene.lights))
    m = floor.rooms.by_room[RoomId(room)]
    if m.energy.mode is Mode.COMFORT:
        out += floor.room_writes(room, _target(floor, room, Mode.COMFORT, now))
    return out


def _housekeeping(floor: FloorState, room: str, status: str, by: str) -> Effects:
    m = floor.rooms.by_room[RoomId(room)]
    data = housekeeping_change(m.housekeeping, status, by)
    if data is None:
        return []
    m.housekeeping = status
    floor.touch(room)
    return [Emit("housekeeping.changed", room, data)]


def _lights_absent(floor: FloorState, room: str, now: datetime) -> None:
    m = floor.rooms.by_room[RoomId(room)]
    rio = floor.layout.device(room, "rio")
    lit = rio is not None and any(floor.points.value(rio, p) is True for p in LIGHT_POINTS)
    sold = floor.authz.occupancy(room, now)[0] == "occupied"
    on = lit and (not sold or m.presence.state is False)
    if on != m.ledger.lights_absent:
        m.ledger.set_lights_absent(now, on)


def _room_deadline(floor: FloorState, room: str, m: RoomMgmt, now: datetime) -> datetime | None:
    """When the room's mode may next change with time alone."""
    e = m.energy
    best: datetime | None = None
    if e.window_since is not None and e.mode is not Mode.WINDOW:
        best = e.window_since + timedelta(seconds=floor.layout.energy.window_delay_s)
    if e.unsold_due is not None and e.mode is not Mode.UNSOLD:
        best = e.unsold_due if best is None else min(best, e.unsold_due)
    # A sold room (comfort or away, not leaving) has no precondition to wait for.
    sold = e.mode in (Mode.COMFORT, Mode.AWAY) and e.unsold_due is None
    if not sold and e.mode is not Mode.PRECONDITION:
        start = _next_stay_start(floor, room, now)
        if start is not None and floor.authz.occupancy(room, now)[0] != "occupied":
            due = start - timedelta(minutes=floor.layout.energy.precondition_min)
            best = due if best is None else min(best, due)
    return best


def _due_reason(m: RoomMgmt, now: datetime, window_delay_s: float) -> str:
    e = m.energy
    since = e.window_since
    if since is not None and (now - since).total_seconds() >= window_delay_s:
        return "window_open"
    if e.unsold_due is not None and now >= e.unsold_due:
        return "unsold_after"
    return "precondition"


def _next_stay_start(floor: FloorState, room: str, now: datetime) -> datetime | None:
    starts = [
        s.valid_from for s in floor.authz.stays(room) if not s.ended(now) and s.valid_from > now
    ]
    return min(starts, default=None)


def _current_or_next_stay(floor: FloorState, room: str, now: datetime) -> Stay | None:
    _, stay_id = floor.authz.occupancy(room, now)
    if stay_id is not None:
        return floor.authz.stay(room, stay_id)
    coming = [s for s in floor.authz.stays(room) if not s.ended(now) and s.valid_from > now]
    return min(coming, key=lambda s: s.valid_from, default=None)
