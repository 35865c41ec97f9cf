"""Authorisation benchmark: how fast the locks follow what is authorised.

    .venv/bin/python bench/authz.py [--phases window,burst] [--stays 100] [--seconds 40]
                                    [--warmup 6] [--seed 1]

Same setup as bench/calls.py (``GatewayRun``): floorgated as its own process on the bench
floor with all polling running, floorsim in another, Mosquitto on a free loopback port.
``--stays`` checkouts and as many expiries are spread over the 60 rooms (their locks: 48
on the four RS-485 lines, 12 on Modbus TCP) at random times over ``--seconds``; one stay
per room at a time, two tokens per stay.

- checkout: check in (valid from a minute ago, until in an hour), wait until floorsim's
  lock holds both tokens, then publish ``checkout``; latency = from just before the
  publish (CLOCK_MONOTONIC) until the write that left the lock without either token.
- expiry: check in with ``valid_until`` 3-5 s ahead (milliseconds given), wait until the
  lock holds the tokens; latency = from ``valid_until`` (wall clock) until that write.

Before the window, a probe stay is checked in to every room at once and then checked out:
the gateway reads every lock's slots at start-up before it writes any, and the window is
meant to measure the steady state; the burst's figures (all written, all cleared) are
printed too. The run's length depends on them.

Phases (``--phases``, in this order):

- ``window``: the random mix above.
- ``burst``: 30 stays checked out one every 0.2 s while 30 other stays (on the RS-485
  lines) expire two per second, timed so that a slot-verification sweep (every
  ``policy.slot_verify_s``, 60 s on the bench floor: every lock's 32 slots read at slow
  priority) falls 2 s into it, as one does sooner or later in service; same latencies as
  above.
- ``shift``, ``lockdown``, ``signatures``: staff keys changing shift at one minute with
  guests checked out meanwhile, a lockdown, and the cost of signature checks
  (bench/access_phases.py says how each is measured).

When the slot became empty comes from floorsim's journal: every write by the gateway is
journalled with floorsim's clocks (``ts`` wall, ``mono_ns``) as it is applied, so the
stamp does not depend on how often this script looks; the journal is read every 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from access_phases import (
    LOCKDOWN_TARGET_MS,
    SHIFT_TARGET_MS,
    AccessResults,
    lockdown,
    shift,
    signature_cost,
)
from calls import (
    TABLE_HEAD,
    GatewayRun,
    Usage,
    figures_line,
    lock_kind,
    pct,
    wall_ts,
)

TARGET_MS = 1000.0  # issue 6: p99 <= 1 s for both
TOKENS_PER_STAY = 2
BURST_STAYS = 30
CHECKOUT_EVERY_S = 0.2
EXPIRIES_PER_S = 2.0
BURST_PREP_S = 20.0  # check in the burst's stays before it begins
PHASES = ("window", "burst", "shift", "lockdown", "signatures")
EXPIRY_LEAD_S = (3.0, 5.0)
JOURNAL_POLL_S = 0.01
HOLD_WAIT_S = 15.0
READY_WAIT_S = 120.0

Slots = dict[int, int]  # slot index -> token (0 = empty)


@dataclass(frozen=True, slots=True)
class Stamp:
    """When floorsim applied a write: wall seconds and monotonic ns."""

    ts: float
    mono_ns: int


class SlotWatch:
    """Every lock's slots as floorsim's journal says the gateway wrote them."""

    def __init__(self, run: GatewayRun) -> None:
        self.run = run
        self.slots: dict[str, Slots] = defaultdict(dict)
        self.seq = 0
        self._waiters: list[tuple[str, Callable[[Slots], bool], asyncio.Future[Stamp]]] = []

    async def start(self) -> None:
        """Read every lock's slots now; the journal after this point keeps them current."""
        self.seq = (await self.run.ctl("status"))["journal_seq"]
        for room in self.run.config.rooms:
            got = await self.run.ctl("slots", {"room": room.id})
            self.slots[room.id] = {s["slot"]: s["token"] for s in got}

    def when(self, room: str, pred: Callable[[Slots], bool]) -> asyncio.Future[Stamp]:
        """A future for the first journalled write after which ``pred(room's slots)`` holds."""
        fut: asyncio.Future[Stamp] = asyncio.get_running_loop().create_future()
        self._waiters.append((room, pred, fut))
        return fut

    async def run_forever(self) -> None:
        """Follow the journal's writes (every JOURNAL_POLL_S) and settle waiters."""
        while True:
            events = await self.run.ctl("events", {"since_seq": self.seq, "kind": "write"})
            for e in events:
                self.seq = e["seq"]
                point = e["detail"].get("point", "")
                if not (e["target"].endswith("/lock") and point.startswith("slot[")):
                    continue
                room = e["room"]
                self.slots[room][int(point[5:-1])] = int(e["detail"]["value"] or 0)
                self._settle(room, Stamp(e["ts"], e["mono_ns"]))
            await asyncio.sleep(JOURNAL_POLL_S)

    def _settle(self, room: str, stamp: Stamp) -> None:
        keep = []
        for r, pred, fut in self._waiters:
            if fut.done():
                continue
            if r == room and pred(self.slots[room]):
                fut.set_result(stamp)
            else:
                keep.append((r, pred, fut))
        self._waiters = keep


def holds(tokens: set[int]) -> Callable[[Slots], bool]:
    """Every token in some slot."""
    return lambda slots: tokens <= set(slots.values())


def empty_of(tokens: set[int]) -> Callable[[Slots], bool]:
    """No token in any slot."""
    return lambda slots: not tokens & set(slots.values())


@dataclass
class AuthzResults:
    """Latencies (ms) per operation and lock bus kind; stays that went wrong, and why."""

    latency: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # op -> why
    early: list[str] = field(default_factory=list)  # cleared before valid_until
    slowest: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    checkin_ms: list[float] = field(default_factory=list)
    ready_s: float = math.nan  # probe stays in every room at once: all written (s)
    ready_out_s: float = math.nan  # ... then all checked out: all cleared (s)
    usage: list[Usage] = field(default_factory=list)  # the processes, over the window

    def fail(self, op: str, why: str) -> None:
        """Record a stay of ``op`` that gave no sample."""
        self.failed[op].append(why)

    def of(self, op: str) -> list[float]:
        """Every latency of one operation."""
        return [v for (o, _), vs in self.latency.items() if o == op for v in vs]


class Stays:
    """Check-ins and their tokens, as the bench's central system sends them."""

    def __init__(self, run: GatewayRun, watch: SlotWatch, res: AuthzResults) -> None:
        self.run = run
        self.watch = watch
        self.res = res
        self._ids = iter(range(10**9))

    async def checkin(
        self, op: str, room: str, until: datetime, wait_s: float = HOLD_WAIT_S
    ) -> tuple[str, set[int]] | None:
        """Check a stay in (valid from a minute ago) and wait until its tokens are written."""
        stay = f"B-{room}-{next(self._ids)}"
        tokens = {int.from_bytes(secrets.token_bytes(8)) | 1 for _ in range(TOKENS_PER_STAY)}
        held = self.watch.when(room, holds(tokens))
        sent, reply = await self.run.command(
            "checkin",
            {
                "room": room,
                "stay_id": stay,
                "valid_from": wall_ts(datetime.now(UTC) - timedelta(minutes=1)),
                "valid_until": wall_ts(until),
                "tokens": [f"{t:016x}" for t in tokens],
            },
        )
        if not reply["ok"]:
            self.res.fail(op, f"{room}: checkin refused: {reply['error']}")
            return None
        try:
            stamp = await asyncio.wait_for(held, wait_s)
        except TimeoutError:
            late = op == "expiry" and time.time() > until.timestamp()
            self.res.fail(op, f"{room}: " + ("expired before written" if late else "never written"))
            return None
        if op not in ("probe", "prep"):
            self.res.checkin_ms.append((stamp.mono_ns - sent) / 1e6)
        return stay, tokens

    async def checkout(self, room: str, stay: str, tokens: set[int], op: str = "checkout") -> None:
        """Check the stay out; its latency: publish until no token is left in the lock."""
        emptied = self.watch.when(room, empty_of(tokens))
        sent, reply = await self.run.command("checkout", {"room": room, "stay_id": stay})
        if not reply["ok"]:
            self.res.fail(op, f"{room}: checkout refused: {reply['error']}")
            return
        try:
            stamp = await asyncio.wait_for(emptied, HOLD_WAIT_S)
        except TimeoutError:
            self.res.fail(op, f"{room}: never cleared")
            return
        kind = lock_kind(self.run.config, room)
        ms = (stamp.mono_ns - sent) / 1e6
        self.res.latency[(op, kind)].append(ms)
        self.res.slowest[op].append((ms, f"{room} at {wall_ts(datetime.now(UTC))}"))

    async def expired(
        self, room: str, until: datetime, tokens: set[int], op: str = "expiry"
    ) -> None:
        """Wait for the stay's expiry; its latency: ``valid_until`` until no token is left."""
        emptied = self.watch.when(room, empty_of(tokens))
        if not holds(tokens)(self.watch.slots[room]):
            self.res.fail(op, f"{room}: valid_until passed before the tokens were written")
            return
        try:
            stamp = await asyncio.wait_for(
                emptied, max(0.0, until.timestamp() - time.time()) + HOLD_WAIT_S
            )
        except TimeoutError:
            self.res.fail(op, f"{room}: never cleared")
            return
        late_ms = (stamp.ts - until.timestamp()) * 1e3
        if late_ms < 0:
            self.res.early.append(f"{room}: {late_ms:.1f} ms")
        self.res.latency[(op, lock_kind(self.run.config, room))].append(late_ms)
        self.res.slowest[op].append((late_ms, f"{room} at {wall_ts(datetime.now(UTC))}"))


async def ready(stays: Stays, rooms: list[str]) -> None:
    """A probe stay in every room at once, then checked out: the start-up reads are over.

    At start-up the gateway reads every lock's slots before it writes them; the phases are
    meant to measure the steady state. It is also the figure for a burst of checkins.
    """
    res, run = stays.res, stays.run
    ready_t0 = time.monotonic()
    far = datetime.now(UTC) + timedelta(hours=1)
    probes = await asyncio.gather(*(stays.checkin("probe", r, far, READY_WAIT_S) for r in rooms))
    res.ready_s = time.monotonic() - ready_t0
    if any(p is None for p in probes):
        raise SystemExit(f"bench: probe stays were not written: {dict(res.failed)}")

    async def probe_out(room: str, stay: str, tokens: set[int]) -> None:
        cleared = stays.watch.when(room, empty_of(tokens))
        await run.command("checkout", {"room": room, "stay_id": stay})
        await asyncio.wait_for(cleared, READY_WAIT_S)

    await asyncio.gather(*(probe_out(r, *p) for r, p in zip(rooms, probes, strict=True) if p))
    res.ready_out_s = time.monotonic() - ready_t0 - res.ready_s


async def window(stays: Stays, rooms: list[str], count: int, seconds: float, seed: int) -> None:
    """``count`` checkouts and ``count`` expiries over ``seconds``, one stay per room at a time."""
    rng = random.Random(seed)
    ops = [("checkout", rng.uniform(0, seconds)) for _ in range(count)]
    ops += [("expiry", rng.uniform(0, seconds)) for _ in range(count)]
    ops.sort(key=lambda o: o[1])
    order = rooms[:]
    rng.shuffle(order)
    per_room: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for i, op in enumerate(ops):
        per_room[order[i % len(order)]].append(op)

    async def checkout(room: str) -> None:
        got = await stays.checkin("checkout", room, datetime.now(UTC) + timedelta(hours=1))
        if got is not None:
            await stays.checkout(room, *got)

    async def expiry(room: str) -> None:
        until = datetime.now(UTC) + timedelta(seconds=rng.uniform(*EXPIRY_LEAD_S))
        until = until.replace(microsecond=until.microsecond // 1000 * 1000)  # as sent (ms)
        got = await stays.checkin("expiry", room, until)
        if got is not None:
            await stays.expired(room, until, got[1])

    async def room_worker(room: str) -> None:
        for op, at in per_room[room]:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            await (checkout(room) if op == "checkout" else expiry(room))

    t0 = time.monotonic()
    async with stays.run.measuring() as usage, asyncio.TaskGroup() as tg:
        for room in per_room:
            tg.create_task(room_worker(room), name=f"stays[{room}]")
    stays.res.usage += usage


async def burst(stays: Stays, seed: int, sweep_every_s: float) -> None:
    """30 checkouts one every 0.2 s while 30 RS-485 stays expire two per second, across a
    slot-verification sweep (see the module doc)."""
    run = stays.run
    rng = random.Random(seed)
    rtu = [r.id for r in run.config.rooms if lock_kind(run.config, r.id) == "RTU"]
    rng.shuffle(rtu)
    expiring = rtu[:BURST_STAYS]
    leaving = [r.id for r in run.config.rooms if r.id not in expiring][:BURST_STAYS]
    # The sweeps run every sweep_every_s from the daemon's start: aim 2 s before one, with
    # room for the preparation (check-ins written) first.
    started = run.started_wall
    now = time.time()
    k = math.ceil((now + BURST_PREP_S + 2.0 - started) / sweep_every_s)
    start = started + k * sweep_every_s - 2.0
    begin = datetime.fromtimestamp(start, UTC)
    untils = [begin + timedelta(seconds=i / EXPIRIES_PER_S) for i in range(len(expiring))]
    untils = [u.replace(microsecond=u.microsecond // 1000 * 1000) for u in untils]
    far = datetime.now(UTC) + timedelta(hours=1)
    booked = await asyncio.gather(
        *(stays.checkin("prep", r, far) for r in leaving),
        *(stays.checkin("prep", r, u) for r, u in zip(expiring, untils, strict=True)),
    )
    if time.time() > start:
        raise SystemExit("bench: the burst's check-ins took longer than its preparation time")

    async def leave(i: int, room: str, got: tuple[str, set[int]] | None) -> None:
        await asyncio.sleep(max(0.0, start + i * CHECKOUT_EVERY_S - time.time()))
        if got is not None:
            await stays.checkout(room, *got, op="burst checkout")

    async def expire(room: str, until: datetime, got: tuple[str, set[int]] | None) -> None:
        if got is not None:
            await stays.expired(room, until, got[1], op="burst expiry")

    async with run.measuring() as usage, asyncio.TaskGroup() as tg:
        for i, (room, got) in enumerate(zip(leaving, booked[: len(leaving)], strict=True)):
            tg.create_task(leave(i, room, got))
        for room, until, got in zip(expiring, untils, booked[len(leaving) :], strict=True):
            tg.create_task(expire(room, until, got))
    stays.res.usage += usage


async def authz_main(args: argparse.Namespace) -> None:
    """Set up, run the phases, print."""
    phases = [p for p in PHASES if p in args.phases.split(",")]
    async with GatewayRun(args.warmup, "authz") as run:
        kinds: dict[str, int] = defaultdict(int)
        for room in run.config.rooms:
            kinds[lock_kind(run.config, room.id)] += 1
        print(
            f"bench floor: {len(run.config.rooms)} rooms; locks: "
            + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            + f"; floorgated pid {run.daemon.pid if run.daemon else '?'}, "
            f"floorsim pid {run.sim.pid if run.sim else '?'}, mosquitto :{run.broker.port}"
        )
        print(f"phases: {', '.join(phases)}; load average {os.getloadavg()[0]:.2f} at start")
        res = AuthzResults()
        access = AccessResults()
        watch = SlotWatch(run)
        await watch.start()
        follower = asyncio.create_task(watch.run_forever(), name="bench-journal")
        stays = Stays(run, watch, res)
        rooms = [r.id for r in run.config.rooms]
        try:
            await ready(stays, rooms)
            print(
                f"ready: {len(rooms)} probe checkins at once, {args.warmup:.0f} s after "
                f"gateway.started (start-up slot reads of every lock come first): all written "
                f"after {res.ready_s:.1f} s; checked out at once: all cleared after "
                f"{res.ready_out_s:.1f} s."
            )
            if "window" in phases:
                print(
                    f"window: {args.stays} checkouts and {args.stays} expiries over "
                    f"{args.seconds:.0f} s, {TOKENS_PER_STAY} tokens per stay, one stay per "
                    "room at a time"
                )
                await window(stays, rooms, args.stays, args.seconds, args.seed)
            if "burst" in phases:
                print(
                    f"burst: {BURST_STAYS} checkouts one every {CHECKOUT_EVERY_S} s while "
                    f"{BURST_STAYS} RS-485 stays expire {EXPIRIES_PER_S:.0f} per second, "
                    "across a slot-verification sweep"
                )
                await burst(stays, args.seed, run.config.policy.slot_verify_s)
            if "shift" in phases:
                print(
                    "shift: 40 staff keys, 4 per section ending and 4 starting at the next "
                    f"whole minute, with {30} guests checked out one every 0.2 s from then"
                )
                await shift(run, watch, stays, access, "shift checkout")
            if "lockdown" in phases:
                print("lockdown: 2 security keys, a guest in every room, then lockdown on")
                await lockdown(run, watch, stays, access)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        gone = run.alive()
    print("\nuntil the lock's slots no longer hold the stay's tokens (floorsim's journal):")
    print(TABLE_HEAD)
    ops = ("checkout", "expiry", "burst checkout", "burst expiry", "shift checkout")
    for op in (op for op in ops if res.of(op)):
        print(figures_line(op, res.of(op), len(res.failed[op]), TARGET_MS))
    for name, values, target in (
        ("shift", access.shift_ms, SHIFT_TARGET_MS),
        ("lockdown", access.lockdown_ms, LOCKDOWN_TARGET_MS),
    ):
        if values or access.failed.get(name):
            print(figures_line(name, values, len(access.failed.get(name, [])), target))
    if access.shift_ms or access.lockdown_ms:
        print(
            "  shift: from the minute (local) until a lock holds the new shift and none of the"
            " old; lockdown: from the publish until a lock holds security keys only"
        )
    for phase, whys in access.failed.items():
        print(f"  {phase}: {len(whys)} without a sample: {'; '.join(whys[:8])}")
    print("  by the lock's bus:")
    for (op, kind), values in sorted(res.latency.items()):
        print(
            f"    {op} {kind}: n {len(values)}, p50 {pct(values, 50):.1f} ms, "
            f"p99 {pct(values, 99):.1f} ms, max {max(values):.1f} ms"
        )
    print(
        f"  checkin -> both tokens written: p50 {pct(res.checkin_ms, 50):.1f} ms, "
        f"p99 {pct(res.checkin_ms, 99):.1f} ms (n {len(res.checkin_ms)}; no target)"
    )
    for op, samples in res.slowest.items():
        worst = sorted(samples, reverse=True)[:3]
        print(f"  slowest {op}: " + "; ".join(f"{ms:.0f} ms ({where})" for ms, where in worst))
    for op, whys in res.failed.items():
        if whys:
            print(f"  {op}: {len(whys)} without a sample: {'; '.join(whys[:8])}")
    if res.early:
        print(f"  WRONG: cleared before valid_until: {'; '.join(res.early)}")
    print("\nduring the timed phases:")
    for u in res.usage:
        print("  " + u.line())
    print(f"  load average at the end: {os.getloadavg()[0]:.2f}")
    if "signatures" in phases:
        signature_cost(access)
        print("\nsignature checks, per command (this process, best of three):")
        for name, us in access.signatures.items():
            print(f"  {name:<28}{us:8.1f} µs")
    if gone:
        print(f"  WARNING: exited during the run: {gone}")


def main() -> None:
    """Parse arguments, run, print figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--phases", default=",".join(PHASES), help="comma-separated: " + ", ".join(PHASES)
    )
    p.add_argument("--stays", type=int, default=100, help="checkouts, and as many expiries")
    p.add_argument("--seconds", type=float, default=40.0, help="window the stays start over")
    p.add_argument("--warmup", type=float, default=6.0, help="seconds after gateway.started")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    asyncio.run(authz_main(args))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
