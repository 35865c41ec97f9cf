"""Soak: the whole gateway on the bench floor for hours at ten times a hotel's rate.

    .venv/bin/python bench/soak.py [--duration 2h] [--rate 10] [--flap-every 5m]
        [--kill-every 20m] [--report-every 10m] [--warmup 5m] [--keep-days 0.02] [--seed 1]

floorgated runs as its own process on config/floors/bench.toml (60 rooms, four RS-485
lines, Modbus TCP, a call panel), floorsim serves the floor, Mosquitto (persistence on)
is the hotel broker, and a ``floorgate_central`` consumer (persistent session, gaps
filled by replay) is the central system. The load, ``--rate`` times a hotel's (per room
and hour at rate 1: a stay begun and one ended a day, a call a day, a key presented
twice an hour, the door opened and closed once an hour): check-ins and checkouts
(signed commands), calls acknowledged by command and resolved by staff presence at the
room, keys, doors, and device faults (a device silent or corrupting for a minute).
Every ``--flap-every`` the broker goes down for a few seconds, alternately stopped
(persistence saved) and killed (what it queued since its last save is lost: the
consumer's replay must fill it); every ``--kill-every`` the daemon is killed (SIGKILL)
and restarted.

Every ``--report-every`` and at the end it prints the accounting: events received, lost
(seqs the consumer never got: not replayed, or reported lost by the gateway), out of
order, alarms missed (a press with no ``alarm.raised`` within 120 s), the daemon's RSS
and its slope after warm-up (per daemon life, pooled: a restart resets RSS), the outbox
drained after each flap, the SQLite file's size against the retention settings. The last
line, ``SOAK RESULT {json}``, is for tests/test_soak.py. A text sparkline of RSS; a PNG
too if matplotlib is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tomli_w

import floorgate_central as fc
from floorsim.control import call, default_socket, socket_is_live
from gateway.config.floor import FloorConfig
from gateway.config.load import load_floor

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.mosquitto and bench.calls
from bench.calls import ProcSample, bench_environment, room_kinds  # noqa: E402
from tests.mosquitto import HOST  # noqa: E402

FLOOR = REPO / "config" / "floors" / "bench.toml"
BIN = Path(sys.executable).parent
ALARM_WAIT_S = 120.0
DRAIN_WAIT_S = 300.0
RSS_EVERY_S = 5.0
TOKEN_BASE = 0x5000_0000_0000_0000
# Per room and hour at rate 1 (a hotel): see the module docstring.
HOTEL_PER_ROOM_HOUR = {"stay": 1 / 24, "call": 1 / 24, "key": 2.0, "door": 1.0}
FAULTS_PER_HOUR = 2.0  # whole floor, at rate 1
SLOPE_TARGET_MB_H = 1.0
SPARK = "▁▂▃▄▅▆▇█"


def duration(text: str) -> float:
    """'2h', '90m', '45s' or seconds -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([hms]?)", text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration like 2h, 90m, 45s")
    return float(m[1]) * {"h": 3600, "m": 60, "s": 1, "": 1}[m[2]]


@dataclass
class Flap:
    """One broker outage and the outbox after it."""

    at_s: float
    how: str  # "stop" (persistence saved) or "kill"
    down_s: float
    depth_max: int = 0
    drain_s: float | None = None  # None: not drained within DRAIN_WAIT_S


@dataclass
class Accounts:
    """What the consumer saw, kept as events arrive."""

    events: int = 0
    last_seq: int = 0
    out_of_order: int = 0
    unexplained: list[tuple[int, int]] = field(default_factory=list)  # gaps not reported
    presses: int = 0
    raised: int = 0
    missed: list[str] = field(default_factory=list)
    acked: int = 0
    ack_refused: int = 0
    resolved: int = 0
    latency_s: list[float] = field(default_factory=list)
    checkins: int = 0
    checkouts: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    faults: int = 0
    kills: int = 0
    flaps: list[Flap] = field(default_factory=list)
    rss: list[tuple[float, int, float]] = field(default_factory=list)  # (t, pid, MB)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (t, cpu s, summed)
    sqlite: list[tuple[float, float]] = field(default_factory=list)  # (t, MB)
    elements: int | None = None  # array elements with a cached value (ever, in the database)


class Soak:
    """Mosquitto, floorsim, floorgated and the consumer; the load and the outages."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.dir = Path(tempfile.mkdtemp(prefix="floorgate-soak-"))
        self.key, self.broker = bench_environment(self.dir)
        self.floor_file = self.dir / "floor.toml"
        data = tomllib.loads(FLOOR.read_text())
        data["mqtt"]["events_keep_days"] = args.keep_days
        self.floor_file.write_text(tomli_w.dumps(data))
        self.config = load_floor(self.floor_file)[0]
        self.db = self.dir / "state" / "floorgate.db"
        self.array_elements = array_elements(self.config)
        self.ctl_path = default_socket(self.config.gateway)
        self.acct = Accounts()
        self.t0 = time.monotonic()
        self.up = asyncio.Event()  # the daemon runs and the consumer saw it start
        self.sim: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.life_start = time.monotonic()
        self.stays: dict[str, str] = {}  # room -> stay id
        self.busy: set[str] = set()  # rooms with a call under way
        self.floor: fc.Floor | None = None
        self._logs: list[Any] = []

    def now(self) -> float:
        """Seconds since the soak began."""
        return time.monotonic() - self.t0

    # -- processes --------------------------------------------------------------------------

    def spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """A child writing to a log file in the run dir (appended across restarts)."""
        log = (self.dir / log_name).open("ab")
        self._logs.append(log)
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def start_daemon(self) -> None:
        """Start floorgated (the consumer waits for its gateway.started)."""
        argv = [sys.executable, "-m", "gateway.daemon", "--config", str(self.floor_file)]
        self.daemon = self.spawn(argv, "floorgated.log")
        self.life_start = time.monotonic()

    async def start(self) -> fc.Central:
        """Broker, floorsim, the consumer, then the daemon."""
        await asyncio.to_thread(self.broker.start)
        self.sim = self.spawn(
            [str(BIN / "floorsim"), "--config", str(self.floor_file), "--log-level", "warning"],
            "floorsim.log",
        )
        deadline = time.monotonic() + 30
        while not socket_is_live(self.ctl_path):
            if self.sim.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("soak: floorsim did not start")
            await asyncio.sleep(0.1)
        gaps = fc.GapFilling(grace_s=1.0, hold_s=120.0, wait_s=15.0, rounds=5)
        central = fc.Central(
            HOST, self.broker.port, client_id="soak-central", roots=[self.config.mqtt.root],
            keys={self.config.gateway.id: self.key}, reconnect_max_s=1.0, gaps=gaps,
        )  # fmt: skip
        central.start()
        await central.wait_connected(timeout_s=30)
        self.start_daemon()
        self.floor = await central.floor(self.config.gateway.id, timeout_s=60)
        return central

    def stop_all(self) -> None:
        """Stop what this soak started, by PID."""
        for proc in (self.daemon, self.sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.broker.stop()
        for log in self._logs:
            log.close()

    # -- the consumer's accounting -------------------------------------------------------------

    async def consume(self, floor: fc.Floor) -> None:
        """Follow every event: order, gaps, the daemon's starts."""
        a = self.acct
        with floor.events(past=True) as stream:
            async for event in stream:
                a.events += 1
                if event.type == "gateway.started":
                    self.up.set()
                if a.last_seq and event.seq <= a.last_seq:
                    a.out_of_order += 1
                    continue
                expected = a.last_seq + 1
                if a.last_seq and event.seq > expected:
                    gap = event.gap
                    if gap is None or gap.first > expected or gap.last < event.seq - 1:
                        a.unexplained.append((expected, event.seq - 1))
                a.last_seq = event.seq

    def lost_seqs(self) -> int:
        """Seqs the consumer will not get: reported lost, given up on, or unexplained."""
        assert self.floor is not None
        ranges = [*self.floor.lost, *self.floor.missing]
        return sum(len(r) for r in ranges) + sum(b - a + 1 for a, b in self.acct.unexplained)

    # -- load ----------------------------------------------------------------------------------

    async def ctl(self, cmd: str, args: dict[str, Any]) -> Any:
        """floorsim's control socket."""
        return await call(self.ctl_path, cmd, args)

    async def command(self, type_: str, body: dict[str, Any]) -> fc.Reply | None:
        """A signed command through the consumer; None if it got no reply."""
        assert self.floor is not None
        try:
            reply = await self.floor.send(type_, body, timeout_s=10, attempts=6)
        except fc.CommandTimeout:
            self.acct.refused["timeout"] = self.acct.refused.get("timeout", 0) + 1
            return None
        if not reply.ok:
            key = f"{type_}:{reply.code}"
            self.acct.refused[key] = self.acct.refused.get(key, 0) + 1
        return reply

    async def stay(self, room: str) -> None:
        """Check the room in, or its guest out."""
        now = datetime.now(UTC)
        if room in self.stays:
            reply = await self.command("checkout", {"room": room, "stay_id": self.stays[room]})
            if reply is not None and reply.ok:
                self.acct.checkouts += 1
                del self.stays[room]
            return
        stay_id = f"S-{secrets.token_hex(4)}"
        body = {
            "room": room, "stay_id": stay_id, "tokens": [f"{TOKEN_BASE + int(room):016x}"],
            "valid_from": fc.format_ts(now - timedelta(minutes=1)),
            "valid_until": fc.format_ts(now + timedelta(days=2)),
        }  # fmt: skip
        reply = await self.command("checkin", body)
        if reply is not None and reply.ok:
            self.acct.checkins += 1
            self.stays[room] = stay_id

    async def call_cycle(self, room: str) -> None:
        """Press, await alarm.raised, acknowledge by command, resolve by staff presence."""
        assert self.floor is not None
        a = self.acct
        self.busy.add(room)
        try:
            after = self.floor.last_seq or 0
            pressed = time.monotonic()
            await self.ctl("press", {"room": room, "point": "bath", "ms": 100})
            a.presses += 1
            try:
                raised = await self.floor.wait_event(
                    lambda e: e.seq > after and e.type == "alarm.raised" and e.room == room
                    and e.data.get("kind") == "call",
                    timeout_s=ALARM_WAIT_S,
                )  # fmt: skip
            except TimeoutError:
                a.missed.append(f"{room}@{self.now():.0f}s")
                return
            a.raised += 1
            a.latency_s.append(time.monotonic() - pressed)
            alarm_id = raised.data["alarm_id"]
            reply = await self.command("ack_alarm", {"alarm_id": alarm_id, "by": "soak-desk"})
            if reply is not None and reply.ok:
                a.acked += 1
            else:
                a.ack_refused += 1
            await self.ctl("staff", {"room": room, "ms": 100})
            with contextlib.suppress(TimeoutError):
                await self.floor.wait_event(
                    lambda e: e.type == "alarm.resolved" and e.data.get("alarm_id") == alarm_id,
                    timeout_s=ALARM_WAIT_S,
                )
                a.resolved += 1
        finally:
            self.busy.discard(room)

    async def physical(self, kind: str, room: str) -> None:
        """A key presented at the lock, or the door opened and closed."""
        if kind == "key":
            await self.ctl("present_token", {"room": room, "token": TOKEN_BASE + int(room)})
        else:
            await self.ctl("door", {"room": room, "is_open": True})
            await asyncio.sleep(self.rng.uniform(1, 5))
            await self.ctl("door", {"room": room, "is_open": False})

    async def fault(self) -> None:
        """A device silent or corrupting its answers for a minute."""
        room = self.rng.choice(self.config.rooms)
        device = self.rng.choice(room.devices)
        target = f"{room.id}/{device.role}"
        kind, value = self.rng.choice([("silent", None), ("corrupt", 1)])
        await self.ctl("set_fault", {"target": target, "kind": kind, "value": value})
        self.acct.faults += 1
        await asyncio.sleep(60)
        await self.ctl("clear_fault", {"target": target})

    async def load(self, tasks: set[asyncio.Task[Any]]) -> None:
        """Poisson arrivals of every kind of activity at ``--rate`` times a hotel's."""
        rooms = [r.id for r in self.config.rooms]
        calls = [r for rs in room_kinds(self.config).values() for r in rs]
        rates = {k: v * len(rooms) * self.args.rate / 3600 for k, v in HOTEL_PER_ROOM_HOUR.items()}
        rates["fault"] = FAULTS_PER_HOUR * self.args.rate / 3600
        total = sum(rates.values())
        kinds, weights = list(rates), list(rates.values())
        while True:
            await asyncio.sleep(self.rng.expovariate(total))
            await self.up.wait()
            kind = self.rng.choices(kinds, weights)[0]
            if kind == "stay":
                job: Any = self.stay(self.rng.choice(rooms))
            elif kind == "call":
                free = [r for r in calls if r not in self.busy]
                if not free:
                    continue
                job = self.call_cycle(self.rng.choice(free))
            elif kind == "fault":
                job = self.fault()
            else:
                job = self.physical(kind, self.rng.choice(rooms))
            task = asyncio.create_task(_logged(job, kind))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    # -- outages -------------------------------------------------------------------------------

    async def flaps(self) -> None:
        """The broker down a few seconds every --flap-every, stopped and killed in turn."""
        n = 0
        while True:
            await asyncio.sleep(self.args.flap_every)
            how = "stop" if n % 2 == 0 else "kill"
            n += 1
            down = self.rng.uniform(3, 15)
            flap = Flap(self.now(), how, down)
            self.acct.flaps.append(flap)
            await asyncio.to_thread(self.broker.stop if how == "stop" else self.broker.kill)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.broker.start)
            began = time.monotonic()
            while time.monotonic() - began < DRAIN_WAIT_S:
                depth = outbox_depth(self.db)
                flap.depth_max = max(flap.depth_max, depth)
                if depth == 0 and time.monotonic() - began > 1:
                    flap.drain_s = time.monotonic() - began
                    break
                await asyncio.sleep(0.5)

    async def kills(self) -> None:
        """SIGKILL the daemon every --kill-every and start it again."""
        while True:
            await asyncio.sleep(self.args.kill_every)
            assert self.daemon is not None
            self.up.clear()
            os.kill(self.daemon.pid, signal.SIGKILL)
            await asyncio.to_thread(self.daemon.wait)
            self.acct.kills += 1
            self.start_daemon()

    # -- measuring -----------------------------------------------------------------------------

    async def sample(self) -> None:
        """The daemon's RSS and CPU and the SQLite size every few seconds."""
        cpu_before = 0.0  # CPU of the daemons that ended
        last: tuple[int, float] | None = None
        while True:
            daemon = self.daemon
            if daemon is not None and daemon.poll() is None:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    s = ProcSample.of(daemon.pid)
                    if last is not None and last[0] != daemon.pid:
                        cpu_before += last[1]
                    last = (daemon.pid, s.cpu_s)
                    t = self.now()
                    if time.monotonic() - self.life_start >= 5:  # past the interpreter's start
                        self.acct.rss.append((t, daemon.pid, s.rss_mb))
                    self.acct.cpu.append((t, cpu_before + s.cpu_s))
            self.acct.sqlite.append((self.now(), sqlite_mb(self.db)))
            elements = cached_elements(self.db)
            if elements is not None:  # 0 is a count; None: the database was busy just now
                self.acct.elements = elements
            await asyncio.sleep(RSS_EVERY_S)

    def report(self, final: bool = False) -> dict[str, Any]:
        """Print the accounting so far; return its figures."""
        a = self.acct
        assert self.floor is not None
        slope, lives = rss_slope(a.rss, self.args.warmup)
        rss_now = a.rss[-1][2] if a.rss else float("nan")
        cpu = cpu_pct(a.cpu, 600.0)
        lat = sorted(a.latency_s)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        sizes = [mb for _, mb in a.sqlite]
        drained = [f for f in a.flaps if f.drain_s is not None]
        undrained = [f for f in a.flaps if f.drain_s is None and self.now() - f.at_s > 60]
        figures = {
            "elapsed_s": round(self.now()),
            "events": a.events,
            "last_seq": a.last_seq,
            "lost": self.lost_seqs(),
            "lost_ranges": [[r.first, r.last] for r in self.floor.lost],
            "missing": [[r.first, r.last] for r in self.floor.missing],
            "out_of_order": a.out_of_order,
            "replays": self.floor.replays,
            "presses": a.presses,
            "alarms_raised": a.raised,
            "alarms_missed": len(a.missed),
            "acked": a.acked,
            "resolved": a.resolved,
            "kills": a.kills,
            "flaps": len(a.flaps),
            "flaps_undrained": len(undrained),
            "rss_mb": round(rss_now, 1),
            "rss_slope_mb_h": None if slope is None else round(slope, 2),
            "sqlite_mb_max": round(max(sizes, default=0.0), 2),
            "array_elements_read": a.elements,
            "array_elements": self.array_elements,
        }
        print(
            f"\n[{_hms(self.now())}] {'FINAL ' if final else ''}accounting "
            f"(load avg {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, shared)"
        )
        print(
            f"  events {a.events} (last seq {a.last_seq}, {a.events / max(self.now(), 1):.2f}/s); "
            f"lost {figures['lost']} (gateway said gone: {figures['lost_ranges']}, "
            f"never filled: {figures['missing']}, unexplained: {a.unexplained}); "
            f"out of order {a.out_of_order}; replays asked {self.floor.replays}"
        )
        print(
            f"  calls: {a.presses} presses, {a.raised} alarm.raised, missed {len(a.missed)} "
            f"{a.missed[:10]}; acked {a.acked} (refused {a.ack_refused}), resolved {a.resolved}; "
            f"press -> alarm.raised at the consumer p50 "
            f"{_ms(statistics.median(lat) if lat else float('nan'))} p99 {_ms(p99)}"
        )
        print(
            f"  stays: {a.checkins} check-ins, {a.checkouts} checkouts; device faults {a.faults}; "
            f"refused/timed out: {a.refused or 'none'}"
        )
        print(
            f"  daemon: RSS {rss_now:.1f} MB, slope after {self.args.warmup / 60:.0f} min warm-up "
            f"{'n/a' if slope is None else f'{slope:+.2f}'} MB/h over {lives} life(s) "
            f"(target <= {SLOPE_TARGET_MB_H} MB/h); CPU {cpu:.1f} % of one core (last 10 min); "
            f"kills {a.kills}"
        )
        print(f"  RSS {sparkline([mb for _, _, mb in a.rss])}")
        print(
            f"  point cache: {a.elements if a.elements is not None else '?'} of "
            f"{self.array_elements} array elements (lock logs and key slots) read at least once; "
            "the daemon's per-point values grow until each is read (bounded by the floor)"
        )
        flaps = ", ".join(
            f"{f.how}@{_hms(f.at_s)} down {f.down_s:.0f}s depth {f.depth_max} "
            + (f"drained {f.drain_s:.1f}s" if f.drain_s is not None else "NOT drained")
            for f in a.flaps[-6:]
        )
        print(
            f"  broker flaps {len(a.flaps)} ({len(drained)} drained, {len(undrained)} not "
            f"within {DRAIN_WAIT_S:.0f}s); last: {flaps or 'none'}"
        )
        keep_h = self.args.keep_days * 24
        print(
            f"  SQLite (db + WAL) now {sizes[-1] if sizes else 0:.2f} MB, max "
            f"{figures['sqlite_mb_max']:.2f} MB; retention {keep_h:.2f} h of delivered events "
            f"(purged every 10 min), cap {self.config.mqtt.outbox_max_mib} MiB"
        )
        sys.stdout.flush()
        return figures

    async def reports(self) -> None:
        """The accounting every --report-every."""
        while True:
            await asyncio.sleep(self.args.report_every)
            self.report()

    async def settle(self) -> None:
        """At the end: the daemon up, the outbox drained, the consumer caught up."""
        assert self.floor is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(120):
                await self.up.wait()
                # Another process's database and the consumer's filling: polled, bounded.
                while not self.settled():  # noqa: ASYNC110
                    await asyncio.sleep(0.5)

    def settled(self) -> bool:
        """The outbox empty, the consumer at the stored last seq, no gap being filled."""
        assert self.floor is not None
        return (
            outbox_depth(self.db) == 0
            and self.floor.last_seq == stored_last_seq(self.db)
            and not self.floor.missing
        )


async def _logged(job: Any, kind: str) -> None:
    try:
        await job
    except Exception as exc:  # a bench: note it and go on
        print(f"  ! {kind}: {type(exc).__name__}: {exc}", flush=True)


def outbox_depth(db: Path) -> int:
    """Undelivered events in the daemon's database (0 if it cannot be read now)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as c:
            return int(
                c.execute("SELECT count(*) FROM events WHERE delivered_at IS NULL").fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def stored_last_seq(db: Path) -> int | None:
    """The highest event seq the daemon has stored."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as c:
            row = c.execute("SELECT max(seq) FROM events").fetchone()
            return None if row[0] is None else int(row[0])
    except sqlite3.Error:
        return None


def array_elements(config: FloorConfig) -> int:
    """Elements of the floor's array points (a lock's log ring and key slots): the values
    filled one by one, as events touch them, rather than by the first poll."""
    return sum(
        p.count
        for bus in config.buses
        for device in config.devices(bus.name)
        for p in device.profile.point
        if p.count > 1
    )


def cached_elements(db: Path) -> int | None:
    """Array elements with a value in the daemon's point cache (None if unreadable now)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as c:
            sql = "SELECT count(*) FROM point_values WHERE instr(point, '[') > 0"
            return int(c.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return None


def sqlite_mb(db: Path) -> float:
    """The database with its WAL and shared-memory files, in MB."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += (db.parent / (db.name + suffix)).stat().st_size
    return total / 1e6


def rss_slope(samples: list[tuple[float, int, float]], warmup_s: float) -> tuple[float | None, int]:
    """MB/hour: one slope fitted to every daemon life's samples after its warm-up (pooled
    within lives, since a restart resets RSS); and how many lives contributed."""
    lives: dict[int, list[tuple[float, float]]] = {}
    for t, pid, mb in samples:
        lives.setdefault(pid, []).append((t, mb))
    sxy = sxx = 0.0
    used = 0
    for points in lives.values():
        start = points[0][0]
        kept = [(t, mb) for t, mb in points if t - start >= warmup_s]
        if len(kept) < 3:
            continue
        used += 1
        mt = statistics.fmean(t for t, _ in kept)
        mm = statistics.fmean(mb for _, mb in kept)
        sxy += sum((t - mt) * (mb - mm) for t, mb in kept)
        sxx += sum((t - mt) ** 2 for t, _ in kept)
    return (None, 0) if sxx == 0 else (3600 * sxy / sxx, used)


def cpu_pct(cpu: list[tuple[float, float]], window_s: float) -> float:
    """CPU % of one core over the last ``window_s`` of samples."""
    if len(cpu) < 2:
        return float("nan")
    end = cpu[-1]
    start = next((c for c in cpu if c[0] >= end[0] - window_s), cpu[0])
    return 100 * (end[1] - start[1]) / max(end[0] - start[0], 1e-9)


def sparkline(values: list[float], width: int = 72) -> str:
    """The values as one line of block characters (min..max), ``width`` buckets."""
    if not values:
        return "(no samples)"
    step = max(1, len(values) // width)
    buckets = [statistics.fmean(values[i : i + step]) for i in range(0, len(values), step)]
    lo, hi = min(buckets), max(buckets)
    span = (hi - lo) or 1.0
    line = "".join(SPARK[min(7, int((v - lo) / span * 8))] for v in buckets)
    return f"{line}  ({lo:.1f}..{hi:.1f} MB)"


def png(samples: list[tuple[float, int, float]], path: Path) -> bool:
    """The RSS curve as a small PNG, if matplotlib is installed."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 2.5), dpi=100)
    ax.plot([t / 3600 for t, _, _ in samples], [mb for _, _, mb in samples], lw=0.8)
    ax.set_xlabel("hours")
    ax.set_ylabel("floorgated RSS (MB)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _hms(s: float) -> str:
    return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{int(s % 60):02d}"


def _ms(s: float) -> str:
    return f"{1000 * s:.0f} ms"


async def soak_main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; the final figures."""
    soak = Soak(args)
    print(
        f"soak: bench floor ({len(soak.config.rooms)} rooms) at {args.rate:g}x a hotel's rate "
        f"for {_hms(args.duration)}; broker flap every {args.flap_every:.0f}s, daemon "
        f"SIGKILL every {args.kill_every:.0f}s, report every {args.report_every:.0f}s; "
        f"run dir {soak.dir}",
        flush=True,
    )
    tasks: set[asyncio.Task[Any]] = set()
    central: fc.Central | None = None
    # SIGTERM, or SIGINT (which a shell leaves ignored for a job in the background): end
    # early, with the accounting so far, and stop what this soak started.
    me = asyncio.current_task()
    assert me is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, me.cancel)
    try:
        central = await soak.start()
        assert soak.floor is not None
        loops = [
            soak.consume(soak.floor), soak.load(tasks), soak.sample(), soak.reports(),
            *([soak.flaps()] if args.flap_every > 0 else []),
            *([soak.kills()] if args.kill_every > 0 else []),
        ]  # fmt: skip
        running = [asyncio.create_task(c) for c in loops]
        await asyncio.sleep(args.duration)
        for t in running[1:]:  # the consumer goes on until the end
            t.cancel()
        await asyncio.gather(*running[1:], return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ALARM_WAIT_S + 30):
                await asyncio.gather(*tasks, return_exceptions=True)
        await soak.settle()
        await asyncio.sleep(1)
        figures = soak.report(final=True)
        running[0].cancel()
        if args.png and png(soak.acct.rss, Path(args.png)):
            print(f"  RSS curve: {args.png}")
    except asyncio.CancelledError:
        if soak.floor is not None:
            soak.report()
        print("soak: stopped by a signal before its end", flush=True)
        raise
    else:
        print("SOAK RESULT " + json.dumps(figures), flush=True)
        return figures
    finally:
        for t in tasks:
            t.cancel()
        if central is not None:
            await central.close()
        soak.stop_all()
        if os.environ.get("FLOORGATE_SOAK_KEEP"):
            print(f"run dir kept: {soak.dir}")
        else:
            shutil.rmtree(soak.dir, ignore_errors=True)


def main() -> None:
    """Parse arguments, soak, print."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=duration, default=duration("2h"))
    p.add_argument("--rate", type=float, default=10.0, help="times a hotel's rate")
    p.add_argument("--flap-every", type=duration, default=duration("5m"), help="0: none")
    p.add_argument("--kill-every", type=duration, default=duration("20m"), help="0: none")
    p.add_argument("--report-every", type=duration, default=duration("10m"))
    p.add_argument("--warmup", type=duration, default=duration("5m"), help="per daemon life")
    p.add_argument("--keep-days", type=float, default=0.02, help="[mqtt] events_keep_days")
    p.add_argument("--png", default="soak-rss.png", help="the RSS curve (with matplotlib)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    try:
        figures = asyncio.run(soak_main(args))
    except asyncio.CancelledError:
        sys.exit(2)
    ok = (
        figures["lost"] == 0 and figures["out_of_order"] == 0 and figures["alarms_missed"] == 0
        and figures["flaps_undrained"] == 0
    )  # fmt: skip
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
