"""A room of the demo floor driven through ``decide`` with an injected clock (no buses)."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from drivers.ids import DeviceRef, RoomId
from drivers.observations import DeviceOffline, DeviceOnline, PointObserved
from gateway.core import inputs
from gateway.core.decide import Stored, decide, restore, room_snapshot
from gateway.core.effects import Effect, Emit, WritePoint
from gateway.core.state import EnergySettings, FloorState, Layout
from gateway.model.messages import COMMAND_BODIES
from gateway.model.time import format_ts

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
_ids = (f"x{i}" for i in itertools.count())


class RoomDriver:
    """Room 1201 (thermostat, lock, room I/O) of the demo floor, every device online."""

    def __init__(
        self,
        layout: Layout,
        *,
        energy: dict[str, Any] | None = None,
        timezone: tzinfo | None = None,
        room: str = "1201",
        stored: Stored | None = None,
        at: datetime = T0,
    ) -> None:
        changes: dict[str, Any] = {}
        if energy:
            changes["energy"] = dataclasses.replace(EnergySettings(), **energy)
        if timezone is not None:
            changes["timezone"] = timezone
        self.layout = dataclasses.replace(layout, **changes)
        self.room = room
        self.now = at
        self.floor: FloorState
        self.floor, self.initial = restore(
            self.layout, stored or Stored({}, [], [], {}), at, new_id=lambda: next(_ids)
        )
        self.effects: list[Effect] = list(self.initial)
        for d in self.layout.room(room).devices:  # type: ignore[union-attr]
            self.run(DeviceOnline(d, 0.0))
        self.baseline()

    # -- inputs ----------------------------------------------------------------------------

    def run(self, item: inputs.Input) -> list[Effect]:
        """Decide one input at the current time; remember its effects."""
        out = list(decide(self.floor, item, self.now).effects)
        self.effects += out
        return out

    def see(self, role: str, point: str, value: object) -> list[Effect]:
        """An observation of this room's device."""
        device = DeviceRef.of(self.room, role)
        return self.run(PointObserved(device, point, 0, value, 0.0))  # type: ignore[arg-type]

    def offline(self, role: str) -> list[Effect]:
        return self.run(DeviceOffline(DeviceRef.of(self.room, role), "timeout", 0.0))

    def online(self, role: str) -> list[Effect]:
        return self.run(DeviceOnline(DeviceRef.of(self.room, role), 0.0))

    def at(self, seconds: float) -> list[Effect]:
        """Move the clock to ``seconds`` after the start and tick."""
        self.now = T0 + timedelta(seconds=seconds)
        return self.run(inputs.Tick())

    def later(self, seconds: float) -> list[Effect]:
        """Move the clock on by ``seconds`` and tick."""
        self.now += timedelta(seconds=seconds)
        return self.run(inputs.Tick())

    def command(self, type_: str, body: dict[str, Any]) -> list[Effect]:
        model = COMMAND_BODIES[type_].model_validate({"room": self.room, **body})
        return self.run(inputs.RunCommand(next(_ids), type_, model))

    def checkin(
        self, stay_id: str = "S1", start_s: float = -3600, hours: float = 48, **prefs: Any
    ) -> list[Effect]:
        body: dict[str, Any] = {
            "stay_id": stay_id,
            "valid_from": format_ts(T0 + timedelta(seconds=start_s)),
            "valid_until": format_ts(T0 + timedelta(seconds=start_s, hours=hours)),
            "tokens": ["00000000000000a1"],
        }
        if prefs:
            body["preferences"] = prefs
        return self.command("checkin", body)

    def checkout(self, stay_id: str = "S1") -> list[Effect]:
        return self.command("checkout", {"stay_id": stay_id})

    def baseline(self) -> None:
        """Every room input known and quiet: door closed, no card, no motion, window shut."""
        for role, point, value in (
            ("lock", "door_open", False),
            ("rio", "keycard", False),
            ("rio", "motion", False),
            ("rio", "motion_count", 0),
            ("rio", "window_open", False),
            ("rio", "staff_present", False),
            ("rio", "mur", False),
            ("rio", "bath_count", 0),
            ("rio", "bed_count", 0),
            ("rio", "staff_count", 0),
            ("tstat", "room_temp", 24.0),
            ("tstat", "mode", "cool"),
        ):
            self.see(role, point, value)

    # -- the guest -------------------------------------------------------------------------

    def door(self) -> None:
        """The door opens and closes (the close starts the presence re-check)."""
        self.see("lock", "door_open", True)
        self.see("lock", "door_open", False)

    def motion(self) -> list[Effect]:
        count = self.floor.points.last_known(DeviceRef.of(self.room, "rio"), "motion_count")
        assert isinstance(count, int)
        return self.see("rio", "motion_count", (count + 1) % 65536)

    # -- what came out ---------------------------------------------------------------------

    @property
    def mode(self) -> str | None:
        energy = self.state()["energy"]
        assert isinstance(energy, dict)
        mode = energy["mode"]
        return None if mode is None else str(mode)

    @property
    def presence(self) -> object:
        return self.state()["presence"]

    def state(self) -> dict[str, object]:
        return room_snapshot(self.floor, RoomId(self.room), self.now)

    def take(self) -> list[Effect]:
        out, self.effects = self.effects, []
        return out

    def events(self, type_: str | None = None) -> list[Emit]:
        return [
            e
            for e in self.effects
            if isinstance(e, Emit) and (type_ is None or e.type == type_) and e.room == self.room
        ]

    def writes(self, role: str | None = None) -> dict[str, object]:
        """The last value written per point (of one role, or ``role/point`` for all)."""
        out: dict[str, object] = {}
        for e in self.effects:
            if isinstance(e, WritePoint) and e.device.room == self.room:
                if role is None:
                    out[f"{e.device.role}/{e.point}"] = e.value
                elif e.device.role == role:
                    out[e.point] = e.value
        return out
