"""An energy meter, by role: energy_kwh counts what its room's fan-coil draws.

devices.md, "Energy meter": "Points by role: energy_kwh (cumulative active energy,
monotonic), optionally power_w." The simulated load is the room's fan-coil: ``RUN_W``
for each watched thermostat whose fan runs, on top of ``STANDBY_W``. Energy is the
integral of that draw over device time (``SimClock``), so ``time_scale`` speeds it up.

The draw switches at the instant a thermostat reports for its new fan stage. The
thermostat brings its state up to date at every access to it or to this meter (and at
once on a master's write to it), and dates a fan that stopped on reaching the setpoint
at the moment it did, so the total does not depend on how often anyone reads. The
registers hold what the profile says: a float as is, an integer truncated to its
resolution and wrapping like a counter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from drivers.codec import Value
from drivers.profile import Point
from floorsim.device import SimDevice
from floorsim.journal import Stamp

__all__ = ["ENERGY", "METER", "POWER", "RUN_W", "STANDBY_W", "FanCoil", "Meter"]

METER = "meter"  # the device kind of meter profiles ([profile] device)
ENERGY, POWER = "energy_kwh", "power_w"
RUN_W = 800.0  # a fan-coil unit with its fan running
STANDBY_W = 5.0  # the room's controls with every fan stopped
_J_PER_KWH = 3.6e6


class FanCoil(Protocol):
    """What a meter watches: a device whose fan stage it is told about (a Thermostat)."""

    name: str

    @property
    def fan_speed(self) -> int:
        """The running fan stage now (0: stopped)."""
        ...

    def tick(self) -> None:
        """Bring the device's state up to date."""

    def watch_fan(self, callback: Callable[[int, float], None]) -> None:
        """Call ``callback(stage, at)`` when the fan stage changes (``at``: device time)."""


class Meter(SimDevice):
    """An energy meter of any profile that maps energy_kwh and/or power_w."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kwh = 0.0
        self._last = self.clock.now()
        self._running: dict[str, bool] = {}
        self._loads: list[FanCoil] = []
        self._publish()

    @property
    def kwh(self) -> float:
        """Energy counted so far (kWh), at full precision."""
        self.tick()
        return self._kwh

    @property
    def watts(self) -> float:
        """The draw now (W)."""
        self.tick()
        return self._watts()

    def watch(self, load: FanCoil) -> None:
        """Count ``load``'s fan-coil: RUN_W more while its fan runs."""
        self._loads.append(load)
        self._switch(load.name, load.fan_speed > 0, self.clock.now())
        load.watch_fan(lambda stage, at: self._switch(load.name, stage > 0, at))

    def tick(self) -> None:
        """Bring the watched loads up to date (a change switches the draw), then count."""
        for load in self._loads:
            load.tick()
        self._advance()

    def set_input(self, role: str, value: Value, index: int = 0) -> Stamp:
        """Set a point as the world would; energy_kwh sets the running total (kWh, >= 0)."""
        if not self.regs.has(role) or self.regs.point(role).role != ENERGY:
            return super().set_input(role, value, index)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"{self.name}: an energy total is a number >= 0, not {value!r}")
        self.tick()
        old, self._kwh = self._kwh, float(value)
        self._publish()
        return self._event("input", point=role, old=old, value=self.regs.get(role)).stamp

    def _switch(self, load: str, running: bool, at: float) -> None:
        self._advance(at)  # the energy until the switch, at the draw before it
        self._running[load] = running
        self._publish()

    def _advance(self, until: float | None = None) -> None:
        """Count the draw from the last count until ``until`` (device time; default now)."""
        until = self.clock.now() if until is None else until
        if until > self._last:
            self._kwh += self._watts() * (until - self._last) / _J_PER_KWH
            self._last = until
        self._publish()

    def _watts(self) -> float:
        return STANDBY_W + RUN_W * sum(self._running.values())

    def _publish(self) -> None:
        for role, value in ((ENERGY, self._kwh), (POWER, self._watts())):
            if self.regs.has(role):
                self.regs.put(role, _shown(self.regs.point(role), value))


def _shown(p: Point, value: float) -> float:
    """``value`` as the register can hold it: floats as is, integers truncated and wrapped."""
    if p.type.is_float:
        return value
    lo, hi = p.raw_range
    raw = math.floor((value - p.offset) / p.scale)
    raw = lo + (raw - lo) % (hi - lo + 1)
    return raw * p.scale + p.offset
