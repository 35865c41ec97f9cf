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
from floorsim.thermal import HYSTERESIS_C, Controls, ThermalRoom

__all__ = [
    "Lock",
    "Meter",
    "RoomIO",
    "SimDevice",
    "Thermostat",
    "connect_room",
    "make_device",
    "v1_profile",
]

F32_MAX = 3.4e38  # float32 holds finite values up to about this
CALL_POINTS = {"bath": ("call_bath", "bath_count"), "bed": ("call_bed", "bed_count")}
# devices.md v1.1: "motion ... 1 while movement was seen in the last 30 s (the sensor holds it)".
MOTION_HOLD_S = 30.0
OCCUPANT_MOTION_S = 45.0  # an awake occupant is detected about this often (device time)
# The v1.1 points of FG-RIO-1: a v1 module has none of them (and answers 02 there).
RIO_V11_ROLES = frozenset({"motion", "motion_count"})


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
    """Let the devices of one room see each other: each meter watches each thermostat, and
    each thermostat's room feels the room I/O's window."""
    devs = list(devices)
    tstats = [d for d in devs if isinstance(d, Thermostat)]
    for dev in devs:
        if isinstance(dev, Meter):
            for tstat in tstats:
                dev.watch(tstat)
        if isinstance(dev, RoomIO):
            for tstat in tstats:
                dev.watch_window(tstat.set_window)


def v1_profile(profile: Profile) -> Profile:
    """A room I/O profile as a v1 FG-RIO-1 serves it: without the v1.1 motion sensor."""
    kept = [p for p in profile.point if p.role not in RIO_V11_ROLES]
    return profile.model_copy(update={"point": kept})


class Thermostat(SimDevice):
    """FG-TSTAT-1 behaviour, by role (any thermostat profile), on floorsim.thermal's room."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._room = ThermalRoom(21.0, self.clock.now())
        self._ctl: Controls | None = None  # the registers' controls, decoded once per change
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
        return round(self._room.temp, 3)

    @property
    def fan_speed(self) -> int:
        """The fan-coil's running stage now: 0 stopped .. 3, whether the profile maps it."""
        self.tick()
        return self._fan

    @property
    def run_seconds(self) -> float:
        """Seconds the fan-coil has run since the device was made (run_minutes is this / 60)."""
        self.tick()
        return self._room.run_s

    @property
    def outside_c(self) -> float:
        """The outside temperature the room drifts toward."""
        return self._room.outside

    def set_outside(self, celsius: float) -> None:
        """The weather changed: the room drifts toward ``celsius`` from now on."""
        self.tick()
        self._room.outside = float(celsius)

    def set_window(self, is_open: bool) -> None:
        """The room's window opened or closed (the room I/O's contact tells the thermostat)."""
        self.tick()
        self._room.window_open = is_open
        self._advance()

    def watch_fan(self, callback: Callable[[int, float], None]) -> None:
        """Call ``callback(stage, at)`` when the fan stage changes (``at``: device time)."""
        self._fan_watchers.append(callback)

    def on_write(self, el: Element, old: Value, *, whole: bool, stamp: Stamp) -> None:
        """Journal the write, then act on it at once (a switched-off fan stops now)."""
        super().on_write(el, old, whole=whole, stamp=stamp)
        self._ctl = None
        self._advance()

    def set_input(self, role: str, value: Value, index: int = 0) -> Stamp:
        """Set a point as the world would (the controls are read again)."""
        stamp = super().set_input(role, value, index)
        self._ctl = None
        self._advance()
        return stamp

    def tick(self) -> None:
        """Bring the room up to now (fan starts and stops dated when they happened)."""
        self._advance()

    def set_room_temp(self, celsius: float) -> Stamp:
        """Force the physical room temperature (e.g. a window left open)."""
        self._encodable("room_temp", celsius)
        self.tick()
        old = self._room.temp
        self._room.set_temp(celsius)
        self._advance()
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
        self._ctl = None
        self._advance()
        ev = self._event("keypad", requested=celsius, accepted=True, value=self._setpoint())
        return {"accepted": True, "setpoint": self._setpoint(), **ev.stamp.as_dict()}

    def set_sensor_fault(self, on: bool) -> Stamp:
        """A broken sensor: the status bit, or the profile's "no value" reading."""
        self._sensor_fault = on
        self._publish()
        return self._event("sensor_fault", value=on).stamp

    def _controls(self) -> Controls:
        if self._ctl is None:
            r = self.regs
            mode = str(r.get("mode")) if r.has("mode") else "auto"
            powered = not r.has("power") or bool(r.get("power"))
            setpoint = _number(r.get("setpoint")) if r.has("setpoint") else None
            self._ctl = Controls(powered, mode, setpoint)
        return self._ctl

    def _advance(self) -> None:
        self._room.advance(self.clock.now(), self._controls(), self._switched)
        self._publish()

    def _switched(self, running: bool, at: float) -> None:
        self._publish(at)

    def _powered(self) -> bool:
        return self._controls().power

    def _setpoint(self) -> float | None:
        return self._controls().setpoint

    def _publish(self, changed_at: float | None = None) -> None:
        """Refresh the inputs; a new fan stage is reported as of ``changed_at`` (else now)."""
        r = self.regs
        temp = self._room.temp
        if r.has("room_temp"):
            reading: float | None = round(temp, 2)
            if self._sensor_fault and r.point("room_temp").no_value:
                reading = None
            r.put("room_temp", self._clamped("room_temp", reading))
        if r.has("sensor_fault"):
            r.put("sensor_fault", self._sensor_fault)
        if r.has("frost_protection"):
            r.put("frost_protection", not self._powered() and temp < 5.0)
        if r.has("run_minutes"):
            _, hi = r.point("run_minutes").raw_range
            r.put("run_minutes", int(self._room.run_s // 60) % (hi + 1))  # wrapping 65535 -> 0
        speed = 0
        if self._room.running:
            target = self._setpoint()
            gap = abs(target - temp) if target is not None else 0.0
            chosen = r.get("fan_speed") if r.has("fan_speed") else "auto"
            auto = 3 if gap > 1.0 else 2 if gap > HYSTERESIS_C else 1
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
    """FG-RIO-1 behaviour: level inputs held for a duration, counters that never miss,
    the v1.1 motion sensor (a detection holds ``motion`` for 30 s and counts), and a
    scripted occupant who moves about every ``OCCUPANT_MOTION_S`` while awake."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held_until: dict[str, float] = {}
        self._motion_until = float("-inf")  # device time
        self._next_move: float | None = None  # device time of the occupant's next detection
        self._window_watchers: list[Callable[[bool], None]] = []

    @property
    def has_motion(self) -> bool:
        """True for a v1.1 module (a motion sensor); a v1 module answers 02 there."""
        return self.regs.has("motion") and self.regs.has("motion_count")

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

    def motion(self) -> Stamp:
        """One detection (devices.md v1.1): motion 1 for 30 s, motion_count + 1."""
        if not self.has_motion:
            raise ValueError(f"{self.name} ({self.profile.name}) has no motion sensor (v1)")
        self.tick()
        self._detect(self.clock.now())
        return self._event("motion", count=self._int("motion_count")).stamp

    def occupant(self, moving: bool) -> None:
        """Someone awake in the room (detected about every OCCUPANT_MOTION_S), or not."""
        self.tick()
        if moving and self._next_move is None and self.has_motion:
            self._detect(self.clock.now())
            self._next_move = self.clock.now() + OCCUPANT_MOTION_S
        elif not moving:
            self._next_move = None

    def watch_window(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(open)`` when the window contact changes (the thermostat's room)."""
        self._window_watchers.append(callback)

    def set_input(self, role: str, value: Value, index: int = 0) -> Stamp:
        """Set a physical input; the window contact also tells the room's thermostat."""
        stamp = super().set_input(role, value, index)
        if self.regs.point(role).role == "window_open":
            for callback in self._window_watchers:
                callback(bool(value))
        return stamp

    def tick(self) -> None:
        """Drop level inputs whose hold time is over; the occupant's detections fall due."""
        if self._held_until:
            now = time.monotonic()
            for role, until in list(self._held_until.items()):
                if now >= until:
                    self.regs.put(role, False)
                    del self._held_until[role]
        if not self.has_motion:
            return
        now = self.clock.now()
        while self._next_move is not None and self._next_move <= now:
            self._detect(self._next_move)
            self._next_move += OCCUPANT_MOTION_S
        if self.regs.get("motion") and now >= self._motion_until:
            self.regs.put("motion", False)

    def _detect(self, at: float) -> None:
        """One detection at device time ``at``: counted, and the bit held 30 s from then."""
        self._motion_until = max(self._motion_until, at + MOTION_HOLD_S)
        self.regs.put("motion", self.clock.now() < self._motion_until)
        _, hi = self.regs.point("motion_count").raw_range
        self.regs.put("motion_count", (self._int("motion_count") + 1) % (hi + 1))

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
