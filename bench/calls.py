"""Emergency-call benchmark (issue 7): a press in floorsim to ``alarm.raised`` at a subscriber.

    .venv/bin/python bench/calls.py [--presses 150] [--seconds 60] [--warmup 6] [--seed 1]
    .venv/bin/python bench/calls.py --disk-full [--presses 60]   (bench/diskfull.py)
    .venv/bin/python bench/calls.py --idle 120                (the floor at rest: CPU, RSS)

The whole gateway, as deployed: floorgated runs as its own process on
config/floors/bench.toml (4 RS-485 lines x 12 rooms at 19200 8N1, paced on the wire; 12
rooms on Modbus TCP, 6 of them with their call points on the serial call panel; a floor
panel), with every bus polled at its default intervals. floorsim serves the floor in
another process, Mosquitto runs on a free loopback port, and this process plays the
central system: one MQTT client subscribed to the events and replies, and floorsim's
control socket for the physical world.

Presses (100 ms, shorter than any poll interval) go round the three kinds of room (RTU
rio, TCP rio, call panel), a random free room of the kind at random times over the
window; one press per room at a time. Each press waits for its ``alarm.raised`` and
then resolves the alarm with staff presence at the room (rio staff key / panel CANCEL),
so the room can call again. Latency = arrival of ``alarm.raised`` at the subscriber
(stamped on receipt) minus floorsim's press stamp, both CLOCK_MONOTONIC of this machine
(floorsim's ``mono_ns``; its wall ``ts`` is the same instant). It includes the gateway's
sampling wait, the core, the SQLite outbox and the broker.

``GatewayRun`` (the setup) is shared with bench/authz.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt

from drivers.lines import TcpBus
from floorsim.control import call, default_socket, socket_is_live
from gateway.config.floor import FloorConfig
from gateway.config.load import load_floor
from gateway.core.commands import sign

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.mosquitto
from tests.mosquitto import HOST, Mosquitto, free_port, make_certs  # noqa: E402

FLOOR = REPO / "config" / "floors" / "bench.toml"
BIN = Path(sys.executable).parent
PRESS_MS = 100
WAIT_S = 15.0
# Issue 7: p99 targets per kind of room.
TARGETS_MS = {"RTU": 600.0, "TCP": 150.0, "call panel": 100.0}

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message as the subscriber received it."""

    mono_ns: int
    wall: float
    doc: Doc


@dataclass
class ProcSample:
    """CPU time and memory of a process from /proc, at one instant."""

    mono: float
    cpu_s: float
    rss_mb: float
    hwm_mb: float

    @classmethod
    def of(cls, pid: int) -> ProcSample:
        """Read /proc/PID/stat (utime + stime) and /proc/PID/status (VmRSS, VmHWM)."""
        stat = Path(f"/proc/{pid}/stat").read_text()
        rest = stat.rpartition(")")[2].split()  # rest[0] is field 3 (state)
        ticks = int(rest[11]) + int(rest[12])  # fields 14 utime, 15 stime
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()

        def mb(key: str) -> float:
            return int(fields.get(key, "0 kB").split()[0]) / 1024

        return cls(time.monotonic(), ticks / os.sysconf("SC_CLK_TCK"), mb("VmRSS"), mb("VmHWM"))


@dataclass
class Usage:
    """A process's CPU % and memory over a window (RSS sampled every second)."""

    name: str
    pid: int
    start: ProcSample | None = None
    end: ProcSample | None = None
    rss: list[float] = field(default_factory=list)

    def line(self) -> str:
        """One printable line: CPU % of one core and RSS."""
        assert self.start is not None
        assert self.end is not None
        cpu = self.end.cpu_s - self.start.cpu_s
        secs = self.end.mono - self.start.mono
        return (
            f"{self.name} (pid {self.pid}): CPU {100 * cpu / secs:.1f} % of one core "
            f"({cpu:.2f} s in {secs:.1f} s); RSS mean {sum(self.rss) / len(self.rss):.1f} MB, "
            f"max {max(self.rss):.1f} MB (VmHWM {self.end.hwm_mb:.1f} MB)"
        )


def bench_environment(run_dir: Path) -> tuple[bytes, Mosquitto]:
    """Point the bench floor file's variables at ``run_dir`` (its run directory, a free
    Modbus port, a broker of its own, not started yet) and write a fresh command key;
    return the key and the broker."""
    os.environ["FLOORGATE_RUN_DIR"] = str(run_dir)
    os.environ["FLOORGATE_MODBUS_PORT"] = str(free_port())
    (run_dir / "command.key").write_text(secrets.token_hex(32) + "\n")
    key = bytes.fromhex((run_dir / "command.key").read_text().strip())
    broker = Mosquitto(run_dir / "mosquitto", make_certs(run_dir / "certs"))
    os.environ["FLOORGATE_MQTT_PORT"] = str(broker.port)
    return key, broker


class GatewayRun:
    """Mosquitto, floorsim and floorgated on the bench floor, and a central's MQTT client.

    Everything is started in a fresh temp dir and stopped (by PID) and removed on exit.
    """

    def __init__(
        self,
        warmup_s: float,
        tag: str,
        *,
        extra_toml: str = "",
        quiet_daemon: bool = False,
        daemon_prefix: Callable[[Path], list[str]] | None = None,
    ) -> None:
        """``extra_toml``: tables appended to the daemon's copy of the bench floor file
        (floorsim serves the floor file itself); ``daemon_prefix(run_dir)``: a command
        that execs the daemon (a mount namespace with a small state filesystem)."""
        self.daemon_prefix = daemon_prefix
        self.warmup_s = warmup_s
        self.tag = tag
        self.extra_toml = extra_toml
        self.quiet_daemon = quiet_daemon
        self.dir = Path(tempfile.mkdtemp(prefix=f"floorgate-bench-{tag}-"))
        try:
            self.key, self.broker = bench_environment(self.dir)
            self.config: FloorConfig = load_floor(FLOOR)[0]
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.root = self.config.mqtt.root
        self.ctl_path = default_socket(self.config.gateway)
        self.arrivals: list[Arrival] = []
        self.sim: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self._client: aiomqtt.Client | None = None
        self._waiters: list[tuple[Callable[[Doc], bool], asyncio.Future[Arrival]]] = []
        self._stack = contextlib.AsyncExitStack()
        self.started_wall = math.nan  # when gateway.started arrived (wall clock)

    async def __aenter__(self) -> GatewayRun:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        self._stack.callback(shutil.rmtree, self.dir, True)
        keep = os.environ.get("FLOORGATE_BENCH_KEEP_LOGS")
        if keep:  # copied before the run dir goes (callbacks run last-in first-out)
            self._stack.callback(_keep_logs, self.dir, Path(keep))
        self.broker.start()
        self._stack.callback(self.broker.kill)
        self.sim = self._spawn(
            [str(BIN / "floorsim"), "--config", str(FLOOR), "--log-level", "warning"],
            "floorsim.log",
        )
        deadline = time.monotonic() + 30
        while not socket_is_live(self.ctl_path):
            if self.sim.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: floorsim did not start: {self._tail('floorsim.log')}")
            await asyncio.sleep(0.05)
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        quiet = logging.getLogger("bench.mqtt")
        quiet.setLevel(logging.ERROR)  # not "There are N pending publish calls" in a burst
        client = aiomqtt.Client(
            HOST,
            self.broker.port,
            identifier=f"bench-central-{self.tag}",
            socket_options=nodelay,
            logger=quiet,
        )
        self._client = await self._stack.enter_async_context(client)
        await client.subscribe([(f"{self.root}/events", 1), (f"{self.root}/reply", 1)])
        reader = asyncio.create_task(self._read(client), name="bench-subscriber")
        self._stack.push_async_callback(_cancel, reader)
        started = self.expect(lambda d: d.get("type") == "gateway.started")
        self.floor = FLOOR
        if self.extra_toml:
            self.floor = self.dir / "floor.toml"
            self.floor.write_text(FLOOR.read_text() + "\n" + self.extra_toml)
        level = ["--log-level", "warning"] if self.quiet_daemon else []
        prefix = [] if self.daemon_prefix is None else self.daemon_prefix(self.dir)
        self.daemon = self._spawn(
            [*prefix, sys.executable, "-m", "gateway.daemon", "--config", str(self.floor), *level],
            "floorgated.log",
        )
        try:
            arrival = await asyncio.wait_for(started, 30)
        except TimeoutError:
            raise SystemExit(f"bench: no gateway.started: {self._tail('floorgated.log')}") from None
        self.started_wall = arrival.wall
        await asyncio.sleep(self.warmup_s)  # a bench: let the start-up reads and writes settle

    # -- the central's view ----------------------------------------------------------------------

    def expect(self, pred: Callable[[Doc], bool]) -> asyncio.Future[Arrival]:
        """A future for the next message matching ``pred`` (register before causing it)."""
        fut: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        return fut

    async def wait(self, fut: asyncio.Future[Arrival], limit_s: float = WAIT_S) -> Arrival | None:
        """The future's arrival, or None after ``limit_s`` (the waiter is dropped)."""
        try:
            return await asyncio.wait_for(fut, limit_s)
        except TimeoutError:
            self._waiters = [(p, f) for p, f in self._waiters if f is not fut]
            return None

    async def command(self, type_: str, body: Doc) -> tuple[int, Doc]:
        """Sign and publish a command; (monotonic ns just before publishing, its reply)."""
        env: Doc = {
            "schema": 1,
            "id": uuid.uuid4().hex,
            "type": type_,
            "issued_at": wall_ts(datetime.now(UTC)),
            "body": body,
        }
        env["sig"] = sign(env, self.key)
        reply = self.expect(lambda d: d.get("id") == env["id"] and "ok" in d)
        assert self._client is not None
        sent = time.monotonic_ns()
        await self._client.publish(f"{self.root}/cmd", json.dumps(env).encode(), qos=1)
        got = await self.wait(reply)
        if got is None:
            raise RuntimeError(f"no reply to {type_} {body}")
        return sent, got.doc

    async def ctl(self, cmd: str, args: Doc | None = None) -> Any:
        """One request to floorsim's control socket."""
        return await call(self.ctl_path, cmd, args)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            mono, wall = time.monotonic_ns(), time.time()
            doc = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            arrival = Arrival(mono, wall, doc)
            self.arrivals.append(arrival)
            keep = []
            for pred, fut in self._waiters:
                if fut.done():
                    continue
                if pred(doc):
                    fut.set_result(arrival)
                else:
                    keep.append((pred, fut))
            self._waiters = keep

    # -- load ------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def measuring(self) -> Any:
        """Sample the daemon's and floorsim's CPU and RSS over the block."""
        assert self.daemon is not None
        assert self.sim is not None
        usage = [Usage("floorgated", self.daemon.pid), Usage("floorsim", self.sim.pid)]

        async def sample() -> None:
            while True:
                for u in usage:
                    u.rss.append(ProcSample.of(u.pid).rss_mb)
                await asyncio.sleep(1.0)

        for u in usage:
            u.start = ProcSample.of(u.pid)
        task = asyncio.create_task(sample(), name="bench-usage")
        try:
            yield usage
        finally:
            await _cancel(task)
            for u in usage:
                u.end = ProcSample.of(u.pid)
                u.rss.append(u.end.rss_mb)

    def alive(self) -> str:
        """'' while the daemon and floorsim run, else what exited."""
        dead = [
            n for n, p in (("floorgated", self.daemon), ("floorsim", self.sim)) if p and p.poll()
        ]
        return ", ".join(dead)

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """Start a child logging to a file in the run dir; stopped (by PID) on exit."""
        log = (self.dir / log_name).open("wb")
        self._stack.callback(log.close)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self._stack.callback(_stop, proc)
        return proc

    def _tail(self, name: str) -> str:
        try:
            return "\n".join((self.dir / name).read_text().splitlines()[-15:])
        except OSError:
            return ""


def room_kinds(config: FloorConfig) -> dict[str, list[str]]:
    """Rooms by where their call points are: RTU rio, TCP rio or call panel."""
    tcp = {b.name for b in config.buses if isinstance(b, TcpBus)}
    out: dict[str, list[str]] = {"RTU": [], "TCP": [], "call panel": []}
    for room in config.rooms:
        rio = next((d for d in room.devices if d.role == "rio"), None)
        if rio is None:
            out["call panel"].append(room.id)
        else:
            out["TCP" if rio.bus in tcp else "RTU"].append(room.id)
    return out


def lock_kind(config: FloorConfig, room: str) -> str:
    """'TCP' or 'RTU': the bus of a room's lock."""
    tcp = {b.name for b in config.buses if isinstance(b, TcpBus)}
    lock = next(d for d in config.room(room).devices if d.role == "lock")
    return "TCP" if lock.bus in tcp else "RTU"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def wall_ts(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds and Z."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def figures_line(name: str, values: list[float], missed: int, target: float) -> str:
    """One row of the result table: n, missed, p50, p99, max, target, met."""
    p99 = pct(values, 99)
    met = "yes" if values and not missed and p99 <= target else "NO"
    return (
        f"  {name:<12}{len(values):5d}{missed:8d}{pct(values, 50):9.1f}{p99:9.1f}"
        f"{max(values, default=math.nan):9.1f}   <= {target:5.0f}   {met}"
    )


TABLE_HEAD = "  kind            n  missed   p50 ms   p99 ms   max ms   target p99  met"


# -- the calls benchmark -----------------------------------------------------------------------


@dataclass
class CallResults:
    """Latencies (ms) per kind, and presses whose alarm never came."""

    latency: dict[str, list[float]]
    missed: dict[str, list[str]]
    unresolved: list[str] = field(default_factory=list)


async def run_calls(run: GatewayRun, presses: int, seconds: float, seed: int) -> CallResults:
    """Press ``presses`` times over ``seconds``; every alarm resolved by staff presence."""
    kinds = room_kinds(run.config)
    rng = random.Random(seed)
    plan = sorted((rng.uniform(0, seconds), list(kinds)[i % 3]) for i in range(presses))
    busy: set[str] = set()
    freed = asyncio.Event()
    res = CallResults({k: [] for k in kinds}, {k: [] for k in kinds})

    async def one(kind: str, room: str) -> None:
        try:
            raised = run.expect(
                lambda d: (
                    d.get("type") == "alarm.raised"
                    and d.get("room") == room
                    and d["data"].get("kind") == "call"
                )
            )
            pressed = await run.ctl("press", {"room": room, "point": "bath", "ms": PRESS_MS})
            got = await run.wait(raised)
            if got is None:
                res.missed[kind].append(room)
                return
            res.latency[kind].append((got.mono_ns - pressed["mono_ns"]) / 1e6)
            alarm_id = got.doc["data"]["alarm_id"]
            resolved = run.expect(
                lambda d: (
                    d.get("type") == "alarm.resolved" and d["data"].get("alarm_id") == alarm_id
                )
            )
            await run.ctl("staff", {"room": room, "ms": PRESS_MS})
            if await run.wait(resolved) is None:
                res.unresolved.append(room)
                return  # the room stays busy: it would not raise again
            busy.discard(room)
        finally:
            freed.set()

    t0 = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for at, kind in plan:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            while not (free := [r for r in kinds[kind] if r not in busy]):
                freed.clear()
                await freed.wait()
            room = rng.choice(free)
            busy.add(room)
            tg.create_task(one(kind, room), name=f"press[{room}]")
    return res


async def calls_main(args: argparse.Namespace) -> None:
    """Set up, press, print."""
    async with GatewayRun(args.warmup, "calls") as run:
        kinds = room_kinds(run.config)
        print(
            f"bench floor: {len(run.config.rooms)} rooms; call points: "
            + ", ".join(f"{len(v)} {k}" for k, v in kinds.items())
            + f"; floorgated pid {run.daemon.pid if run.daemon else '?'}, "
            f"floorsim pid {run.sim.pid if run.sim else '?'}, mosquitto :{run.broker.port}"
        )
        print(
            f"{args.presses} presses of {PRESS_MS} ms over {args.seconds:.0f} s, kinds in turn, "
            "a random free room each; each resolved by staff presence before its room "
            "calls again"
        )
        async with run.measuring() as usage:
            res = await run_calls(run, args.presses, args.seconds, args.seed)
        gone = run.alive()
    print("\npress (floorsim mono_ns) -> alarm.raised at the MQTT subscriber:")
    print(TABLE_HEAD)
    for kind, target in TARGETS_MS.items():
        print(figures_line(kind, res.latency[kind], len(res.missed[kind]), target))
    missed = [r for rs in res.missed.values() for r in rs]
    if missed:
        print(f"  no alarm.raised within {WAIT_S:.0f} s for presses in rooms {missed}")
    if res.unresolved:
        print(f"  staff presence did not resolve the alarm in rooms {res.unresolved}")
    print(
        "  (p99 is nearest-rank: with n < 100 it is the largest sample or close to it; the "
        "RTU rio's call counters are polled every 300 ms (profile), the TCP ones every "
        "100 ms (the Modbus TCP default), the panel pushes CALL)"
    )
    print("\nduring the presses:")
    print_usage(usage, gone)


async def idle_main(args: argparse.Namespace) -> None:
    """The bench floor at rest: polling, no presses, no commands; CPU and RSS."""
    async with GatewayRun(args.warmup, "idle") as run:
        print(f"bench floor at rest for {args.idle:.0f} s after a {args.warmup:.0f} s warm-up")
        async with run.measuring() as usage:
            await asyncio.sleep(args.idle)
        gone = run.alive()
    print_usage(usage, gone)


# -- helpers -------------------------------------------------------------------------------------


def print_usage(usage: Sequence[Usage], gone: str) -> None:
    """Each process's CPU and RSS over the run, the load, and who exited during it."""
    for u in usage:
        print("  " + u.line())
    print(f"  machine load average (1 min) at the end: {os.getloadavg()[0]:.2f} (2 cores, shared)")
    if gone:
        print(f"  WARNING: exited during the run: {gone}")


def _keep_logs(run_dir: Path, to: Path) -> None:
    """Copy the run's process logs (FLOORGATE_BENCH_KEEP_LOGS=DIR), for a closer look."""
    to.mkdir(parents=True, exist_ok=True)
    for log in run_dir.glob("*.log"):
        shutil.copy(log, to / log.name)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a bounded wait, then SIGKILL — this process's own child, by PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main() -> None:
    """Parse arguments, run, print figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presses", type=int, default=150, help="presses in all (>= 100)")
    p.add_argument("--seconds", type=float, default=60.0, help="window the presses spread over")
    p.add_argument("--warmup", type=float, default=6.0, help="seconds after gateway.started")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--disk-full",
        action="store_true",
        help="instead: press -> lamps with the state disk healthy, then full (bench/diskfull.py)",
    )
    p.add_argument(
        "--idle",
        type=float,
        metavar="SECONDS",
        help="instead: the daemon's CPU and RSS on the bench floor at rest (no presses)",
    )
    args = p.parse_args()
    if args.idle is not None:
        asyncio.run(idle_main(args))
        return
    if args.disk_full:
        from diskfull import disk_full_main  # noqa: PLC0415 (bench/ is the script's path)

        asyncio.run(disk_full_main(args))
        return
    asyncio.run(calls_main(args))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
