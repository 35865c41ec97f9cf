"""The fan-coil room's physics: its temperature and its fan, integrated exactly over time.

devices.md, FG-TSTAT-1 v1.1: "with power on and mode cool, the fan runs while room_temp
is above setpoint + 0.5 °C and stops below setpoint; heat mirrors it; fan only always
runs. With power off the fan never runs and room_temp drifts toward the outside
temperature (simulators: 30 °C, about 0.1 °C per 60 s)." ``auto`` cools at or above the
setpoint and heats below it, with the same half-degree start band.

The model, per room:

- fan running on a coil (cool or heat), window closed: the coil dominates; the room moves
  toward the setpoint at ``COIL_C_PER_S`` (v1: "about 0.1 °C per 10 s");
- otherwise the room leaks toward the outside temperature (Newton's law):
  ``dT/dt = k (outside - T)``, with ``k = LEAK_PER_S`` (0.1 °C per 60 s at 8 °C from
  outside) or ``WINDOW_LEAK_PER_S`` while the window is open, to which a running coil adds
  its ``COIL_C_PER_S`` (so an open window can beat the coil: the fan then never stops).

Between two changes of input the solution is closed-form, so ``advance`` steps from one
fan start or stop to the next: the result does not depend on how often anyone looks, and
a month of simulated time costs a handful of steps per fan cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "COIL_C_PER_S",
    "HYSTERESIS_C",
    "LEAK_PER_S",
    "OUTSIDE_C",
    "WINDOW_LEAK_PER_S",
    "Controls",
    "ThermalRoom",
]

COIL_C_PER_S = 0.01  # devices.md v1: about 0.1 °C per 10 s toward the setpoint
HYSTERESIS_C = 0.5  # devices.md v1.1: the fan starts half a degree past the setpoint
OUTSIDE_C = 30.0  # devices.md v1.1: the simulators' outside temperature
LEAK_PER_S = (0.1 / 60.0) / 8.0  # 0.1 °C per 60 s with the room 8 °C from outside
WINDOW_LEAK_PER_S = 10 * LEAK_PER_S  # an open window: ten times the leak
_EPS = 1e-9
_CLOSE = 1e-6  # a threshold reached by the closed form, give or take rounding


@dataclass(frozen=True, slots=True)
class Controls:
    """What the thermostat's registers say now."""

    power: bool
    mode: str  # auto | cool | heat | fan_only
    setpoint: float | None


class ThermalRoom:
    """One room's air temperature and its fan-coil, advanced exactly to any time."""

    def __init__(self, temp_c: float, at: float, outside_c: float = OUTSIDE_C) -> None:
        """A room at ``temp_c`` at time ``at`` (seconds), fan stopped."""
        self.temp = float(temp_c)
        self.at = at
        self.outside = float(outside_c)
        self.window_open = False
        self.direction = 0  # -1 cooling, +1 heating, 0 stopped (fan only runs with 0 too)
        self.running = False
        self.run_s = 0.0  # seconds the fan has run, ever

    def advance(
        self, until: float, controls: Controls, on_switch: Callable[[bool, float], None]
    ) -> None:
        """Integrate to ``until``; ``on_switch(running, at)`` at each fan start or stop."""
        self._settle(controls, self.at, on_switch)
        stalled = False
        while self.at < until - _EPS:
            rate_k, drive = self._coefficients()
            horizon = until - self.at
            event = None if stalled else self._next_event(controls, rate_k, drive)
            step = horizon if event is None else min(horizon, max(event, 0.0))
            stalled = step <= 0.0  # a threshold met that switched nothing: move on
            self.temp = _solve(self.temp, step, rate_k, drive, self.outside)
            if self.running:
                self.run_s += step
            self.at += step
            if event is not None and event <= horizon:
                self._settle(controls, self.at, on_switch, at_threshold=True)
        self.at = max(self.at, until)

    def set_temp(self, temp_c: float) -> None:
        """Force the air temperature (the fan's state is settled on the next advance)."""
        self.temp = float(temp_c)

    # -- helpers ------------------------------------------------------------------------

    def _coefficients(self) -> tuple[float, float]:
        """(k, drive): dT/dt = k (outside - T) + drive, or drive alone when k is 0."""
        coil = self.direction * COIL_C_PER_S if self.running else 0.0
        if self.window_open:
            return WINDOW_LEAK_PER_S, coil
        if self.running and self.direction != 0:
            return 0.0, coil
        return LEAK_PER_S, 0.0

    def _next_event(self, controls: Controls, k: float, drive: float) -> float | None:
        """Seconds until the fan starts or stops on its own (None: not before the horizon)."""
        sp = controls.setpoint
        if not controls.power or sp is None or controls.mode == "fan_only":
            return None
        if self.running:
            return _time_to(self.temp, sp, k, drive, self.outside)
        starts = []
        if controls.mode in ("cool", "auto"):
            starts.append(_time_to(self.temp, sp + HYSTERESIS_C, k, drive, self.outside))
        if controls.mode in ("heat", "auto"):
            starts.append(_time_to(self.temp, sp - HYSTERESIS_C, k, drive, self.outside))
        return min((t for t in starts if t is not None), default=None)

    def _settle(
        self,
        controls: Controls,
        at: float,
        on_switch: Callable[[bool, float], None],
        *,
        at_threshold: bool = False,
    ) -> None:
        """Start or stop the fan as the controls and the temperature say, now."""
        sp = controls.setpoint
        was = self.running
        if not controls.power or sp is None:
            self.running, self.direction = False, 0
        elif controls.mode == "fan_only":
            self.running, self.direction = True, 0
        elif self.running and self.direction != 0:
            cooling = self.direction < 0
            allowed = controls.mode in ("auto", "cool" if cooling else "heat")
            done = self.temp <= sp + _CLOSE if cooling else self.temp >= sp - _CLOSE
            if not allowed or done:
                self.running, self.direction = False, 0
        else:
            self.running, self.direction = False, 0
            band = HYSTERESIS_C - (_CLOSE if at_threshold else 0.0)
            if controls.mode in ("cool", "auto") and self.temp > sp + band:
                self.running, self.direction = True, -1
            elif controls.mode in ("heat", "auto") and self.temp < sp - band:
                self.running, self.direction = True, 1
        if self.running != was:
            on_switch(self.running, at)


def _solve(temp: float, dt: float, k: float, drive: float, outside: float) -> float:
    """The temperature after ``dt`` seconds of dT/dt = k (outside - T) + drive."""
    if k == 0.0:
        return temp + drive * dt
    eq = outside + drive / k
    return eq + (temp - eq) * math.exp(-k * dt)


def _time_to(temp: float, target: float, k: float, drive: float, outside: float) -> float | None:
    """Seconds until the temperature reaches ``target`` (None: never)."""
    if abs(temp - target) < _EPS:
        return 0.0
    if k == 0.0:
        if drive == 0.0 or (target - temp) / drive < 0:
            return None
        return (target - temp) / drive
    eq = outside + drive / k
    ratio = (target - eq) / (temp - eq) if temp != eq else -1.0
    if not 0.0 < ratio < 1.0:
        return None
    return -math.log(ratio) / k
