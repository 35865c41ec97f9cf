"""Simulated Modbus devices: the reference hardware of devices.md, built from profiles.

A device's tables come from its profile (``regmap.RegisterMap``); its behaviour is keyed
by the *roles* the profile maps, never by addresses, so ``siemens-rdf302`` behaves as a
thermostat through its own register map, scaling and "no value" sentinel.

- ``Thermostat``: room_temp drifts toward the setpoint with power on; guest keypad
  within [setpoint_min, setpoint_max] unless keypad_lock; its fan-coil runs while the
  room is away from the setpoint, and tells its watchers (a meter) when that changes.
- ``Lock``: 32 credential slots, matching, the 16-entry access-log ring and log_head,
  deadbolt refusal, remote unlock pulse that reads back 0.
- ``RoomIO``: lights and lamps (coils), level inputs, and call/staff counters that count
  a press of any duration, even one no poll ever sees.
- ``Meter``: energy_kwh counts what the room's fan-coil draws; power_w shows the draw.
- ``SimDevice`` (device.py) itself serves any other profile (the floor panel: coils only).

``Lock`` lives in lock.py and ``Meter`` in meter.py; this module re-exports them. The
devices of one room that depend on each other are wired by ``connect_room``.

Methods called by the bus servers raise ``ModbusError``; control methods raise
``ValueError`` for impossible requests (a temperature the register cannot hold).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from drivers.codec import Value
from drivers.profile import Profile
from floorsim.device import SimDevice
from floorsim.journal import Journal, SimClock, Stamp
from floorsim.lock import Lock
from floorsim.meter import METER, Meter
from floorsim.regmap import Element

__all__ = [
    "Lock",
    "Meter",
    "RoomIO",
    "SimDevice",
    "Thermostat",
    "connect_room",
    "make_device",
]

# devices.md, FG-TSTAT-1: "room_temp moves toward setpoint (simulators: about 0.1 °C per 10 s)".
DRIFT_C_PER_S = 0.01
FAN_GAP_C = 0.05  # the fan-coil runs while the room is further than this from the setpoint
F32_MAX = 3.4e38  # float32 holds finite values up to about this
CALL_POINTS = {"bath": ("call_bath", "bath_count"), "bed": ("call_bed", "bed_count")}


def make_device(
    profile: Profile,
    *,
    name: str,
    room: str | None,
    bus: str,
    unit: int,
    clock: SimClock,
    journal: Journal,
) -> SimDevice:
    """The simulated device for ``profile``'s kind of device."""
    kinds: dict[str, type[SimDevice]] = {
        "tstat": Thermostat,
        "lock": Lock,
        "rio": RoomIO,
        METER: Meter,
    }
    cls = kinds.get(profile.device, SimDevice)
    return cls(profile, name=name, room=room, bus=bus, unit=unit, clock=clock, journal=journal)


def connect_room(devices: Iterable[SimDevice]) -> None:
    """Let the devices of one room see each other: each meter watches each thermostat."""
    devs = list(devices)
    for meter in devs:
        if isinstance(meter, Meter):
            for tstat in devs:
                if isinstance(tstat, Thermostat):
                    meter.watch(tstat)


class Thermostat(SimDevice):
    """FG-TSTAT-1 behaviour, by role (any thermostat profile)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._temp = 21.0
        self._last = self.clock.now()
        self._sensor_fault = False
        self._fan = 0
        self._fan_watchers: list[Callable[[int, float], None]] = []
        r = self.regs
        for role, value in (
            ("humidity", 45.0),
            ("power", 1),
            ("setpoint", 22.0),
            ("setpoint_min", 18.0),
            ("setpoint_max", 26.0),
        ):
            if r.has(role):
                r.put(role, value)
        self._publish()

    @property
    def room_temp(self) -> float:
        """The physical room temperature (°C), whatever the sensor reports."""
        self.tick()
        return round(self._temp, 3)

    @property
    def fan_speed(self) -> int:
        """The fan-coil's running stage now: 0 stopped .. 3, whether the profile maps it."""
        self.tick()
        return self._fan

    def watch_fan(self, callback: Callable[[int, float], None]) -> None:
        """Call ``callback(stage, at)`` when the fan stage changes (``at``: device time)."""
        self._fan_watchers.append(callback)

    def on_write(self, el: Element, old: Value, *, whole: bool, stamp: Stamp) -> None:
        """Journal the write, then act on it at once (a switched-off fan stops now)."""
        super().on_write(el, old, whole=whole, stamp=stamp)
        self._publish()

    def tick(self) -> None:
        """Drift toward the setpoint (only with power on), then refresh the inputs."""
        now = self.clock.now()
        dt, self._last = now - self._last, now
        target = self._setpoint()
        stopped_at = None
        if self._powered() and target is not None and dt > 0:
            step = DRIFT_C_PER_S * dt
            diff = target - self._temp
            self._temp = target if abs(diff) <= step else self._temp + (step if diff > 0 else -step)
            if abs(diff) > FAN_GAP_C >= abs(target - self._temp):  # the fan stopped meanwhile
                stopped_at = now - dt + (abs(diff) - FAN_GAP_C) / DRIFT_C_PER_S
        self._publish(stopped_at)

    def set_room_temp(self, celsius: float) -> Stamp:
        """Force the physical room temperature (e.g. a window left open)."""
        self._encodable("room_temp", celsius)
        self.tick()
        old, self._temp = self._temp, float(celsius)
        self._publish()
        return self._event("room_temp", old=round(old, 3), value=celsius).stamp

    def keypad(self, celsius: float) -> dict[str, Any]:
        """A guest turns the keypad to ``celsius``: clamped to the allowed band, or refused."""
        self.tick()
        r = self.regs
        if r.has("keypad_lock") and r.get("keypad_lock"):
            ev = self._event("keypad", requested=celsius, accepted=False, reason="keypad_lock")
            return {"accepted": False, "setpoint": self._setpoint(), **ev.stamp.as_dict()}
        sp = r.point("setpoint")
        lo = _number(r.get("setpoint_min")) if r.has("setpoint_min") else sp.min
        hi = _number(r.get("setpoint_max")) if r.has("setpoint_max") else sp.max
        value = celsius
        if lo is not None:
            value = max(value, lo)
        if hi is not None:
            value = min(value, hi)
        r.put("setpoint", value)
        ev = self._event("keypad", requested=celsius, accepted=True, value=self._setpoint())
        return {"accepted": True, "setpoint": self._setpoint(), **ev.stamp.as_dict()}

    def set_sensor_fault(self, on: bool) -> Stamp:
        """A broken sensor: the status bit, or the profile's "no value" reading."""
        self._sensor_fault = on
        self._publish()
        return self._event("sensor_fault", value=on).stamp

    def _powered(self) -> bool:
        return not self.regs.has("power") or bool(self.regs.get("power"))

    def _setpoint(self) -> float | None:
        if not self.regs.has("setpoint"):
            return None
        return _number(self.regs.get("setpoint"))

    def _publish(self, changed_at: float | None = None) -> None:
        """Refresh the inputs; a new fan stage is reported as of ``changed_at`` (else now)."""
        r = self.regs
        if r.has("room_temp"):
            reading: float | None = round(self._temp, 2)
            if self._sensor_fault and r.point("room_temp").no_value:
                reading = None
            r.put("room_temp", self._clamped("room_temp", reading))
        if r.has("sensor_fault"):
            r.put("sensor_fault", self._sensor_fault)
        if r.has("frost_protection"):
            r.put("frost_protection", not self._powered() and self._temp < 5.0)
        target = self._setpoint()
        gap = abs(target - self._temp) if target is not None else 0.0
        speed = 0
        if self._powered() and gap > FAN_GAP_C:
            chosen = r.get("fan_speed") if r.has("fan_speed") else "auto"
            auto = 3 if gap > 1.0 else 2 if gap > 0.5 else 1
            speed = {"low": 1, "medium": 2, "high": 3}.get(str(chosen), auto)
        if r.has("fan_state"):
            r.put("fan_state", speed)
        if speed != self._fan:
            self._fan = speed
            at = self.clock.now() if changed_at is None else changed_at
            for callback in self._fan_watchers:
                callback(speed, at)

    def _clamped(self, role: str, value: float | None) -> float | None:
        p = self.regs.point(role)
        if value is None or p.type.is_float:  # any room temperature fits a float32
            return value
        lo, hi = p.raw_range
        raw = round((value - p.offset) / p.scale)
        raw = min(max(raw, lo), hi - (1 if hi in p.no_value else 0))
        return raw * p.scale + p.offset

    def _encodable(self, role: str, value: float) -> None:
        p = self.regs.point(role)
        if p.type.is_float:
            fits = math.isfinite(value) and abs((value - p.offset) / p.scale) < F32_MAX
        else:
            lo, hi = p.raw_range
            fits = lo <= round((value - p.offset) / p.scale) <= hi
        if not fits:
            raise ValueError(f"{self.name}: {value} °C does not fit {role} ({p.type})")


class RoomIO(SimDevice):
    """FG-RIO-1 behaviour: level inputs held for a duration, counters that never miss."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held_until: dict[str, float] = {}

    def press(self, point: str, ms: int) -> Stamp:
        """A call point (bath/bed) pressed for ``ms`` real milliseconds: counted once, now."""
        try:
            level, counter = CALL_POINTS[point]
        except KeyError:
            raise ValueError(f"call point {point!r} is not one of {sorted(CALL_POINTS)}") from None
        return self._pulse(level, counter, ms, "press", point=point)

    def staff(self, ms: int) -> Stamp:
        """The staff-presence key turned at the room for ``ms`` milliseconds."""
        return self._pulse("staff_present", "staff_count", ms, "staff")

    def tick(self) -> None:
        """Drop level inputs whose hold time is over."""
        if self._held_until:
            now = time.monotonic()
            for role, until in list(self._held_until.items()):
                if now >= until:
                    self.regs.put(role, False)
                    del self._held_until[role]

    def _pulse(self, level: str, counter: str, ms: int, kind: str, **detail: Any) -> Stamp:
        if ms < 0:
            raise ValueError(f"duration {ms} ms is negative")
        missing = [r for r in (level, counter) if not self.regs.has(r)]
        if missing:
            raise ValueError(f"{self.name} ({self.profile.name}) has no {', '.join(missing)}")
        self.tick()
        stamp = Stamp.now()
        self.regs.put(level, True)
        self._held_until[level] = max(self._held_until.get(level, 0.0), time.monotonic() + ms / 1e3)
        _, hi = self.regs.point(counter).raw_range
        count = (self._int(counter) + 1) % (hi + 1)  # "wrapping 65535 -> 0"
        self.regs.put(counter, count)
        self.journal.record(
            kind,
            self.name,
            room=self.room,
            stamp=stamp,
            ms=ms,
            counter=counter,
            count=count,
            **detail,
        )
        return stamp


def _number(value: Value) -> float | None:
    return float(value) if isinstance(value, int | float) else None
