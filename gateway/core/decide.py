"""The floor's one decision function: ``decide(state, input, now) -> Decision``.

Every input (gateway.core.inputs) descends here once and comes back up once as effects
(gateway.core.effects): an observation goes to the kind of its device (the registry of
gateway.core.kinds), a panel message and the passing of time to the alarm core, a command
to its handler (gateway.core.handlers). Pure: no I/O, no clock; ``now`` is an argument.
The state is the committer's (gateway.core.state): only this module's callees change it.

Also here: the floor restored at start, the room state document, what goes out first on a
(re)connect, and when the next decision falls due.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import assert_never

from drivers.ids import RoomId
from drivers.observations import (
    DeviceFault,
    DeviceOffline,
    DeviceOnline,
    PointObserved,
    PointsRead,
)
from drivers.panelproto import CallCancelled, CallPlaced, LineFault, PanelOffline, PanelOnline
from gateway.core import freshness, grms, handlers, wellbeing
from gateway.core.alarms import Alarm, Alarms
from gateway.core.alarms import Refusal as AlarmRefusal
from gateway.core.authz import Authz, Stay
from gateway.core.effects import (
    Audit,
    DeviceBack,
    Effect,
    Emit,
    ReconcileLock,
    RecordCommand,
    SaveAlarm,
    SaveLogHead,
    WritePoint,
)
from gateway.core.inputs import (
    AccessLogRead,
    AlarmAction,
    AuditAction,
    ClockJumped,
    CommandRefused,
    ConfigVerdict,
    Input,
    LampChecked,
    Lifecycle,
    LinkChanged,
    LockRepaired,
    RunCommand,
    StorageChanged,
    Tick,
    UplinkRefusing,
)
from gateway.core.intents import Intent, expand
from gateway.core.kinds import ARRAYS, KINDS
from gateway.core.kinds import lock as lock_kind
from gateway.core.kinds.base import DeviceKind, Observed, Values
from gateway.core.locksync import SLOT_COUNT, access_event, int_to_token
from gateway.core.points import PointTable
from gateway.core.remote_config import ConfigRecord, verdict_effects
from gateway.core.staff import Lockdown, StaffAccess, StaffKey
from gateway.core.state import Effects, FloorState, Layout
from gateway.model.messages import Reply, ReplyError
from gateway.model.time import format_ts, to_ms

__all__ = [
    "Decision",
    "Outcome",
    "Stored",
    "current_state",
    "decide",
    "next_deadline",
    "restore",
    "room_snapshot",
]

Outcome = bytes | Alarm | AlarmRefusal | None
"""What the one who submitted an input waits for: a command's reply, an alarm acted on."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The effects of one input, in order, and its outcome."""

    effects: Effects
    outcome: Outcome = None


@dataclass(frozen=True, slots=True)
class Stored:
    """What the floor keeps on disk across restarts."""

    values: Mapping[tuple[str, str], object]  # the point cache: (device name, point key)
    stays: list[Stay]
    alarms: list[Alarm]
    welcomed: Mapping[str, str]  # room -> stay whose welcome scene ran
    # room -> (housekeeping status, the stay a set_energy hold is for)
    room_status: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    ledger: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # room -> latest day
    config: ConfigRecord = field(default_factory=ConfigRecord)  # gateway.core.remote_config
    staff_keys: Sequence[StaffKey] = ()  # added by command
    revoked: Sequence[tuple[str, str]] = ()  # (key id, token hash) of revoked staff keys
    lockdown: Lockdown | None = None


def restore(
    layout: Layout,
    stored: Stored,
    now: datetime,
    *,
    new_id: Callable[[], str],
    registry: Mapping[str, DeviceKind] = KINDS,
) -> tuple[FloorState, Effects]:
    """The floor as it was, and what fell due while the daemon was down.

    Escalation levels and stay boundaries that passed are decided at once, every lamp is
    asserted as the open calls want it, every lock's slots are read and reconciled, and
    every room's devices are brought to what its energy mode says.
    """
    alarms, alarm_effects = Alarms.restore(
        layout.alarms, stored.alarms, now, link_up=False, new_id=new_id
    )
    staff = StaffAccess.restore(layout.staff, stored.staff_keys, stored.revoked, stored.lockdown)
    guest_slots = SLOT_COUNT - layout.staff.staff_slots
    authz, boundary = Authz.from_stays(stored.stays, slot_count=guest_slots, staff=staff).tick(now)
    floor = FloorState(
        layout=layout,
        registry=registry,
        points=PointTable(ARRAYS, stored.values),
        authz=authz,
        alarms=alarms,
        welcomed={RoomId(r): s for r, s in stored.welcomed.items()},
        kinds={role: k.new_state() for role, k in registry.items()},
        config=stored.config,
        rooms=grms.Rooms.restore(layout, now, stored.room_status, stored.ledger),
    )
    effects = grms.start(floor, now)
    effects += expand(floor, [*alarm_effects, *boundary], now)
    effects += [
        ReconcileLock(r.room, "verify", read_slots=True)
        for r in layout.rooms
        if layout.device(r.room, "lock") is not None
    ]
    return floor, effects


def decide(floor: FloorState, item: Input, now: datetime) -> Decision:
    """What ``item`` decides at ``now``; the state is updated in place."""
    match item:
        case PointObserved():
            return Decision(_observed(floor, item, now))
        case PointsRead():
            freshness.read(floor, item, now)
            return Decision([])
        case DeviceOnline() | DeviceOffline() | DeviceFault():
            return Decision(_health(floor, item, now))
        case CallPlaced() | CallCancelled() | LineFault() | PanelOffline() | PanelOnline():
            return Decision(_panel(floor, item, now))
        case Tick():
            return Decision(_tick(floor, now))
        case LinkChanged(up=up):
            if up == floor.link_up:
                return Decision([])
            floor.link_up = up
            floor.alarms, effects = floor.alarms.link_changed(up, now)
            return Decision(expand(floor, effects, now))
        case UplinkRefusing(refusing=refusing):
            floor.alarms, effects = floor.alarms.uplink_refusing(refusing, now)
            return Decision(expand(floor, effects, now))
        case ClockJumped():
            return Decision(
                [
                    ReconcileLock(r.room, "change")
                    for r in floor.layout.rooms
                    if floor.layout.device(r.room, "lock") is not None
                ]
            )
        case RunCommand():
            return _command(floor, item, now)
        case CommandRefused(id=cid, code=code, message=message, recorded=recorded, by=by):
            reply = _error_reply(cid, code, message, by)
            refused: Effects = [_by(e, by) for e in _rejected(floor, cid, code, now)]
            if recorded:
                refused.append(RecordCommand(cid, now, reply))
            return Decision(refused, reply)
        case AlarmAction():
            return _alarm_action(floor, item, now)
        case AuditAction(actor=actor, action=action, room=room, detail=detail):
            return Decision([Audit(actor, action, room, detail)])
        case LockRepaired(room=room, device=device, added=added, removed=removed, drift=drift):
            if not drift:
                return Decision([])
            data = {"added": added, "removed": removed, "device": str(device)}
            return Decision(
                [
                    Emit("lock.drift_repaired", room, data),
                    Audit("gateway", "lock.drift_repaired", room, data),
                ]
            )
        case AccessLogRead():
            return Decision(_access_log(floor, item, now))
        case StorageChanged(failing=failing):
            floor.alarms, effects = floor.alarms.storage(failing, now)
            return Decision(expand(floor, effects, now))
        case LampChecked(device=device, point=point, ok=ok):
            if device.room is None:
                return Decision([])
            floor.alarms, effects = floor.alarms.lamp_checked(device.room, point, ok, now)
            return Decision(expand(floor, effects, now))
        case Lifecycle(event=event, data=data):
            if event == "gateway.stopping":
                return Decision([Emit(event, None, data), grms.checkpoint_ledger(floor, now)])
            return Decision([Emit(event, None, data)])
        case ConfigVerdict(sha256=sha, problems=problems):
            verdict = verdict_effects(floor.config, sha, problems)
            if verdict is None:
                return Decision([])
            floor.config, told = verdict
            return Decision(told)
        case _:
            assert_never(item)


def room_snapshot(floor: FloorState, room: RoomId, now: datetime) -> dict[str, object]:
    """The retained room state document of one room, now; unknown values are null."""
    layout = floor.layout.room(room)
    if layout is None:
        raise KeyError(room)
    occupancy, stay_id = floor.authz.occupancy(room, now)
    doc: dict[str, object] = {
        "schema": 1,
        "room": room,
        "ts": format_ts(now),
        "occupancy": occupancy,
        "stay_id": stay_id,
    }
    doc.update(grms.room_fields(floor, room, now))
    present = {d.role: d for d in layout.devices}
    for role, k in _by_fields_order(floor.registry):
        device = present.get(role)
        doc.update(k.room_fields(None if device is None else Values(device, floor.points.value)))
    doc["call"] = floor.alarms.call_state(room)
    doc["devices"] = {
        d.role: "online" if floor.points.online(d) else "offline" for d in layout.devices
    }
    doc.update(freshness.room_fields(floor, room, now))
    return doc


def current_state(floor: FloorState, now: datetime) -> list[tuple[str, dict[str, object] | None]]:
    """Every open alarm, then every room state: what goes out first on a (re)connect."""
    out: list[tuple[str, dict[str, object] | None]] = [
        (f"alarms/{a.alarm_id}", a.snapshot()) for a in floor.alarms.open_alarms()
    ]
    out += [(f"rooms/{r}/state", room_snapshot(floor, r, now)) for r in floor.room_ids()]
    return out


def next_deadline(floor: FloorState, now: datetime) -> datetime | None:
    """When a ``Tick`` next has something to do (None: nothing scheduled).

    The engine asks after every batch it commits, so this stays cheap: ``now`` is taken
    to the millisecond once (as every stored instant is), not once per room and stay.
    """
    now = to_ms(now)
    candidates = [
        floor.authz.next_boundary(now),
        floor.alarms.next_deadline(),
        floor.rejections.next_deadline(),
    ]
    candidates += [k.next_deadline(floor) for k in floor.registry.values()]
    candidates.append(grms.next_deadline(floor, now))
    candidates.append(wellbeing.next_deadline(floor, now))
    return min((c for c in candidates if c is not None), default=None)


# -- devices ----------------------------------------------------------------------------


def _observed(floor: FloorState, obs: PointObserved, now: datetime) -> Effects:
    k = floor.registry.get(obs.device.role)
    if k is None:
        return []
    before, known = floor.points.observe(obs, cache=obs.point not in k.saved_with_decision)
    seen = Observed(obs, before, known)
    call_open = obs.room is not None and floor.alarms.call_state(obs.room) != "idle"
    effects = k.observe(floor, seen, now)
    if obs.point in wellbeing.ACTIVITY_POINTS and seen.changed and obs.room is not None:
        wellbeing.activity(floor, obs.room, now)
    if obs.point in grms.ROOM_INPUTS:
        effects += grms.observe(floor, seen, now, call_open=call_open)
    floor.touch(obs.room)
    return expand(floor, effects, now)


def _health(
    floor: FloorState, obs: DeviceOnline | DeviceOffline | DeviceFault, now: datetime
) -> Effects:
    device = obs.device
    data: dict[str, object] = {"device": str(device)}
    k = floor.registry.get(device.role)
    out: list[Intent] = []
    match obs:
        case DeviceFault(code=code):
            return [Emit("device.fault", device.room, {**data, "code": code})]
        case DeviceOffline(reason=reason):
            floor.points.online_changed(device, online=False)
            out.append(Emit("device.offline", device.room, {**data, "reason": reason}))
            if k is not None:
                out += k.went_offline(floor, device, now)
            out += grms.device_offline(floor, device, now)
        case DeviceOnline():
            if floor.points.online_changed(device, online=True):
                out.append(Emit("device.online", device.room, data))
            if k is not None:
                out += k.came_online(floor, device, now)
            out += grms.device_back(floor, device, now)
            sent = {e for e in out if isinstance(e, WritePoint)}
            out += [e for e in floor.alarms.outputs_for(device) if e not in sent]
            out.append(DeviceBack(device))
        case _:
            assert_never(obs)
    floor.touch(device.room)
    return expand(floor, out, now)


def _panel(
    floor: FloorState,
    event: CallPlaced | CallCancelled | LineFault | PanelOffline | PanelOnline,
    now: datetime,
) -> Effects:
    alarms = floor.alarms
    out: list[Intent] = []
    match event:
        case CallPlaced(bus=bus, room=room, point=point):
            floor.alarms, effects = alarms.panel_call(bus, room, point, now)
            if floor.layout.room(room) is not None:
                wellbeing.activity(floor, room, now)
        case CallCancelled(bus=bus, room=room, point=point):
            floor.alarms, effects = alarms.panel_cancel(bus, room, point, now)
        case LineFault(bus=bus, room=room, point=point, code=code):
            floor.alarms, effects = alarms.panel_fault(bus, room, point, code, now)
        case PanelOffline(bus=bus):
            out.append(Emit("callpanel.offline", None, {"bus": bus}))
            floor.alarms, effects = alarms.panel_offline(bus, now)
        case PanelOnline(bus=bus):
            out.append(Emit("callpanel.online", None, {"bus": bus}))
            floor.alarms, effects = alarms.panel_online(bus, now)
        case _:
            assert_never(event)
    return expand(floor, [*out, *effects], now)


def _tick(floor: FloorState, now: datetime) -> Effects:
    floor.authz, authz_effects = floor.authz.tick(now)
    floor.alarms, alarm_effects = floor.alarms.tick(now)
    floor.rejections, rejected = floor.rejections.due(now)
    out: list[Intent] = [*authz_effects, *alarm_effects, *rejected]
    for k in floor.registry.values():
        out += k.tick(floor, now)
    out += grms.tick(floor, now)
    out += wellbeing.tick(floor, now)
    freshness.tick(floor, now)
    return expand(floor, out, now)


def _access_log(floor: FloorState, read: AccessLogRead, now: datetime) -> Effects:
    device = read.device
    room = device.room
    out: Effects = []
    if room is None:
        return [SaveLogHead(device, read.last_seen)]
    if read.gap:
        out.append(
            Audit("gateway", "access_log.gap", room, {"device": str(device), "lost": read.gap})
        )
    for entry in read.entries:
        token = int_to_token(entry.token) if entry.token else None
        stay_id = floor.authz.stay_of_token(room, token) if token else None
        key_id = floor.authz.staff.key_of_token(token) if token and not stay_id else None
        out.append(access_event(entry, room, stay_id, key_id))
        if entry.result == "granted":
            lock_kind.key_granted(floor, room, staff=key_id is not None, at=now)
    out.append(SaveLogHead(device, read.last_seen))
    return out


# -- commands ---------------------------------------------------------------------------


def _command(floor: FloorState, cmd: RunCommand, now: datetime) -> Decision:
    handler = handlers.HANDLERS[cmd.type]
    done = handler(floor, cmd.body, handlers.Context(cmd.id, cmd.type, now, cmd.operator))
    by = cmd.operator
    if isinstance(done, handlers.Refused):
        reply = _error_reply(cmd.id, done.code, done.message, by)
        rejected = [_by(e, by) for e in _rejected(floor, cmd.id, done.code, now)]
        also = [_by(e, by) for e in expand(floor, done.also, now)]
        return Decision([*rejected, *also, RecordCommand(cmd.id, now, reply)], reply)
    effects = [_by(e, by) for e in expand(floor, done.intents, now)]
    result = done.result
    if result is None:
        result = {"pending": handlers.pending(floor, done.devices)}
    reply = Reply(id=cmd.id, ok=True, result=result, by=by).to_json()
    return Decision([*effects, RecordCommand(cmd.id, now, reply)], reply)


def _by(effect: Effect, operator: str | None) -> Effect:
    """mqtt.md: every event an operator-signed command causes carries ``data.by``; its
    audit rows name the operator."""
    if operator is None:
        return effect
    match effect:
        case Emit(data=data):
            return dataclasses.replace(effect, data={**data, "by": operator})
        case Audit():
            return dataclasses.replace(effect, actor=operator)
        case _:
            return effect


def _alarm_action(floor: FloorState, action: AlarmAction, now: datetime) -> Decision:
    if action.op == "ack":
        result = floor.alarms.ack(action.alarm_id, action.by, now)
    else:
        result = floor.alarms.resolve(action.alarm_id, action.by, now)
    if isinstance(result, AlarmRefusal):
        return Decision([], result)
    floor.alarms, effects = result
    saved = [e.alarm for e in effects if isinstance(e, SaveAlarm)]
    mine = [a for a in saved if a.alarm_id == action.alarm_id]
    return Decision(expand(floor, effects, now), mine[-1] if mine else None)


def _rejected(floor: FloorState, command_id: str, code: str, now: datetime) -> Effects:
    """``command.rejected`` for a refusal: its own event, or counted in a flood."""
    floor.rejections, events = floor.rejections.refused(command_id, code, now)
    return list(events)


def _error_reply(command_id: str, code: str, message: str, by: str | None = None) -> bytes:
    error = ReplyError.model_validate({"code": code, "message": message})
    return Reply(id=command_id, ok=False, error=error, by=by).to_json()


def _by_fields_order(registry: Mapping[str, DeviceKind]) -> Iterable[tuple[str, DeviceKind]]:
    return sorted(
        ((r, k) for r, k in registry.items() if k.room_level), key=lambda rk: rk[1].fields_order
    )
