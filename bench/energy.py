"""Guest-room management savings, in simulated time (figures, not a timed test).

    .venv/bin/python bench/energy.py [--days 30] [--seed 1] [--away-setback C]

The 60 rooms of the bench floor, each with floorsim's thermostat (``floorsim.devices.
Thermostat`` on ``floorsim.thermal``: the fan-coil, the outside temperature, an open
window), run twice over the same seeded month of guests:

- **GRMS**: the gateway's pure core (``decide``: presence, energy policy, ledger) fed with
  what the room tells (door, key card, motion, window; the thermostat's temperature and
  run time every poll) and its writes applied to the thermostat as a bus master would;
- **baseline**: no room management: the guest's setpoint whenever the room is sold,
  ``vacant_setpoint_c`` (26.0 °C, the v1 floor files' value) when it is not; the fan-coil
  never switched off.

The guest model (``random.Random(seed)``): occupancy 70-85 %; stays of 1-5 nights from
14:00 to 12:00, checked in two days ahead (or at once), checked out when the guest leaves;
arrivals mostly in the afternoon, some late in the evening; guests in the room about 40 %
of a sold day (asleep 23:00-07:00, out most of the day and some evenings), detected by
the motion sensor every 2-5 minutes while awake inside; key-card habits (most take the
card when they leave, some leave one in the holder, some never use it); windows opened
on about a fifth of the sold days; a preferred setpoint from half of them. Outside: a
hot summer day, 25-34 °C, the fan-coils on cooling (the summer changeover).

Printed: fan-coil run hours and setback degree-hours, GRMS against the baseline (target:
at least 30 % less run time); comfort: the share of the time guests are in their room
within ±1 °C of their setpoint (target ≥ 97 %) and the share of arrivals (a stay's first
entry) to a room already within 1 °C of it (target ≥ 95 %); and the CPU the policy costs
per room per day (the time spent in ``decide`` and ``next_deadline``, one thread).
Everything runs in simulated time from the seed: the same seed prints the same figures
(the CPU line aside).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import os
import random
import secrets
import sys
import tempfile
import time
import tomllib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import tomli_w

from drivers.ids import DeviceRef
from drivers.observations import DeviceOnline, PointObserved
from floorsim.devices import Thermostat, make_device
from floorsim.journal import Journal, ManualClock
from gateway.config.floor import FloorConfig
from gateway.config.load import load_floor
from gateway.core import inputs
from gateway.core.decide import Stored, decide, next_deadline, restore
from gateway.core.effects import Emit, WritePoint
from gateway.core.state import FloorState, Layout
from gateway.model.messages import COMMAND_BODIES
from gateway.model.time import format_ts

FLOOR = Path(__file__).resolve().parent.parent / "config" / "floors" / "bench.toml"
START = datetime(2026, 7, 1, tzinfo=UTC)  # a summer month
POLL_S = 900.0  # the thermostat's temperature, run time and mode, as the gateway reads them
SAMPLE_S = 120.0  # comfort and setback are integrated at least this finely
WEATHER_S = 600.0  # the outside temperature moves in steps of this
VACANT_C = 26.0  # the baseline's unsold setpoint: v1's vacant_setpoint_c
TARGETS = {"run_time_saving": 30.0, "comfort": 97.0, "arrivals": 95.0}
WARMUP_S = 86400.0  # a first day that settles the rooms and the stays under way; not counted


# -- the guests -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stay:
    room: str
    stay_id: str
    valid_from: float
    valid_until: float
    booked_at: float
    setpoint: float | None
    card: str  # "takes" | "leaves_one" | "never"


@dataclass(order=True, slots=True)
class Event:
    at: float
    seq: int
    room: str = field(compare=False)
    kind: str = field(compare=False)  # checkin, checkout, enter, leave, sleep, wake, window
    stay: Stay | None = field(compare=False, default=None)
    value: float = field(compare=False, default=0.0)
    obs: tuple[str, str, object] | None = field(compare=False, default=None)  # role, point, value


def guests(rooms: list[str], days: int, rng: random.Random) -> list[Event]:
    """Every room's stays and the guests' day, as timed events (seconds since START)."""
    seq = itertools.count()
    out: list[Event] = []
    day_s = 86400.0
    for room in rooms:
        day = -rng.randint(0, 2)  # some rooms start mid-stay
        n = 0
        while day < days:
            nights = rng.choices([1, 2, 3, 4, 5], [30, 30, 20, 12, 8])[0]
            start = day * day_s + 14 * 3600
            end = (day + nights) * day_s + 12 * 3600
            n += 1
            stay = Stay(
                room,
                f"{room}-{n}",
                start,
                end,
                booked_at=start - 2 * day_s,  # before the month: checked in at its start
                setpoint=rng.choice([21.0, 22.0, 23.0, 24.0]) if rng.random() < 0.5 else None,
                card=rng.choices(["takes", "leaves_one", "never"], [70, 20, 10])[0],
            )
            if end > 0:
                out += _stay_events(stay, nights, rng, seq)
            gap = rng.choices([0, 1, 2], [62, 30, 8])[0]  # about 78 % occupancy
            day += nights + gap
    return sorted(out)


def _stay_events(stay: Stay, nights: int, rng: random.Random, seq: Iterator[int]) -> list[Event]:
    def ev(at: float, kind: str, value: float = 0.0) -> Event:
        return Event(at, next(seq), stay.room, kind, stay, value)

    day_s = 86400.0
    late = rng.random() < 0.15
    arrive = stay.valid_from + (
        rng.uniform(6, 11) * 3600 if late else rng.expovariate(1 / (2.5 * 3600))
    )
    out = [ev(stay.booked_at, "checkin"), ev(arrive, "enter")]
    base = stay.valid_from - 14 * 3600  # midnight of the first day
    hour = 3600.0
    for night in range(nights + 1):
        midnight = base + night * day_s
        first_in = arrive
        if night > 0:
            wake = midnight + rng.uniform(6.5, 7.5) * hour
            out.append(ev(wake, "wake"))
            leave = wake + rng.uniform(0.3, 0.8) * hour
            if night == nights:  # departure morning
                out.append(ev(leave, "leave"))
                out.append(ev(leave + rng.uniform(60, 600), "checkout"))
                break
            first_in = wake
            if rng.random() < 0.92:  # out for the day, and most of the evening
                out.append(ev(leave, "leave"))
                first_in = midnight + rng.uniform(20.0, 23.5) * hour
                out.append(ev(first_in, "enter"))
        if night == 0 and arrive < midnight + 19.0 * hour and rng.random() < 0.7:
            out_at = arrive + rng.uniform(0.5, 1.5) * hour  # drops the bags, goes out
            first_in = out_at + rng.uniform(4.0, 7.0) * hour
            out += [ev(out_at, "leave"), ev(first_in, "enter")]
        dinner = max(first_in + 0.5 * hour, midnight + 19.5 * hour)
        if dinner < midnight + 20.5 * hour and rng.random() < 0.6:  # out to dinner
            out.append(ev(dinner, "leave"))
            out.append(ev(dinner + rng.uniform(1.5, 2.5) * hour, "enter"))
        if rng.random() < 0.2:  # a window opened for a while
            opened = max(first_in, midnight + 21.0 * hour) + rng.uniform(0.2, 1.0) * hour
            out.append(ev(opened, "window", rng.uniform(15, 60) * 60))
        sleep = max(first_in + 0.25 * hour, midnight + rng.uniform(23.0, 24.5) * hour)
        if sleep > arrive:
            out.append(ev(sleep, "sleep"))
    return out


def outside_c(t: float, rng_days: list[float]) -> float:
    """A hot summer day (Shanghai in July): 25 °C at 03:00, 34 °C at 15:00, each day
    shifted by up to a degree."""
    day = int(t // 86400)
    shift = rng_days[day % len(rng_days)]
    return 29.5 + shift + 4.5 * math.sin(2 * math.pi * ((t % 86400) / 3600 - 9) / 24)


# -- one run ------------------------------------------------------------------------------


@dataclass(slots=True)
class RoomWorld:
    """What is true in a room: who is in, awake or not, the card, the window."""

    stays: list[Stay] = field(default_factory=list)  # booked, not checked out
    inside: bool = False
    awake: bool = False
    card: bool = False
    window: bool = False
    motion_count: int = 0
    arrived: set[str] = field(default_factory=set)  # stays whose guest has come
    sp: float = 22.0  # the guest's setpoint (comfort reference)


@dataclass(slots=True)
class Figures:
    run_s: float = 0.0
    setback_dh: float = 0.0
    present_s: float = 0.0
    comfort_s: float = 0.0
    arrivals: int = 0
    arrivals_ok: int = 0
    cpu_s: float = 0.0
    decisions: int = 0
    modes: dict[str, float] = field(default_factory=dict)  # GRMS: seconds per energy mode


class Run:
    """One month of one floor, managed by the gateway's core or not at all."""

    def __init__(
        self,
        config: FloorConfig,
        events: list[Event],
        seed: int,
        managed: bool,
        layout: Layout | None = None,
    ) -> None:
        self.config = config
        self.managed = managed
        self.clock = ManualClock(0.0)
        self.rooms = [r.id for r in config.rooms]
        profile = config.profiles[config.rooms[0].devices[0].profile]
        self.tstats: dict[str, Thermostat] = {}
        for room in self.rooms:
            dev = make_device(
                profile, name=f"{room}/tstat", room=room, bus="b", unit=1,
                clock=self.clock, journal=Journal(),
            )  # fmt: skip
            assert isinstance(dev, Thermostat)
            dev.master_write("mode", "cool")  # summer: the changeover is on cooling
            dev.set_room_temp(24.0)
            self.tstats[room] = dev
        self.world = {room: RoomWorld() for room in self.rooms}
        self.events = list(events)
        heapq.heapify(self.events)
        rng = random.Random(seed + 7)
        self.shifts = [rng.uniform(-1, 1) for _ in range(366)]
        self.fig = Figures()
        self.run_at_warm = 0.0
        self.seq = itertools.count(10**9)
        self.motion_rng = random.Random(seed + 11)
        self.accounted = dict.fromkeys(self.rooms, 0.0)
        self.floor: FloorState | None = None
        self.deadline: float | None = None
        if managed:
            layout = layout or config.layout()
            self.floor, initial = restore(layout, Stored({}, [], [], {}), START, new_id=_ids)
            self._apply(initial)
            for room in self.rooms:
                for d in layout.room(room).devices:  # type: ignore[union-attr]
                    self._decide(DeviceOnline(d, 0.0), 0.0)
                self._observe(room, "lock", "door_open", False, 0.0)
                self._observe(room, "rio", "keycard", False, 0.0)
                self._observe(room, "rio", "motion_count", 0, 0.0)
                self._observe(room, "rio", "window_open", False, 0.0)
            self._poll(0.0)
        else:
            for room in self.rooms:
                self._baseline(room)

    def run(self, days: int) -> Figures:
        """Simulate the warm-up day and ``days`` more; the figures count only the latter."""
        end = WARMUP_S + days * 86400.0
        t = 0.0
        warm = False
        next_poll = POLL_S
        next_sample = SAMPLE_S
        while t < end:
            due = [end, next_poll, next_sample]
            if self.events:
                due.append(self.events[0].at)
            if self.deadline is not None:
                due.append(self.deadline)
            t = max(t, min(due))
            self.clock.t = t
            if not warm and t >= WARMUP_S:
                warm = True
                self._start_counting(t)
            while self.events and self.events[0].at <= t:
                self._world(heapq.heappop(self.events), t)
            if self.deadline is not None and self.deadline <= t:
                self._decide(inputs.Tick(), t)
            if t >= next_sample:
                for room in self.rooms:
                    self._account(room, t)
                if t % WEATHER_S < SAMPLE_S:
                    self._weather(t)
                next_sample += SAMPLE_S
            if t >= next_poll:
                self._poll(t)
                next_poll += POLL_S
        for room in self.rooms:
            self._account(room, end)
        self.fig.run_s = sum(d.run_seconds for d in self.tstats.values()) - self.run_at_warm
        if self.floor is not None:
            for m in self.floor.rooms.by_room.values():
                m.ledger.advance(START + timedelta(seconds=end))
                self._count_modes(m.ledger.day.doc())
        return self.fig

    def _start_counting(self, t: float) -> None:
        for room in self.rooms:
            self._account(room, t)
        self.fig = Figures()
        self.run_at_warm = sum(d.run_seconds for d in self.tstats.values())

    def _count_modes(self, daily: Mapping[str, object]) -> None:
        seconds = daily.get("seconds")
        if isinstance(seconds, dict):
            for mode, s in seconds.items():
                self.fig.modes[mode] = self.fig.modes.get(mode, 0.0) + float(s)

    # -- the world ----------------------------------------------------------------------------

    def _world(self, ev: Event, t: float) -> None:
        w = self.world[ev.room]
        self._account(ev.room, t)
        stay = ev.stay
        match ev.kind:
            case "checkin" if stay is not None:
                w.stays.append(stay)
                self._command(ev.room, "checkin", _checkin_body(stay), t)
            case "checkout" if stay is not None and stay in w.stays:
                self._command(ev.room, "checkout", {"stay_id": stay.stay_id}, t)
                w.stays.remove(stay)
                w.sp = 22.0
            case "enter" if stay is not None and stay in w.stays and not w.inside:
                w.sp = stay.setpoint or 22.0
                if stay.stay_id not in w.arrived:
                    w.arrived.add(stay.stay_id)
                    self.fig.arrivals += 1
                    if abs(self.tstats[ev.room].room_temp - w.sp) <= 1.0:
                        self.fig.arrivals_ok += 1
                w.inside = w.awake = True
                self._door(ev.room, t)
                if stay is not None and stay.card != "never":
                    self._later(t + 8, ev.room, "rio", "keycard", True)
                self._move(ev.room, t)
            case "leave" if w.inside:
                if stay is not None and stay.card == "takes":
                    w.card = False
                    self._observe(ev.room, "rio", "keycard", False, t)
                self._move(ev.room, t)
                w.inside = w.awake = False
                self._door(ev.room, t + 2)
            case "sleep" if w.inside:
                w.awake = False
            case "wake" if w.inside:
                w.awake = True
                self._move(ev.room, t)
            case "window" if w.inside and not w.window:
                self._set_window(ev.room, True, t)
                self._push(t + ev.value, ev.room, "window_close")
            case "window_close":
                self._set_window(ev.room, False, t)
            case "obs" if ev.obs is not None:
                role, point, value = ev.obs
                if point == "keycard":
                    w.card = bool(value)
                self._observe(ev.room, role, point, value, t)
            case "motion" if w.inside and w.awake:
                self._move(ev.room, t)
            case _:
                pass
        if not self.managed:
            self._baseline(ev.room)

    def _move(self, room: str, t: float) -> None:
        w = self.world[room]
        w.motion_count = (w.motion_count + 1) % 65536
        self._observe(room, "rio", "motion_count", w.motion_count, t)
        if w.inside and w.awake:
            self._push(t + self.motion_rng.uniform(120, 300), room, "motion")

    def _door(self, room: str, t: float) -> None:
        self._later(t, room, "lock", "door_open", True)
        self._later(t + 5, room, "lock", "door_open", False)

    def _later(self, at: float, room: str, role: str, point: str, value: object) -> None:
        """What the room will tell at ``at`` (a door swinging shut, a card put in)."""
        ev = Event(at, next(self.seq), room, "obs", obs=(role, point, value))
        heapq.heappush(self.events, ev)

    def _set_window(self, room: str, on: bool, t: float) -> None:
        self.world[room].window = on
        self.tstats[room].set_window(on)
        self._observe(room, "rio", "window_open", on, t)

    def _push(self, at: float, room: str, kind: str) -> None:
        heapq.heappush(self.events, Event(at, next(self.seq), room, kind))

    def _weather(self, t: float) -> None:
        celsius = outside_c(t, self.shifts)
        for dev in self.tstats.values():
            dev.set_outside(celsius)

    def _account(self, room: str, t: float) -> None:
        """Comfort and setback since the room was last accounted, at its temperature then."""
        last = self.accounted[room]
        dt = t - last
        if dt <= 0:
            return
        self.accounted[room] = t
        w = self.world[room]
        dev = self.tstats[room]
        setpoint = dev.regs.get("setpoint")
        assert isinstance(setpoint, float)
        if dev.regs.get("power"):
            self.fig.setback_dh += abs(setpoint - w.sp) * dt / 3600
        if w.inside and not w.window:  # an open window is the guest's choice, not ours
            self.fig.present_s += dt
            if abs(dev.room_temp - w.sp) <= 1.0:
                self.fig.comfort_s += dt

    # -- the gateway, or nobody ----------------------------------------------------------------

    def _baseline(self, room: str) -> None:
        w = self.world[room]
        t = self.clock.t
        now = [s for s in w.stays if s.valid_from <= t < s.valid_until]
        wanted = (now[0].setpoint or 22.0) if now else VACANT_C
        dev = self.tstats[room]
        if dev.regs.get("setpoint") != wanted:
            dev.master_write("setpoint", wanted)

    def _observe(self, room: str, role: str, point: str, value: object, t: float) -> None:
        if not self.managed:
            return
        device = DeviceRef.of(room, role)
        self._decide(PointObserved(device, point, 0, value, t), t)  # type: ignore[arg-type]

    def _command(self, room: str, type_: str, body: dict[str, object], t: float) -> None:
        if not self.managed:
            return
        model = COMMAND_BODIES[type_].model_validate({"room": room, **body})
        self._decide(inputs.RunCommand(_ids(), type_, model), t)

    def _poll(self, t: float) -> None:
        if not self.managed:
            for room in self.rooms:
                self._baseline(room)
            return
        for room, dev in self.tstats.items():
            device = DeviceRef.of(room, "tstat")
            for point in ("room_temp", "run_minutes", "mode"):
                value = dev.get(point)
                self._decide(PointObserved(device, point, 0, value, t), t)  # type: ignore[arg-type]

    def _decide(self, item: inputs.Input, t: float) -> None:
        assert self.floor is not None
        now = START + timedelta(seconds=t)
        began = time.perf_counter()
        effects = decide(self.floor, item, now).effects
        due = next_deadline(self.floor, now)
        self.fig.cpu_s += time.perf_counter() - began
        self.fig.decisions += 1
        self.deadline = None if due is None else max((due - START).total_seconds(), t)
        self._apply(effects)

    def _apply(self, effects: object) -> None:
        for e in effects:  # type: ignore[attr-defined]
            warmup = START.date().isoformat()
            if isinstance(e, Emit) and e.type == "energy.daily" and e.data["date"] != warmup:
                self._count_modes(e.data)
            if isinstance(e, WritePoint) and e.device.role == "tstat" and e.device.room:
                room = e.device.room
                self._account(room, self.clock.t)
                self.tstats[room].master_write(e.point, e.value)  # type: ignore[arg-type]


def _checkin_body(stay: Stay) -> dict[str, object]:
    body: dict[str, object] = {
        "stay_id": stay.stay_id,
        "valid_from": format_ts(START + timedelta(seconds=stay.valid_from)),
        "valid_until": format_ts(START + timedelta(seconds=stay.valid_until)),
        "tokens": [f"{zlib.crc32(stay.stay_id.encode()) or 1:016x}"],
    }
    if stay.setpoint is not None:
        body["preferences"] = {"setpoint_c": stay.setpoint}
    return body


_counter = itertools.count(1)


def _ids() -> str:
    return f"b{next(_counter)}"


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--away-setback",
        type=float,
        default=None,
        help="[energy] away_setback_c (default: the bench floor's, the code's minimum 2.0)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "command.key").write_text(secrets.token_hex(32) + "\n")
        environ = {**os.environ, "FLOORGATE_RUN_DIR": tmp}
        path = FLOOR
        if args.away_setback is not None:
            data = tomllib.loads(FLOOR.read_text(encoding="utf-8"))
            data.setdefault("energy", {})["away_setback_c"] = args.away_setback
            path = Path(tmp) / FLOOR.name
            path.write_text(tomli_w.dumps(data), encoding="utf-8")
        config, _ = load_floor(path, environ=environ)
    rooms = [r.id for r in config.rooms]
    events = guests(rooms, args.days + 1, random.Random(args.seed))
    occupancy = _occupancy(events, args.days, len(rooms))
    wall = time.monotonic()
    base = Run(config, events, args.seed, managed=False).run(args.days)
    grms = Run(config, events, args.seed, managed=True).run(args.days)
    _report(args, base, grms, occ=occupancy, rooms=len(rooms), wall=time.monotonic() - wall)
    return 0


def _occupancy(events: list[Event], days: int, rooms: int) -> float:
    end = WARMUP_S + days * 86400.0
    sold = sum(
        max(0.0, min(e.stay.valid_until, end) - max(e.stay.valid_from, WARMUP_S))
        for e in events
        if e.kind == "checkin" and e.stay is not None
    )
    return 100 * sold / (end * rooms)


def _report(
    args: argparse.Namespace, base: Figures, grms: Figures, *, occ: float, rooms: int, wall: float
) -> None:
    saving = 100 * (1 - grms.run_s / base.run_s) if base.run_s else 0.0
    comfort = 100 * grms.comfort_s / grms.present_s if grms.present_s else 0.0
    base_comfort = 100 * base.comfort_s / base.present_s if base.present_s else 0.0
    arrivals = 100 * grms.arrivals_ok / grms.arrivals if grms.arrivals else 0.0
    base_arrivals = 100 * base.arrivals_ok / base.arrivals if base.arrivals else 0.0
    room_days = rooms * args.days
    present = 100 * grms.present_s / (occ / 100 * room_days * 86400) if occ else 0.0

    def verdict(value: float, target: float) -> str:
        return "met" if value >= target else "MISSED"

    print(f"bench/energy.py: {rooms} rooms, {args.days} simulated days, seed {args.seed}")
    setback = args.away_setback
    print(f"  away setback: {'the floor file' if setback is None else f'{setback} °C'}")
    print(f"  guests: occupancy {occ:.1f} %, in the room {present:.0f} % of a sold day, "
          f"{grms.arrivals} arrivals")  # fmt: skip
    print(f"  {'':34}{'baseline':>12}{'GRMS':>12}")
    print(f"  {'fan-coil run hours':34}{base.run_s / 3600:12.0f}{grms.run_s / 3600:12.0f}")
    print(f"  {'setback degree-hours':34}{base.setback_dh:12.0f}{grms.setback_dh:12.0f}")
    print(f"  {'present within ±1 °C (%)':34}{base_comfort:12.2f}{comfort:12.2f}")
    print(f"  {'arrivals within 1 °C (%)':34}{base_arrivals:12.2f}{arrivals:12.2f}")
    target = TARGETS
    print(f"  run time saved: {saving:.1f} % (target >= {target['run_time_saving']:.0f} %: "
          f"{verdict(saving, target['run_time_saving'])})")  # fmt: skip
    print(f"  comfort while present: {comfort:.2f} % (target >= {target['comfort']:.0f} %: "
          f"{verdict(comfort, target['comfort'])})")  # fmt: skip
    print(f"  arrivals already comfortable: {arrivals:.2f} % (target >= "
          f"{target['arrivals']:.0f} %: {verdict(arrivals, target['arrivals'])})")  # fmt: skip
    total = sum(grms.modes.values()) or 1.0
    shares = ", ".join(f"{m} {100 * s / total:.1f} %" for m, s in sorted(grms.modes.items()))
    print(f"  GRMS time per energy mode: {shares}")
    per_room_day_ms = 1000 * grms.cpu_s / room_days
    print(f"  policy CPU: {per_room_day_ms:.1f} ms per room per day ({grms.decisions} decisions, "
          f"{grms.cpu_s:.1f} s in the core; load {os.getloadavg()[0]:.2f}; "
          f"bench wall {wall:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
