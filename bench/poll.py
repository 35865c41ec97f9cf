"""Polling benchmark on the bench floor: the gateway's bus schedulers against floorsim.

    .venv/bin/python bench/poll.py [--seconds 25] [--faulty] [--tcp-emergency-ms MS]

floorsim serves config/floors/bench.toml in a subprocess (4 RS-485 lines x 12 rooms at
19200 8N1, paced on the wire; 12 rooms on Modbus TCP; a call panel). This process runs
what the gateway runs for those buses — one drivers.scheduler.BusScheduler per Modbus
bus and the drivers.callpanel driver — with every point at its default interval, so its
CPU time and RSS are the gateway's. During the measured window it makes short call
presses (50 ms, shorter than any poll interval) in random rooms through floorsim's
control socket, and prints per bus:

- transactions/s achieved, and the theoretical maximum for the same mix of transactions
  at that baud: each transaction occupies the line for
      (Q + R) x bits_per_char / baud + 2 x t3.5 + 5 ms turnaround
  (Q request bytes, R response bytes, t3.5 = 3.5 character times); max = n / sum;
- the offered load: line time per second the profiles' intervals ask for (> 1 means the
  line is saturated and the lower classes are slowed down, emergency first);
- call-counter sampling period per room (time between successive reads of a rio's
  counters) p50/p99, and press-to-observation latency p50/p99 (floorsim's monotonic
  timestamp of the press to the gateway's observation of the counter; the call panel:
  to the CallPlaced event);
- the interval each poll class actually achieved; the gateway's CPU % and RSS.

``--faulty`` then runs again with a dead device, a device whose every answer has a bad
CRC and a slow device (50 ms late) on rs485-b, set at the start of the measured window,
and compares the other rooms' sampling p99 with the clean run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.callpanel import CallPanelDriver, DriverEvent
from drivers.errors import BusError
from drivers.health import DeviceHealth
from drivers.lines import CallPanelBus, RtuBus, TcpBus
from drivers.modbus import ModbusTransport
from drivers.observations import DriverObservation, PointObserved
from drivers.panelproto import CallPlaced
from drivers.planner import ReadPlanner
from drivers.points import KIND_INTERVAL_CAPS_MS, PolledDevice
from drivers.profile import PollClass, Table
from drivers.scheduler import BusScheduler
from floorsim.control import call, default_socket, socket_is_live
from gateway.config.floor import FloorConfig
from gateway.config.load import load_floor
from gateway.logging import configure_logging

REPO = Path(__file__).resolve().parent.parent
FLOOR = REPO / "config" / "floors" / "bench.toml"
BIN = Path(sys.executable).parent
TURNAROUND_S = 0.005  # devices.md: "A device needs about 5 ms to start answering."
PRESS_MS = 50
# --faulty: on rs485-b, set when the measured window starts.
FAULTS = [
    ("1213/rio", "silent", True),  # dead
    ("1214/lock", "corrupt", 10**9),  # every answer with a bad CRC
    ("1215/lock", "slow", 50),  # answers 50 ms late
]
FAULTY_BUS = "rs485-b"


@dataclass(slots=True)
class Tx:
    """One transaction as the bench saw it at the transport seam."""

    end: float
    unit: int
    op: str
    table: Table
    address: int
    count: int
    ok: bool


class Recorder:
    """A Transport that records every transaction of the one it wraps."""

    def __init__(self, inner: ModbusTransport) -> None:
        self.inner = inner
        self.log: list[Tx] = []

    @property
    def bus(self) -> str:
        return self.inner.bus

    @property
    def max_in_flight(self) -> int:
        return self.inner.max_in_flight

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        try:
            out = await self.inner.read(unit, table, address, count)
        except BusError:
            self.log.append(Tx(time.monotonic(), unit, "read", table, address, count, False))
            raise
        self.log.append(Tx(time.monotonic(), unit, "read", table, address, count, True))
        return out

    async def write(self, unit: int, table: Table, address: int, values: Sequence[int]) -> None:
        try:
            await self.inner.write(unit, table, address, values)
        except BusError:
            self.log.append(Tx(time.monotonic(), unit, "write", table, address, len(values), False))
            raise
        self.log.append(Tx(time.monotonic(), unit, "write", table, address, len(values), True))

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Result:
    """What one run measured."""

    seconds: float
    cpu_s: float
    rss_mb: float
    hwm_mb: float
    logs: dict[str, list[Tx]]
    presses: list[tuple[str, float]]  # (room, press time, monotonic s)
    seen: dict[str, list[float]] = field(default_factory=dict)  # room -> observation times
    panel_seen: dict[str, list[float]] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)
    # floorsim's counters per RTU line over the window (requests inside the silence…)
    line_counters: dict[str, dict[str, int]] = field(default_factory=dict)


# -- line arithmetic -------------------------------------------------------------------------


def frame_bytes(tx: Tx) -> tuple[int, int]:
    """Request and response bytes of an RTU transaction (address + PDU + CRC)."""
    if tx.op == "read":
        data = math.ceil(tx.count / 8) if tx.table.is_bit else 2 * tx.count
        return 8, 5 + data
    if tx.count == 1:
        return 8, 8  # FC5/FC6 echo the request
    data = math.ceil(tx.count / 8) if tx.table.is_bit else 2 * tx.count
    return 9 + data, 8  # FC15/FC16


def line_time(q: int, r: int, bus: RtuBus) -> float:
    """Seconds one transaction occupies the line (module doc)."""
    char = bus.bits_per_char / bus.baud
    t35 = 3.5 * char if bus.baud <= 19200 else 0.00175
    return (q + r) * char + 2 * t35 + TURNAROUND_S


def offered_load(config: FloorConfig, bus: RtuBus, overrides: dict[PollClass, int]) -> float:
    """Line seconds per second that polling every point at its interval would take."""
    load = 0.0
    for spec in config.devices(bus.name):
        dev = PolledDevice(spec, DeviceHealth(), overrides)
        for group, (_, interval_ms) in dev.group_class.items():
            for req in dev.plan(dev.groups[group], group):
                q, r = frame_bytes(Tx(0, 0, "read", req.table, req.address, req.count, True))
                load += line_time(q, r, bus) / (interval_ms / 1e3)
    return load


def full_read(config: FloorConfig, room: str) -> str:
    """How many requests one read of every polled point of a room's devices takes."""
    parts, total, slots = [], 0, 0
    for spec in config.devices():
        if spec.room != room:
            continue
        dev = PolledDevice(spec, DeviceHealth(), {})
        wants = [w for ws in dev.groups.values() for w in ws]
        plan = ReadPlanner().plan(wants)
        total += len(plan)
        slots += sum(1 for r in plan if any(w.point.role == "slot" for w in r.items))
        spans = ", ".join(f"{r.table} {r.address}+{r.count}" for r in plan)
        parts.append(f"{spec.role} {len(plan)} ({spans})")
    return f"{total} requests, {total - slots} without the slots: " + "; ".join(parts)


def signatures(config: FloorConfig, bus: str, overrides: dict[PollClass, int]) -> dict:
    """(unit, table, address, count) of each poll group's first request -> its class."""
    out: dict[tuple[int, Table, int, int], tuple[str, PollClass, int]] = {}
    caps = KIND_INTERVAL_CAPS_MS.get(config.bus(bus).kind, {})
    for spec in config.devices(bus):
        dev = PolledDevice(spec, DeviceHealth(), overrides, caps)
        for group, (cls, interval_ms) in dev.group_class.items():
            first = dev.plan(dev.groups[group], group)[0]
            key = (spec.unit, first.table, first.address, first.count)
            out[key] = (spec.name, cls, interval_ms)
    return out


# -- the run -------------------------------------------------------------------------------------


async def measure(
    config: FloorConfig,
    seconds: float,
    warmup: float,
    presses: int,
    *,
    faulty: bool,
    overrides: dict[str, dict[PollClass, int]],
    seed: int,
) -> Result:
    """Start the gateway's bus drivers, press, measure for ``seconds``; stop them."""
    ctl = default_socket(config.gateway)
    seen: dict[str, list[float]] = defaultdict(list)
    panel_seen: dict[str, list[float]] = defaultdict(list)
    last: dict[str, int] = {}
    recorders: dict[str, Recorder] = {}
    runners = []

    def on_observation(o: DriverObservation) -> None:
        if isinstance(o, PointObserved) and o.point == "bath_count" and o.room is not None:
            assert isinstance(o.value, int)
            if o.room in last:
                seen[o.room].extend([o.at] * ((o.value - last[o.room]) % 65536))
            last[o.room] = o.value

    def on_panel(e: DriverEvent) -> None:
        if isinstance(e, CallPlaced):
            panel_seen[e.room].append(time.monotonic())

    for bus in config.buses:
        if isinstance(bus, RtuBus | TcpBus):
            transport = (
                ModbusTransport.rtu(bus) if isinstance(bus, RtuBus) else ModbusTransport.tcp(bus)
            )
            rec = recorders[bus.name] = Recorder(transport)
            intervals = {
                **config.poll.intervals_ms,
                **bus.intervals_ms,
                **overrides.get(bus.name, {}),
            }
            sched = BusScheduler(
                rec,
                config.devices(bus.name),
                on_observation=on_observation,
                intervals_ms=intervals,
                kind=bus.kind,
                offline_after=config.poll.offline_after,
                probe_max_s=config.poll.probe_max_s,
            )
            runners.append(sched.run())
        elif isinstance(bus, CallPanelBus):
            runners.append(CallPanelDriver(bus, on_panel).run())
    # Presses go round the buses (each RS-485 line, the TCP rios, the call panel) so that
    # every one gets its share of samples; the room within a bus is random.
    groups: dict[str, list[str]] = defaultdict(list)
    dead = {t.split("/")[0] for t, kind, _ in FAULTS if t.endswith("/rio") and kind == "silent"}
    for r in config.rooms:
        rio = next((d for d in r.devices if d.role == "rio"), None)
        if (rio is not None or r.callpanel) and not (faulty and r.id in dead):
            groups[rio.bus if rio is not None else str(r.callpanel)].append(r.id)
    rng = random.Random(seed)
    plan = press_plan(rng, list(groups.values()), presses, seconds)
    pressed: list[tuple[str, float]] = []

    async def press_all(t0: float) -> None:
        for at, room in plan:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            res = await call(ctl, "press", {"room": room, "point": "bath", "ms": PRESS_MS})
            pressed.append((room, res["mono_ns"] / 1e9))

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(r) for r in runners]
        await asyncio.sleep(warmup)  # every device online, the start-up burst over
        if faulty:
            for target, kind, value in FAULTS:
                await call(ctl, "set_fault", {"target": target, "kind": kind, "value": value})
        before = await line_counters(ctl)
        t0, cpu0 = time.monotonic(), time.process_time()
        await press_all(t0)
        await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
        t1, cpu1 = time.monotonic(), time.process_time()
        after = await line_counters(ctl)
        for t in tasks:
            t.cancel()
    if faulty:
        for target, _, _ in FAULTS:
            await call(ctl, "clear_fault", {"target": target})
    rss, hwm = memory_mb()
    return Result(
        seconds=t1 - t0,
        cpu_s=cpu1 - cpu0,
        rss_mb=rss,
        hwm_mb=hwm,
        logs={name: r.log for name, r in recorders.items()},
        presses=pressed,
        seen=dict(seen),
        panel_seen=dict(panel_seen),
        window=(t0, t1),
        line_counters={
            bus: {k: n - before.get(bus, {}).get(k, 0) for k, n in counts.items()}
            for bus, counts in after.items()
        },
    )


async def line_counters(ctl: Path) -> dict[str, dict[str, int]]:
    """floorsim's counters of every RTU line, now."""
    status = await call(ctl, "status")
    return {
        name: dict(bus.get("counters", {}))
        for name, bus in status["buses"].items()
        if bus.get("kind") == "modbus-rtu"
    }


def press_plan(
    rng: random.Random, groups: list[list[str]], n: int, seconds: float
) -> list[tuple[float, str]]:
    """``n`` presses at random times, taking the groups in turn; a room at most every 1.5 s."""
    out: list[tuple[float, str]] = []
    by_room: dict[str, list[float]] = defaultdict(list)
    span = max(1.0, seconds - 2.0)  # the last observations must fall inside the window
    for _ in range(n * 100):
        if len(out) == n:
            break
        at, room = rng.uniform(0.2, span), rng.choice(groups[len(out) % len(groups)])
        if all(abs(at - t) >= 1.5 for t in by_room[room]):
            out.append((at, room))
            by_room[room].append(at)
    return sorted(out)


def memory_mb() -> tuple[float, float]:
    """Current and peak resident set of this process, in MB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()

    def mb(key: str) -> float:
        return int(fields.get(key, "0 kB").split()[0]) / 1024

    return mb("VmRSS"), mb("VmHWM")


# -- figures -----------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def sampling_periods(
    log: list[Tx], sig: dict, window: tuple[float, float], skip_rooms: set[str] = frozenset()
) -> dict[str, list[float]]:
    """Per rio: gaps between successive good reads of its call counters in the window."""
    times: dict[str, list[float]] = defaultdict(list)
    for tx in log:
        key = (tx.unit, tx.table, tx.address, tx.count)
        hit = sig.get(key)
        if tx.ok and hit is not None and hit[1] is PollClass.EMERGENCY:
            room = hit[0].split("/")[0]
            if room not in skip_rooms:
                times[room].append(tx.end)
    out = {}
    for room, ts in times.items():
        inside = [t for t in ts if window[0] <= t <= window[1]]
        out[room] = [b - a for a, b in itertools.pairwise(inside)]
    return out


def class_intervals(
    log: list[Tx], sig: dict, window: tuple[float, float]
) -> dict[tuple[PollClass, int], tuple[list[float], int]]:
    """Per (class, target interval): each group's achieved interval, and how many groups
    did not run at all in the window. A group that ran twice or more: the mean gap between
    its runs; once: the window's length (a lower bound)."""
    runs: dict[tuple[int, Table, int, int], list[float]] = defaultdict(list)
    for tx in log:
        key = (tx.unit, tx.table, tx.address, tx.count)
        if tx.ok and key in sig and window[0] <= tx.end <= window[1]:
            runs[key].append(tx.end)
    out: dict[tuple[PollClass, int], tuple[list[float], int]] = {}
    for key, (_, cls, interval) in sig.items():
        got, idle = out.get((cls, interval), ([], 0))
        ts = runs.get(key, [])
        if len(ts) >= 2:
            got.append((ts[-1] - ts[0]) / (len(ts) - 1))
        elif ts:
            got.append(window[1] - window[0])
        out[(cls, interval)] = (got, idle + (0 if ts else 1))
    return out


def latencies(res: Result, rooms: set[str], panel: bool = False) -> tuple[list[float], int]:
    """Press-to-observation latencies of presses in ``rooms`` and how many were unmatched."""
    seen = res.panel_seen if panel else res.seen
    cursor: dict[str, int] = defaultdict(int)
    out, missing = [], 0
    for room, t in res.presses:
        if room not in rooms:
            continue
        obs = seen.get(room, [])
        i = cursor[room]
        while i < len(obs) and obs[i] < t:
            i += 1  # an observation before the press belongs to an earlier one
        if i < len(obs):
            out.append(obs[i] - t)
            cursor[room] = i + 1
        else:
            missing += 1
    return out, missing


def report(config: FloorConfig, res: Result, overrides: dict, title: str) -> dict[str, Any]:
    """Print one run's figures; return the per-bus sampling periods for comparisons."""
    print(f"\n=== {title}: {res.seconds:.1f} s measured, {len(res.presses)} presses ===")
    print(f"   a full read of room 1201: {full_read(config, '1201')}")
    summary: dict[str, Any] = {}
    for bus in config.buses:
        if not isinstance(bus, RtuBus | TcpBus):
            continue
        ov = {**config.poll.intervals_ms, **bus.intervals_ms, **overrides.get(bus.name, {})}
        log = [t for t in res.logs[bus.name] if res.window[0] <= t.end <= res.window[1]]
        sig = signatures(config, bus.name, ov)
        n_ok = sum(t.ok for t in log)
        rate = len(log) / res.seconds
        print(f"\n-- {bus.name} ({bus.kind}), {len(config.devices(bus.name))} devices")
        if isinstance(bus, RtuBus):
            busy = sum(line_time(*frame_bytes(t), bus) for t in log if t.ok)
            theory = n_ok / busy if busy else math.nan
            print(
                f"   transactions: {rate:.2f}/s achieved ({n_ok} answered, "
                f"{len(log) - n_ok} failed); theoretical max for this mix {theory:.2f}/s; "
                f"ratio {rate / theory:.3f}"
            )
            load = offered_load(config, bus, ov)
            print(
                f"   offered load at the profiles' intervals: {load:.2f} line-s/s"
                + ("  (saturated)" if load > 1 else "")
            )
            mix: dict[tuple[int, int], int] = defaultdict(int)
            for t in log:
                if t.ok:
                    mix[frame_bytes(t)] += 1
            char_ms = bus.bits_per_char / bus.baud * 1e3
            print(
                f"   line time per transaction, {bus.baud} baud, {bus.bits_per_char} bits/char "
                f"({char_ms:.3f} ms/char), t3.5 {3.5 * char_ms:.3f} ms:"
            )
            for (q, r), n in sorted(mix.items(), key=lambda kv: -kv[1])[:6]:
                ms = line_time(q, r, bus) * 1e3
                print(
                    f"     {n:6d} x ({q:2d}+{r:2d} B) x {char_ms:.3f} + 2 x {3.5 * char_ms:.3f}"
                    f" + 5 = {ms:6.2f} ms"
                )
            print(f"   sum of line time {busy:.2f} s of {res.seconds:.2f} s")
            counts = res.line_counters.get(bus.name, {})
            print(
                "   requests begun inside the 3.5-character silence after an answer: "
                f"{counts.get('request_inside_silence', 0)}; sent before a late answer to an "
                f"abandoned request: {counts.get('request_before_late_answer', 0)} (floorsim)"
            )
        else:
            print(
                f"   transactions: {rate:.2f}/s achieved ({len(log) - n_ok} failed); "
                "loopback TCP has no line-rate limit (floorsim answers at once)"
            )
        periods = sampling_periods(res.logs[bus.name], sig, res.window)
        flat = [p for ps in periods.values() for p in ps]
        worst = max((pct(ps, 99) for ps in periods.values() if ps), default=math.nan)
        print(
            f"   call-counter sampling period: p50 {pct(flat, 50) * 1e3:.0f} ms, "
            f"p99 {pct(flat, 99) * 1e3:.0f} ms (worst room p99 {worst * 1e3:.0f} ms, "
            f"{len(periods)} rooms, {len(flat)} samples)"
        )
        bus_rooms = {d.room for d in config.devices(bus.name) if d.room and d.role == "rio"}
        lat, missing = latencies(res, bus_rooms)
        print(
            f"   press-to-observation: p50 {pct(lat, 50) * 1e3:.0f} ms, p99 "
            f"{pct(lat, 99) * 1e3:.0f} ms ({len(lat)} presses, {missing} unmatched)"
        )
        intervals = class_intervals(res.logs[bus.name], sig, res.window)
        parts = []
        for (cls, target), (got, idle) in sorted(
            intervals.items(), key=lambda kv: (list(PollClass).index(kv[0][0]), kv[0][1])
        ):
            mid = statistics.median(got) if got else math.inf
            # A group that ran once in the window says only "at least the window".
            text = f"{cls} {target / 1e3:g} s -> " + (
                f"{mid:.2f} s" if mid < res.seconds * 0.999 else f">= {res.seconds:.0f} s"
            )
            if idle and got:
                text += f" ({idle} of {len(got) + idle} groups not run)"
            parts.append(text)
        print("   interval achieved per class (target -> median over its groups):")
        print("     " + "; ".join(parts))
        summary[bus.name] = periods
    panel_rooms = {r.id for r in config.rooms if r.callpanel}
    lat, missing = latencies(res, panel_rooms, panel=True)
    print(
        f"\n-- call panel: press-to-CallPlaced p50 {pct(lat, 50) * 1e3:.1f} ms, p99 "
        f"{pct(lat, 99) * 1e3:.1f} ms ({len(lat)} presses, {missing} unmatched)"
    )
    print(
        f"\n-- machine load average (1 min) {os.getloadavg()[0]:.2f} at the end of the run; "
        "other work on the machine slows floorsim and the gateway alike"
    )
    print(
        f"-- gateway process: CPU {100 * res.cpu_s / res.seconds:.1f} % of one core "
        f"({res.cpu_s:.2f} s in {res.seconds:.1f} s), RSS {res.rss_mb:.1f} MB "
        f"(peak {res.hwm_mb:.1f} MB)"
    )
    return summary


def compare(config: FloorConfig, clean: dict, faulty: dict, res: Result) -> None:
    """Other rooms of the faulty bus: sampling p99, clean vs faulty; what a stall costs."""
    faulty_rooms = {t.split("/")[0] for t, _, _ in FAULTS}
    print(f"\n=== {FAULTY_BUS}: rooms without a faulty device, clean vs faulty ===")
    a = [p for room, ps in clean[FAULTY_BUS].items() if room not in faulty_rooms for p in ps]
    b = [p for room, ps in faulty[FAULTY_BUS].items() if room not in faulty_rooms for p in ps]
    pa, pb = pct(a, 99), pct(b, 99)
    print(
        f"   call sampling p99: clean {pa * 1e3:.0f} ms, faulty {pb * 1e3:.0f} ms "
        f"({100 * (pb / pa - 1):+.1f} %); p50 {pct(a, 50) * 1e3:.0f} -> {pct(b, 50) * 1e3:.0f} ms;"
        f" max {max(a) * 1e3:.0f} -> {max(b) * 1e3:.0f} ms"
    )
    bus_cfg = config.bus(FAULTY_BUS)
    assert isinstance(bus_cfg, RtuBus)
    log = [t for t in res.logs[FAULTY_BUS] if res.window[0] <= t.end <= res.window[1]]
    failed = sum(not t.ok for t in log)
    # A read of one register nobody answers: the request, the timeout and the answer's time.
    stall = (
        sum(frame_bytes(Tx(0, 0, "read", Table.INPUT, 0, 1, True)))
        * (bus_cfg.bits_per_char / bus_cfg.baud)
        + bus_cfg.timeout_ms / 1e3
    )
    rios = sum(1 for d in config.devices(FAULTY_BUS) if d.role == "rio")
    interval = config.profiles["fg-rio-1"].intervals.get(PollClass.EMERGENCY, 300) / 1e3
    busy = rios * line_time(8, 11, bus_cfg)
    print(
        f"   {failed} failed transactions (offline detection: {config.poll.offline_after} per "
        f"device, then probes); a silent one holds the line for the request + the "
        f"{bus_cfg.timeout_ms} ms timeout + the answer's time = {stall * 1e3:.0f} ms"
    )
    print(
        f"   emergency polls need {rios} x {line_time(8, 11, bus_cfg) * 1e3:.1f} ms = "
        f"{busy * 1e3:.0f} ms of every {interval * 1e3:.0f} ms ({100 * busy / interval:.0f} %, "
        f"more with the stack's ~2 ms per transaction): a stall longer than the "
        f"{(interval - busy) * 1e3:.0f} ms left per cycle delays the next sample of every rio"
    )
    print(
        f"   by up to {stall * 1e3:.0f} ms (period <= {(interval + stall) * 1e3:.0f} ms); p99 "
        f"stays within +10 % only while fewer than 1 % of samples follow a stall, i.e. less "
        f"than one stall per {100 * interval:.0f} s (each stall hits one sample of every rio)"
    )
    for bus in sorted(clean):
        if bus == FAULTY_BUS:
            continue
        x = [p for ps in clean[bus].values() for p in ps]
        y = [p for ps in faulty[bus].values() for p in ps]
        print(
            f"   {bus}: p99 {pct(x, 99) * 1e3:.0f} -> {pct(y, 99) * 1e3:.0f} ms (no faults there)"
        )


# -- floorsim in a subprocess ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=25.0, help="measured time per run")
    p.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    p.add_argument("--presses", type=int, default=120, help="call presses per run (>= 100)")
    p.add_argument("--faulty", action="store_true", help="also run with faulty devices")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--tcp-emergency-ms",
        type=int,
        help="poll the TCP bus's emergency class at this interval instead of the profile's",
    )
    args = p.parse_args()
    configure_logging(level="error")
    run_dir = Path(tempfile.mkdtemp(prefix="floorgate-bench-"))
    os.environ["FLOORGATE_RUN_DIR"] = str(run_dir)
    os.environ["FLOORGATE_MODBUS_PORT"] = str(free_port())
    os.environ["FLOORGATE_MQTT_PORT"] = str(free_port())
    (run_dir / "command.key").write_text(secrets.token_hex(32) + "\n")
    config, _ = load_floor(FLOOR)
    overrides: dict[str, dict[PollClass, int]] = {}
    if args.tcp_emergency_ms:
        for bus in config.buses:
            if isinstance(bus, TcpBus):
                overrides[bus.name] = {PollClass.EMERGENCY: args.tcp_emergency_ms}
    sim = subprocess.Popen(
        [str(BIN / "floorsim"), "--config", str(FLOOR), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ctl = default_socket(config.gateway)
        deadline = time.monotonic() + 20
        while not socket_is_live(ctl):
            if sim.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench: floorsim did not start")
            time.sleep(0.05)
        print(
            f"floorsim pid {sim.pid} serving {FLOOR.name}; the gateway's drivers run in "
            f"pid {os.getpid()}"
        )
        kw = {"overrides": overrides, "seed": args.seed}
        clean = asyncio.run(
            measure(config, args.seconds, args.warmup, args.presses, faulty=False, **kw)
        )
        base = report(config, clean, overrides, "clean run")
        if args.faulty:
            bad = asyncio.run(
                measure(config, args.seconds, args.warmup, args.presses, faulty=True, **kw)
            )
            worse = report(
                config, bad, overrides, "faulty run: " + ", ".join(f"{t} {k}" for t, k, _ in FAULTS)
            )
            compare(config, base, worse, bad)
    finally:
        if sim.poll() is None:
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
