"""Command handlers: each MQTT command type decided against the floor's state, pure.

A command type is a body model in ``gateway.model.messages.COMMAND_BODIES`` and one
function here registered with ``@handles("type")``. A handler takes the floor state, the
validated body and the command's context; it returns ``Done`` (its intents, the reply's
``result``, and the devices whose offline state the reply lists as ``pending``) or
``Refused`` with a code — having changed nothing. A handler swaps the floor's immutable
values (authorisation, alarms) only once it has decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from drivers.ids import DeviceRef
from drivers.profile import PollClass
from gateway.core import access, grms
from gateway.core.alarms import Refusal as AlarmRefusal
from gateway.core.authz import Authz, LocksChanged, Outcome
from gateway.core.authz import Refusal as AuthzRefusal
from gateway.core.effects import Audit, Republish, Restart, SaveConfig, WritePoint
from gateway.core.intents import Intent
from gateway.core.remote_config import ConfigEntry, Pending, Proposal, refusal_effects
from gateway.core.staff import FLOOR_ZONE, Schedule, StaffKey
from gateway.core.state import FloorState
from gateway.model.messages import (
    COMMAND_BODIES,
    AckAlarmBody,
    AddTokenBody,
    CheckinBody,
    CheckoutBody,
    ExtendBody,
    LockdownBody,
    MoveRoomBody,
    ReplayResult,
    ResolveAlarmBody,
    ResyncBody,
    RevokeTokenBody,
    SetClimateBody,
    SetEnergyBody,
    SetHousekeepingBody,
    SetLightsBody,
    StaffKeyBody,
    UnlockBody,
)

__all__ = ["HANDLERS", "Context", "Done", "Handler", "Refused", "handles"]


@dataclass(frozen=True, slots=True)
class Context:
    """The command being handled."""

    id: str
    type: str
    now: datetime
    operator: str | None = None  # who signed it; None: the floor's HMAC key

    @property
    def actor(self) -> str:
        """Who the audit log names: the operator, else the central system."""
        return self.operator or "central"


@dataclass(frozen=True, slots=True)
class Done:
    """Executed: its intents, the reply's result, and the devices it needs (for ``pending``)."""

    intents: Sequence[Intent] = ()
    result: dict[str, object] | None = None  # None: {"pending": [...]} from ``devices``
    devices: Sequence[DeviceRef] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """Refused with nothing changed: ``invalid``, ``unknown_room`` or ``conflict``.

    ``also``: what the refusal itself records besides ``command.rejected`` (e.g.
    ``config.refused``, its audit row).
    """

    code: str
    message: str
    also: Sequence[Intent] = ()


Handler = Callable[[FloorState, Any, Context], Done | Refused]
HANDLERS: dict[str, Handler] = {}
"""Every command type's handler (a test checks each body model has exactly one)."""

B = TypeVar("B", bound=BaseModel | Proposal)


def handles(type: str) -> Callable[[Callable[[FloorState, B, Context], Done | Refused]], Handler]:
    """Register the decorated function as the handler of ``type``."""
    if type not in COMMAND_BODIES:
        raise KeyError(f"no body model for command type {type!r}")

    def register(fn: Callable[[FloorState, B, Context], Done | Refused]) -> Handler:
        if type in HANDLERS:
            raise ValueError(f"a handler for {type!r} is already registered")
        HANDLERS[type] = cast(Handler, fn)
        return HANDLERS[type]

    return register


# -- stays ------------------------------------------------------------------------------


@handles("checkin")
def checkin(floor: FloorState, body: CheckinBody, ctx: Context) -> Done | Refused:
    """Authorise the stay's tokens for its time."""
    prefs = body.preferences.model_dump(exclude_none=True) if body.preferences else None
    return _authz(
        floor,
        body.room,
        lambda a: a.checkin(
            body.room,
            body.stay_id,
            body.valid_from,
            body.valid_until,
            tuple(body.tokens),
            preferences=prefs,
            now=ctx.now,
        ),
        lock=True,
    )


@handles("checkout")
def checkout(floor: FloorState, body: CheckoutBody, ctx: Context) -> Done | Refused:
    """Revoke every token of the stay now."""
    return _authz(floor, body.room, lambda a: a.checkout(body.room, body.stay_id, ctx.now), True)


@handles("extend")
def extend(floor: FloorState, body: ExtendBody, ctx: Context) -> Done | Refused:
    """Move the end of the stay."""
    return _authz(
        floor,
        body.room,
        lambda a: a.extend(body.room, body.stay_id, body.valid_until, ctx.now),
        lock=True,
    )


@handles("add_token")
def add_token(floor: FloorState, body: AddTokenBody, ctx: Context) -> Done | Refused:
    """Issue one more key for the stay."""
    return _authz(
        floor,
        body.room,
        lambda a: a.add_token(body.room, body.stay_id, body.token, ctx.now, ctx.actor),
        lock=True,
    )


@handles("revoke_token")
def revoke_token(floor: FloorState, body: RevokeTokenBody, ctx: Context) -> Done | Refused:
    """Revoke one key of the stay (a lost card)."""
    return _authz(
        floor,
        body.room,
        lambda a: a.revoke_token(body.room, body.stay_id, body.token, ctx.now, ctx.actor),
        lock=True,
    )


@handles("unlock")
def unlock(floor: FloorState, body: UnlockBody, ctx: Context) -> Done | Refused:
    """Remote momentary unlock, audited."""
    if (refused := _unknown_room(floor, body.room)) is not None:
        return refused
    if floor.layout.device(body.room, "lock") is None:
        return Refused("conflict", f"room {body.room} has no lock")
    return _authz(floor, body.room, lambda a: a.unlock(body.room, body.by, body.reason, ctx.now))


@handles("move_room")
def move_room(floor: FloorState, body: MoveRoomBody, ctx: Context) -> Done | Refused:
    """Move a stay to another room, the old one opening until the grace ends."""
    for room in (body.from_, body.to):
        if (refused := _unknown_room(floor, room)) is not None:
            return refused
    outcome = floor.authz.move_room(body.stay_id, body.from_, body.to, body.grace_s, ctx.now)
    if isinstance(outcome, AuthzRefusal):
        return Refused(outcome.code, outcome.message)
    floor.authz, intents = outcome
    floor.touch(body.from_)
    floor.touch(body.to)
    locks = [d for r in (body.to, body.from_) if (d := floor.layout.device(r, "lock"))]
    return Done(intents, devices=locks)


@handles("staff_key")
def staff_key(floor: FloorState, body: StaffKeyBody, ctx: Context) -> Done | Refused:
    """Add or revoke a staff credential."""
    if body.op == "revoke":
        outcome = access.revoke_staff_key(floor.authz, body.key_id, ctx.actor, ctx.now)
    else:
        zones = body.zones or []
        unknown = [z for z in zones if z != FLOOR_ZONE and floor.layout.room(z) is None]
        if unknown:
            return Refused("unknown_room", f"zones {', '.join(unknown)}: not on this floor")
        assert body.token is not None  # the body model requires it for add
        try:
            schedule = (
                None
                if body.schedule is None
                else Schedule.parse(body.schedule.days, body.schedule.from_, body.schedule.until)
            )
        except ValueError as exc:
            return Refused("invalid", str(exc))
        key = StaffKey(
            key_id=body.key_id,
            token=body.token,
            zones=frozenset(zones),
            schedule=schedule,
            security=body.security,
            source="command",
            order=int(ctx.now.timestamp() * 1000),
        )
        outcome = access.add_staff_key(floor.authz, key, ctx.actor, ctx.now)
    if isinstance(outcome, AuthzRefusal):
        return Refused(outcome.code, outcome.message)
    floor.authz, intents = outcome
    return Done(intents, devices=_locks_of(floor, intents))


@handles("lockdown")
def lockdown(floor: FloorState, body: LockdownBody, ctx: Context) -> Done | Refused:
    """Lockdown on or off."""
    outcome = access.set_lockdown(floor.authz, body.on, body.by, body.reason, ctx.now)
    if isinstance(outcome, AuthzRefusal):
        return Refused(outcome.code, outcome.message)
    floor.authz, intents = outcome
    return Done(intents, devices=_locks_of(floor, intents))


def _locks_of(floor: FloorState, intents: Sequence[Intent]) -> list[DeviceRef]:
    """The locks of the rooms whose locks these intents change."""
    return [
        d
        for i in intents
        if isinstance(i, LocksChanged)
        for r in i.rooms
        if (d := floor.layout.device(r, "lock")) is not None
    ]


def _authz(
    floor: FloorState, room: str, op: Callable[[Authz], Outcome], lock: bool = False
) -> Done | Refused:
    if (refused := _unknown_room(floor, room)) is not None:
        return refused
    outcome = op(floor.authz)
    if isinstance(outcome, AuthzRefusal):
        return Refused(outcome.code, outcome.message)
    floor.authz, intents = outcome
    devices = [DeviceRef.of(room, "lock")] if lock else []
    devices += [w.device for w in intents if isinstance(w, WritePoint)]
    floor.touch(room)
    return Done(intents, devices=devices)


# -- devices ----------------------------------------------------------------------------


@handles("set_climate")
def set_climate(floor: FloorState, body: SetClimateBody, ctx: Context) -> Done | Refused:
    """Change the thermostat, within the profile's setpoint range."""
    if (refused := _unknown_room(floor, body.room)) is not None:
        return refused
    device = floor.layout.device(body.room, "tstat")
    if device is None:
        return Refused("conflict", f"room {body.room} has no thermostat")
    writes: list[WritePoint] = []
    if body.setpoint_c is not None:
        low, high = floor.layout.point_range(device, "setpoint")
        if not low <= body.setpoint_c <= high:
            return Refused("invalid", f"setpoint_c {body.setpoint_c} is outside {low}..{high}")
        writes.append(_w(device, "setpoint", body.setpoint_c))
    if body.mode is not None:
        writes.append(_w(device, "mode", body.mode))
    if body.fan is not None:
        writes.append(_w(device, "fan_speed", body.fan))
    if body.power is not None:
        writes.append(_w(device, "power", int(body.power)))
    if refused := _missing_points(floor, device, writes):
        return refused
    audit = Audit(ctx.actor, "set_climate", body.room, body.model_dump(exclude_none=True))
    floor.touch(body.room)
    manual = grms.manual(floor, body.room, ctx.now)
    return Done([audit, *manual, *writes], devices=[device])


@handles("set_lights")
def set_lights(floor: FloorState, body: SetLightsBody, ctx: Context) -> Done | Refused:
    """Switch light circuits."""
    if (refused := _unknown_room(floor, body.room)) is not None:
        return refused
    device = floor.layout.device(body.room, "rio")
    if device is None:
        return Refused("conflict", f"room {body.room} has no room I/O")
    writes = [_w(device, f"light_{c}", on) for c, on in body.circuits.items()]
    if refused := _missing_points(floor, device, writes):
        return refused
    floor.touch(body.room)
    return Done(writes, devices=[device])


# -- guest-room management ----------------------------------------------------------------


@handles("set_energy")
def set_energy(floor: FloorState, body: SetEnergyBody, ctx: Context) -> Done | Refused:
    """Hold the room in comfort until its stay ends (or release the hold)."""
    if (refused := _unknown_room(floor, body.room)) is not None:
        return refused
    occupancy, _ = floor.authz.occupancy(body.room, ctx.now)
    if body.hold and occupancy != "occupied":
        return Refused("conflict", f"room {body.room} has no stay to hold comfort for")
    audit = Audit("central", "set_energy", body.room, {"hold": body.hold})
    intents = [audit, *grms.hold(floor, body.room, body.hold, ctx.now)]
    return Done(intents, devices=[w.device for w in intents if isinstance(w, WritePoint)])


@handles("set_housekeeping")
def set_housekeeping(floor: FloorState, body: SetHousekeepingBody, ctx: Context) -> Done | Refused:
    """The PMS's housekeeping status (``housekeeping.changed`` when it changes)."""
    if (refused := _unknown_room(floor, body.room)) is not None:
        return refused
    return Done(grms.set_housekeeping(floor, body.room, body.status, body.by), result={})


# -- alarms -----------------------------------------------------------------------------


@handles("ack_alarm")
def ack_alarm(floor: FloorState, body: AckAlarmBody, ctx: Context) -> Done | Refused:
    """Acknowledge: escalation stops."""
    result = floor.alarms.ack(body.alarm_id, body.by, ctx.now)
    if isinstance(result, AlarmRefusal):
        return Refused(result.code, result.message)
    floor.alarms, effects = result
    return Done(effects)


@handles("resolve_alarm")
def resolve_alarm(floor: FloorState, body: ResolveAlarmBody, ctx: Context) -> Done | Refused:
    """Resolve a technical alarm or a bedside call."""
    result = floor.alarms.resolve(body.alarm_id, body.by, ctx.now)
    if isinstance(result, AlarmRefusal):
        return Refused(result.code, result.message)
    floor.alarms, effects = result
    return Done(effects)


@handles("resync")
def resync(floor: FloorState, body: ResyncBody, ctx: Context) -> Done | Refused:
    """Publish the status, every open alarm and every room state again."""
    return Done([Republish()], result={})


# -- configuration ----------------------------------------------------------------------


@handles("apply_config")
def apply_config(floor: FloorState, proposal: Proposal, ctx: Context) -> Done | Refused:
    """Keep the checked file and restart onto it, pending confirmation (operations.md)."""
    record = floor.config
    if proposal.problems:
        count = len(proposal.problems)
        reason = f"{count} problem{'s' if count != 1 else ''}: " + "; ".join(proposal.problems)
        return Refused("invalid", reason, refusal_effects(proposal, record, reason))
    if proposal.conflicts:
        reason = "cannot be changed remotely: " + "; ".join(proposal.conflicts)
        return Refused("conflict", reason, refusal_effects(proposal, record, reason))
    if record.pending is not None:
        until = record.pending.deadline
        reason = f"configuration {record.pending.sha256[:12]} is being confirmed" + (
            f" until {until.isoformat()}" if until else ""
        )
        return Refused("conflict", reason, refusal_effects(proposal, record, reason))
    result: dict[str, object] = {"sha256": proposal.sha256, "confirm_s": proposal.confirm_s}
    if proposal.sha256 == proposal.running:
        return Done(result={**result, "unchanged": True})
    offline = sum(1 for d in floor.layout.devices if not floor.points.online(d))
    pending = Pending(proposal.sha256, proposal.confirm_s, offline, by=proposal.by)
    new = replace(record, base=record.base or proposal.local, pending=pending)
    detail = {
        "sha256": proposal.sha256,
        "confirm_s": proposal.confirm_s,
        "summary": proposal.summary,
        "offline_before": offline,
    }
    return Done(
        [
            SaveConfig(
                new,
                (proposal.sha256, proposal.text),
                ConfigEntry("applying", proposal.sha256, None, proposal.by),
            ),
            Audit(proposal.by, "config.apply", None, detail),
            Restart(f"apply_config {proposal.sha256[:12]}"),
        ],
        result={**result, "restarting": True},
    )


@handles("replay")
def replay(floor: FloorState, body: ReplayResult, ctx: Context) -> Done | Refused:
    """Record the reply of a replay: the pipeline read the stored range and had it published
    again before submitting (the core never reads the store), so ``body`` is its result."""
    return Done(result=body.to_dict())


# -- helpers ----------------------------------------------------------------------------


def _unknown_room(floor: FloorState, room: str) -> Refused | None:
    if floor.layout.room(room) is not None:
        return None
    return Refused("unknown_room", f"room {room} is not on this floor")


def _missing_points(
    floor: FloorState, device: DeviceRef, writes: Sequence[WritePoint]
) -> Refused | None:
    missing = [w.point for w in writes if not floor.layout.has_point(device, w.point)]
    if not missing:
        return None
    return Refused("invalid", f"{device} has no {', '.join(missing)}")


def _w(device: DeviceRef, point: str, value: bool | float | str) -> WritePoint:
    return WritePoint(device, point, value, priority=PollClass.ROOM)


def pending(floor: FloorState, devices: Sequence[DeviceRef]) -> list[str]:
    """Which of these devices are offline (the reply's ``result.pending``), by name."""
    return sorted(
        {str(d) for d in devices if d in floor.layout.devices and not floor.points.online(d)}
    )
