"""Command handlers: each mqtt.md command type, decided against the floor's local state.

A handler runs synchronously: it asks the pure core, swaps the floor's state for the new
one and returns a Decision whose ``persist`` writes the decision's events and rows in the
same transaction as the command's replay record, and whose ``apply`` carries out the
device work after the commit. Nothing is awaited between deciding and submitting the
transaction, so decisions commit in the order they were made.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from gateway.commands import CommandProcessor, Decision
from gateway.config.profile import PollClass
from gateway.core.alarms import Refusal as AlarmRefusal
from gateway.core.authz import Refusal as AuthzRefusal
from gateway.core.effects import Audit, WritePoint
from gateway.floor import Effect, Floor
from gateway.messages import (
    AckAlarmBody,
    AddTokenBody,
    CheckinBody,
    CheckoutBody,
    ExtendBody,
    ResolveAlarmBody,
    ResyncBody,
    RevokeTokenBody,
    SetClimateBody,
    SetLightsBody,
    UnlockBody,
)

__all__ = ["register_handlers"]


def register_handlers(processor: CommandProcessor, floor: Floor, uplink: Any) -> None:
    """Register every command type of mqtt.md on the processor."""
    h = _Handlers(floor, uplink)
    processor.register("checkin", CheckinBody, h.checkin)
    processor.register("checkout", CheckoutBody, h.checkout)
    processor.register("extend", ExtendBody, h.extend)
    processor.register("add_token", AddTokenBody, h.add_token)
    processor.register("revoke_token", RevokeTokenBody, h.revoke_token)
    processor.register("unlock", UnlockBody, h.unlock)
    processor.register("set_climate", SetClimateBody, h.set_climate)
    processor.register("set_lights", SetLightsBody, h.set_lights)
    processor.register("ack_alarm", AckAlarmBody, h.ack_alarm)
    processor.register("resolve_alarm", ResolveAlarmBody, h.resolve_alarm)
    processor.register("resync", ResyncBody, h.resync)


class _Handlers:
    def __init__(self, floor: Floor, uplink: Any) -> None:
        self.floor = floor
        self.uplink = uplink

    # -- stays --------------------------------------------------------------------------

    def checkin(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, CheckinBody)
        prefs = body.preferences.model_dump(exclude_none=True) if body.preferences else None
        return self._authz(
            body.room,
            lambda a: a.checkin(
                body.room,
                body.stay_id,
                body.valid_from,
                body.valid_until,
                tuple(body.tokens),
                preferences=prefs,
                now=now,
            ),
            lock=True,
        )

    def checkout(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, CheckoutBody)
        return self._authz(body.room, lambda a: a.checkout(body.room, body.stay_id, now), lock=True)

    def extend(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, ExtendBody)
        return self._authz(
            body.room, lambda a: a.extend(body.room, body.stay_id, body.valid_until, now), lock=True
        )

    def add_token(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, AddTokenBody)
        return self._authz(
            body.room, lambda a: a.add_token(body.room, body.stay_id, body.token, now), lock=True
        )

    def revoke_token(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, RevokeTokenBody)
        return self._authz(
            body.room, lambda a: a.revoke_token(body.room, body.stay_id, body.token, now), lock=True
        )

    def unlock(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, UnlockBody)
        if (refused := self._unknown_room(body.room)) is not None:
            return refused
        if f"{body.room}/lock" not in self.floor.device_bus:
            return Decision(ok=False, code="conflict", message=f"room {body.room} has no lock")
        return self._authz(body.room, lambda a: a.unlock(body.room, body.by, body.reason, now))

    def _authz(self, room: str, op: Callable[[Any], Any], *, lock: bool = False) -> Decision:
        if (refused := self._unknown_room(room)) is not None:
            return refused
        result = op(self.floor.authz)
        if isinstance(result, AuthzRefusal):
            return Decision(ok=False, code=result.code, message=result.message)
        self.floor.authz, effects = result
        self.floor.locks.changing(effects)  # before any await: see LockKeeper.changing
        self.floor.timers_changed()
        devices = [f"{room}/lock"] if lock else []
        devices += [w.device for w in effects if isinstance(w, WritePoint)]
        return self._decided(effects, devices, room)

    # -- devices ------------------------------------------------------------------------

    def set_climate(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, SetClimateBody)
        if (refused := self._unknown_room(body.room)) is not None:
            return refused
        device = f"{body.room}/tstat"
        if device not in self.floor.device_bus:
            return Decision(
                ok=False, code="conflict", message=f"room {body.room} has no thermostat"
            )
        writes: list[WritePoint] = []
        if body.setpoint_c is not None:
            low, high = self.floor.point_range(device, "setpoint")
            if not low <= body.setpoint_c <= high:
                return Decision(
                    ok=False,
                    code="invalid",
                    message=f"setpoint_c {body.setpoint_c} is outside {low}..{high}",
                )
            writes.append(_w(device, "setpoint", body.setpoint_c))
        if body.mode is not None:
            writes.append(_w(device, "mode", body.mode))
        if body.fan is not None:
            writes.append(_w(device, "fan_speed", body.fan))
        if body.power is not None:
            writes.append(_w(device, "power", int(body.power)))
        missing = [w.point for w in writes if not self.floor.has_point(device, w.point)]
        if missing:
            return Decision(
                ok=False, code="invalid", message=f"{device} has no {', '.join(missing)}"
            )
        audit = Audit("central", "set_climate", body.room, body.model_dump(exclude_none=True))
        return self._decided([audit, *writes], [device], body.room)

    def set_lights(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, SetLightsBody)
        if (refused := self._unknown_room(body.room)) is not None:
            return refused
        device = f"{body.room}/rio"
        if device not in self.floor.device_bus:
            return Decision(ok=False, code="conflict", message=f"room {body.room} has no room I/O")
        writes = [_w(device, f"light_{c}", on) for c, on in body.circuits.items()]
        missing = [w.point for w in writes if not self.floor.has_point(device, w.point)]
        if missing:
            return Decision(
                ok=False, code="invalid", message=f"{device} has no {', '.join(missing)}"
            )
        return self._decided(list(writes), [device], body.room)

    # -- alarms -------------------------------------------------------------------------

    def ack_alarm(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, AckAlarmBody)
        return self._alarm(self.floor.ack_alarm(body.alarm_id, body.by))

    def resolve_alarm(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, ResolveAlarmBody)
        return self._alarm(self.floor.resolve_alarm(body.alarm_id, body.by))

    def _alarm(self, result: list[Effect] | AlarmRefusal) -> Decision:
        if isinstance(result, AlarmRefusal):
            return Decision(ok=False, code=result.code, message=result.message)
        return self._decided(result, [], None)

    def resync(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, ResyncBody)
        return Decision(ok=True, result={}, apply=self.uplink.republish_all)

    # -- helpers ------------------------------------------------------------------------

    def _unknown_room(self, room: str) -> Decision | None:
        if room in self.floor.rooms.rooms():
            return None
        return Decision(ok=False, code="unknown_room", message=f"room {room} is not on this floor")

    def _decided(
        self, effects: Sequence[Effect], devices: Sequence[str], room: str | None
    ) -> Decision:
        floor = self.floor
        pending = floor.pending_devices(devices)
        captured = list(effects)

        def persist(conn: sqlite3.Connection) -> None:
            floor.persist(conn, captured)

        def apply() -> None:
            floor.act(captured)
            if room is not None:
                floor.room_changed(room)

        return Decision(ok=True, result={"pending": pending}, persist=persist, apply=apply)


def _w(device: str, point: str, value: bool | int | float | str) -> WritePoint:
    return WritePoint(device, point, value, priority=PollClass.ROOM)
