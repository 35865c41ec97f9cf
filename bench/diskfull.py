"""Calls on a full disk (``bench/calls.py --disk-full``): press -> lamps, healthy vs disk full.

Two runs of the whole gateway on the bench floor (GatewayRun of bench/calls.py), measured
the same way, one after the other on this machine:

1. healthy: the state directory on a small tmpfs with room to spare;
2. disk full: the same tmpfs filled to the last byte after start-up, and the floor's own
   traffic (DND toggled in a room) run until the gateway raises ``storage`` (the floor
   panel's trouble lamp lights); then the same presses.

The daemon runs in a mount namespace of its own (``unshare``; with a user namespace when
not root), where a size-limited tmpfs is mounted over its state directory; this process
fills and frees it through ``/proc/PID/root`` (tests/fullfs.py). Nothing is mounted
outside the daemon's namespace.

Latency = floorsim's journal stamp of the room I/O's ``dome_lamp`` coil written on, minus
floorsim's press stamp (both CLOCK_MONOTONIC of this machine): sampling, the core and the
lamp write, and, when healthy, the SQLite commit before it. Only room-I/O rooms (RTU and
TCP): a call panel's lamp is a serial message. Each call is then reset with the staff key
and its lamp seen off before the room calls again. Target: the disk-full p99 within 10 % of
the healthy p99.

Then the space is freed: "held -> delivered" is the time from freeing it to the arrival at
the MQTT subscriber of every event held meanwhile (every press's ``alarm.raised`` and
``alarm.resolved``, and ``storage`` resolved).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from calls import REPO, GatewayRun, figures_line, pct, room_kinds

sys.path.insert(0, str(REPO))
from tests import fullfs

STATE_SIZE = "24m"  # the daemon's state filesystem (the bench floor's database fits easily)
LAMP_WAIT_S = 10.0
FILL_TRAFFIC_MAX = 3000  # DND toggles at most, to use up the room the database still has
TARGET_RATIO = 1.10  # disk-full p99 within 10 % of the healthy p99
DELIVERY_WAIT_S = 120.0


async def disk_full_main(args: argparse.Namespace) -> None:
    """Both runs, then the figures."""
    why = fullfs.unavailable()
    if why is not None:
        raise SystemExit(f"bench: cannot run the disk-full bench here: {why}")
    presses = min(args.presses, 100)
    healthy = await _run(args, presses, full=False)
    full = await _run(args, presses, full=True)
    print("\npress (floorsim mono_ns) -> dome_lamp written on (floorsim journal):")
    print("  kind            n  missed   p50 ms   p99 ms   max ms   target p99  met")
    target = pct(healthy.latency, 99) * TARGET_RATIO
    print(figures_line("healthy disk", healthy.latency, healthy.missed, math.inf))
    print(figures_line("disk full", full.latency, full.missed, target))
    print(f"  (target: disk-full p99 <= healthy p99 x {TARGET_RATIO:.2f} = {target:.0f} ms)")
    if full.delivered_s is None:
        print(f"\nheld -> delivered: NOT all held events arrived within {DELIVERY_WAIT_S:.0f} s")
    else:
        print(
            f"\nheld -> delivered: {full.delivered_s:.2f} s from the space freed to the last of "
            f"{full.held} held events at the subscriber (storage resolved)"
        )
    print(f"  storage raised after {full.fill_toggles} DND toggles on the full disk")
    print(f"  machine load average (1 min) at the end: {os.getloadavg()[0]:.2f} (2 cores, shared)")
    for note in healthy.notes + full.notes:
        print(f"  WARNING: {note}")


class _Result:
    def __init__(self) -> None:
        self.latency: list[float] = []
        self.missed = 0
        self.delivered_s: float | None = None
        self.held = 0
        self.fill_toggles = 0
        self.notes: list[str] = []


async def _run(args: argparse.Namespace, presses: int, *, full: bool) -> _Result:
    tag = "diskfull" if full else "healthy"
    res = _Result()
    state_of = lambda run_dir: run_dir / "state"  # noqa: E731 (the bench floor's state_dir)

    def prefix(run_dir: Path) -> list[str]:
        state_of(run_dir).mkdir(parents=True, exist_ok=True)
        return fullfs.prefix(state_of(run_dir), STATE_SIZE)

    async with GatewayRun(args.warmup, tag, quiet_daemon=True, daemon_prefix=prefix) as run:
        assert run.daemon is not None
        kinds = room_kinds(run.config)
        rooms = [r for kind in ("RTU", "TCP") for r in kinds[kind]]
        first_event = len(run.arrivals)
        if full:
            fullfs.fill(run.daemon.pid, state_of(run.dir))
            res.fill_toggles = await _until_storage_fails(run, rooms[-1])
            if res.fill_toggles < 0:
                res.notes.append("the gateway never raised storage on the full disk")
        rng = random.Random(args.seed)
        for _ in range(presses):
            room = rng.choice(rooms[:-1])
            latency = await _press_to_lamp(run, room)
            if latency is None:
                res.missed += 1
            else:
                res.latency.append(latency)
        if full:
            freed = time.monotonic_ns()
            fullfs.free(run.daemon.pid, state_of(run.dir))
            res.held, res.delivered_s = await _delivered(run, first_event, presses, freed)
        gone = run.alive()
        if gone:
            res.notes.append(f"{tag}: exited during the run: {gone}")
    return res


async def _until_storage_fails(run: GatewayRun, room: str) -> int:
    """Toggle DND in ``room`` until the floor panel's trouble lamp lights; the toggles."""
    for n in range(FILL_TRAFFIC_MAX):
        if await _trouble(run):
            return n
        await run.ctl("dnd", {"room": room, "on": n % 2 == 0})
        await asyncio.sleep(0.05)
    return -1


async def _trouble(run: GatewayRun) -> bool:
    got = await run.ctl("get", {"target": "floorpanel", "point": "trouble_lamp"})
    return bool(got.get("value") if isinstance(got, dict) else got)


async def _press_to_lamp(run: GatewayRun, room: str) -> float | None:
    """One call: press, the dome lamp's write seen on, staff key, the lamp seen off."""
    pressed = await run.ctl("press", {"room": room, "point": "bath", "ms": 100})
    at = int(pressed["mono_ns"])
    on = await _lamp_write(run, room, at, value=True)
    staff = await run.ctl("staff", {"room": room, "ms": 100})
    await _lamp_write(run, room, int(staff["mono_ns"]), value=False)
    if on is None:
        return None
    return (on - at) / 1e6


async def _lamp_write(run: GatewayRun, room: str, after_ns: int, *, value: bool) -> int | None:
    """The mono_ns of the first write of the room's dome lamp to ``value`` after ``after_ns``."""
    deadline = time.monotonic() + LAMP_WAIT_S
    while time.monotonic() < deadline:
        events: list[dict[str, Any]] = await run.ctl("events", {"kind": "write", "room": room})
        for e in events:
            detail = e.get("detail", {})
            if (
                int(e["mono_ns"]) >= after_ns
                and detail.get("point") == "dome_lamp"
                and bool(detail.get("value")) is value
            ):
                return int(e["mono_ns"])
        await asyncio.sleep(0.005)
    return None


async def _delivered(
    run: GatewayRun, first: int, presses: int, freed_ns: int
) -> tuple[int, float | None]:
    """Wait for every held event; (their count, seconds from freed to the last one)."""

    def done() -> tuple[int, int] | None:
        docs = [a for a in run.arrivals[first:] if isinstance(a.doc.get("type"), str)]
        calls = [a for a in docs if a.doc["type"] == "alarm.resolved" and _call(a.doc)]
        storage = [
            a
            for a in docs
            if a.doc["type"] == "alarm.resolved" and a.doc["data"].get("point") == "storage"
        ]
        if len(calls) >= presses and storage:
            last = max(a.mono_ns for a in [*calls, *storage])
            return len(docs), last
        return None

    deadline = time.monotonic() + DELIVERY_WAIT_S
    while time.monotonic() < deadline:
        found = done()
        if found is not None:
            held, last = found
            return held, (last - freed_ns) / 1e9
        await asyncio.sleep(0.05)
    return 0, None


def _call(doc: dict[str, Any]) -> bool:
    return doc.get("data", {}).get("kind") == "call"
