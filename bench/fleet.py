"""Fleet bench: many floors on one Mosquitto, two floorgate_central consumers partitioning them.

    .venv/bin/python bench/fleet.py [--floors 1000] [--workers 4] [--seconds 60]
        [--daemons 3] [--ladder 200,400,700,1000] [--no-restarts] [--seed 1]

Each simulated floor runs the project's real uplink (``gateway.adapters.mqtt.Uplink``,
built as gateway/app.py builds it, its replay served by the real ``CommandProcessor``)
and outbox (its own SQLite file through ``gateway.adapters.store``, events appended by
``gateway.adapters.journal``), fed by a synthetic floor: the 60 rooms of the bench floor,
a seeded mix of events at a hotel's rate (``--events-per-room-hour``), calls included,
room states republished as they change. ``--workers`` processes share the floors.
Besides them, ``--daemons`` complete gateways (floorgated on floorsim, the demo floor)
run in the same fleet. Two consumer processes (``floorgate_central``, ``partition=(i, 2)``)
follow every floor, fill gaps by replay and count.

Printed: events/s end to end; every event received once or more, in per-floor order, 0
lost (per floor: the consumer's seqs against what the floor stored); call event ->
consumer p50/p99 under that load; a broker restart with and without persistence: the
time until every floor is reconnected with its current state republished (the slowest
floor named) and the publishes the broker received meanwhile; RSS and CPU per simulated
floor; the limits (file descriptors, Mosquitto's). ``--ladder`` runs several fleet sizes
and prints the largest that fits (0 lost, call p99 <= 1 s, consumers keeping up, every
floor back within 60 s) and what bounds the next.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import random
import resource
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import tomli_w

import floorgate_central as fc
from floorsim.control import socket_is_live
from gateway.adapters.journal import append_event
from gateway.adapters.mqtt import Uplink
from gateway.adapters.mqtt_client import Connection
from gateway.adapters.signals import Broadcast, ReplayRequests, RetainedChanges
from gateway.adapters.store import Store
from gateway.config.inventory import inventory
from gateway.config.load import load_floor
from gateway.core.inputs import RunCommand
from gateway.engine.commands import CommandProcessor
from gateway.model.messages import ReplayBody
from gateway.model.time import format_ts

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.mosquitto and bench.calls
from bench.calls import ProcSample  # noqa: E402
from tests.mosquitto import Mosquitto, free_port, make_certs  # noqa: E402

FLOOR = REPO / "config" / "floors" / "bench.toml"
DEMO = REPO / "config" / "floors" / "demo.toml"
BIN = Path(sys.executable).parent
FLEET_ROOT = "hotel/fleet"
RECONNECT_TARGET_S = 60.0
CALL_P99_LIMIT_S = 1.0
RECONNECT_WAIT_S = 240.0
DEMO_RUN_DIR = "${FLOORGATE_RUN_DIR:-/tmp/floorgate-demo}"
# A hotel floor's events per room and hour by type (seeded mix): doors and keys most.
MIX = {
    "door.opened": 1.5, "door.closed": 1.5, "access.granted": 1.0, "room.presence": 1.0,
    "climate.changed": 0.6, "room.dnd": 0.2, "alarm.raised": 1 / 24, "alarm.resolved": 1 / 24,
}  # fmt: skip


def gateway_id(n: int) -> str:
    """The n-th simulated floor's gateway id."""
    return f"fleet-{n:04d}"


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; (soft, hard) now."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def usage() -> dict[str, float]:
    """This process's CPU seconds and RSS (MB)."""
    t = os.times()
    rss = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return {"cpu_s": t.user + t.system, "rss_mb": rss}


async def lines_in() -> asyncio.StreamReader:
    """stdin as an asyncio stream (the parent's commands)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def say(doc: Mapping[str, Any]) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


# -- a worker: simulated floors ------------------------------------------------------------------


class SimFloor:
    """A synthetic floor behind the real uplink and outbox."""

    def __init__(self, n: int, config: Any, store: Any, rng: random.Random, rate: float) -> None:

        self.config = config
        self.store = store
        self.rng = rng
        self.rate = rate  # events per second
        self.rooms = [r.id for r in config.rooms]
        self.retained = RetainedChanges()
        self.committed = Broadcast()
        self.state: dict[str, dict[str, object]] = {r: room_state(r, "vacant") for r in self.rooms}
        self.produced = 0
        self.last_seq = 0
        replays = ReplayRequests()
        processor = CommandProcessor(
            store,
            config.credentials(FLEET_KEY),
            _record,
            bodies={"replay": ReplayBody},
            replays=replays,
        )
        self.uplink = Uplink(
            config,
            store,
            version="bench",
            started_at=datetime.now(UTC),
            current_state=self.current_state,
            on_command=processor.handle,
            retained=self.retained,
            outbox=self.committed,
            replays=replays,
            inventory=inventory(config, "bench"),
        )

    def current_state(self) -> list[tuple[str, dict[str, object] | None]]:
        """No open alarm kept retained here; every room's state."""
        return [(f"rooms/{r}/state", s) for r, s in self.state.items()]

    async def produce(self, running: asyncio.Event) -> None:
        """Poisson events of the mix; a room's state republished when it changes."""

        kinds, weights = list(MIX), list(MIX.values())
        while True:
            await asyncio.sleep(self.rng.expovariate(self.rate))
            await running.wait()
            kind = self.rng.choices(kinds, weights)[0]
            room = self.rng.choice(self.rooms)
            data: dict[str, object] = {"bench_ts": time.time()}
            if kind.startswith("alarm."):
                data.update(alarm_id=secrets.token_hex(8), kind="call", point="bath")
            write = functools.partial(
                _append, type_=kind, room=room, data=data, ts=datetime.now(UTC)
            )
            self.last_seq = await self.store.write(write)
            self.produced += 1
            self.committed.notify()
            if kind in ("door.opened", "room.presence", "alarm.raised"):
                occupancy = self.rng.choice(["vacant", "occupied"])
                self.state[room] = room_state(room, occupancy)
                self.retained.set(f"rooms/{room}/state", self.state[room])


def _append(
    conn: sqlite3.Connection, type_: str, room: str, data: dict[str, object], ts: datetime
) -> int:
    return append_event(conn, type_, room=room, data=data, ts=ts).seq


async def _record(item: Any) -> bytes:
    """What the engine would record and reply: a replay's result, or the refusal."""

    if isinstance(item, RunCommand):
        result = item.body.model_dump(mode="json")
        return json.dumps({"schema": 1, "id": item.id, "ok": True, "result": result}).encode()
    error = {"code": item.code, "message": item.message}
    return json.dumps({"schema": 1, "id": item.id, "ok": False, "error": error}).encode()


FLEET_KEY = bytes.fromhex(os.environ.get("FLEET_KEY", "00" * 32))


def room_state(room: str, occupancy: str) -> dict[str, object]:
    """A room snapshot as the contract's example, for ``room``."""
    return {
        "room": room, "ts": format_ts(datetime.now(UTC)),
        "occupancy": occupancy, "stay_id": None, "door": "closed", "call": "idle",
        "climate": {"temp_c": 23.4, "setpoint_c": 22.5}, "devices": {"tstat": "online"},
    }  # fmt: skip


PUBLISHES = [0]  # every publish the worker's uplinks made (counted by the wrapper below)


def count_publishes() -> None:
    """Count the uplinks' publishes (bench instrumentation of the real client)."""

    real = Connection.publish

    async def publish(self: Any, *args: Any, **kwargs: Any) -> Any:
        PUBLISHES[0] += 1
        return await real(self, *args, **kwargs)

    Connection.publish = publish  # type: ignore[method-assign]


async def worker_main(args: argparse.Namespace) -> None:
    """Run floors ``args.first`` .. ``args.first + args.count - 1`` until told to stop."""

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),  # stdout is the parent's
    )
    raise_nofile()
    count_publishes()
    base = load_floor(FLOOR)[0]
    rng = random.Random(args.seed * 1000 + args.first)
    running = asyncio.Event()
    running.set()
    floors: list[SimFloor] = []
    rate = args.events_per_room_hour * len(base.rooms) / 3600
    for n in range(args.first, args.first + args.count):
        gw = gateway_id(n)
        mqtt = base.mqtt.model_copy(
            update={"root": f"{FLEET_ROOT}/{gw}", "reconnect_jitter_s": args.jitter}
        )
        config = dataclasses.replace(
            base, gateway=base.gateway.model_copy(update={"id": gw}), mqtt=mqtt
        )
        store = await Store.open(Path(args.dir) / f"{gw}.db")
        floors.append(SimFloor(n, config, store, random.Random(rng.random()), rate))
    tasks = [asyncio.create_task(f.uplink.run()) for f in floors]
    tasks += [asyncio.create_task(f.produce(running)) for f in floors]
    await until_all(lambda: all(f.uplink.stats().link == "connected" for f in floors), 300)
    say({"ready": len(floors), **usage()})
    reader = await lines_in()
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "stats":
            say(worker_stats(floors))
        elif cmd["cmd"] == "pause":
            running.clear()
            await until_all(lambda: all(f.uplink.stats().outbox_depth == 0 for f in floors), 120)
            say(worker_stats(floors))
        elif cmd["cmd"] == "watch":
            base_reconnects = [f.uplink.stats().reconnects for f in floors]
            published, produced = PUBLISHES[0], sum(f.produced for f in floors)
            say({"watching": True})
            back = await watch_reconnects(floors, base_reconnects)
            say(
                {
                    "reconnected": back,
                    "publishes": PUBLISHES[0] - published,
                    "events": sum(f.produced for f in floors) - produced,
                }
            )
        elif cmd["cmd"] == "stop":
            break
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for f in floors:
        await f.store.close()


def worker_stats(floors: list[SimFloor]) -> dict[str, Any]:
    """What the floors produced and stored, and this process's usage."""
    return {
        "produced": sum(f.produced for f in floors),
        "last_seq": {f.config.mqtt.root: f.last_seq for f in floors},
        "depth": sum(f.uplink.stats().outbox_depth for f in floors),
        "floors": len(floors),
        **usage(),
    }


async def watch_reconnects(floors: list[SimFloor], before: list[int]) -> dict[str, float | None]:
    """Per floor, the wall time its link was back up with the current state out."""
    back: dict[str, float | None] = {f.config.mqtt.root: None for f in floors}
    deadline = time.monotonic() + RECONNECT_WAIT_S
    while time.monotonic() < deadline and any(v is None for v in back.values()):
        for f, b in zip(floors, before, strict=True):
            s = f.uplink.stats()
            root = f.config.mqtt.root
            if back[root] is None and s.reconnects > b and s.link == "connected":
                back[root] = time.time()
        await asyncio.sleep(0.05)
    return back


async def until_all(pred: Any, limit_s: float) -> bool:
    """Poll ``pred`` (another subsystem's state) until true or ``limit_s``."""
    deadline = time.monotonic() + limit_s
    # The uplinks' state, polled, bounded.
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


# -- a consumer: floorgate_central -------------------------------------------------------------


async def consumer_main(args: argparse.Namespace) -> None:
    """One member of two: follow its floors, count, answer the parent's questions."""

    raise_nofile()
    keys: Mapping[str, bytes] = defaultdict(lambda: FLEET_KEY)
    if args.keys:
        given = json.loads(Path(args.keys).read_text())  # noqa: ASYNC240 - at start-up
        keys = defaultdict(lambda: FLEET_KEY, {g: bytes.fromhex(k) for g, k in given.items()})
    counts: dict[str, dict[str, Any]] = {}
    latency: list[tuple[float, float]] = []  # (stamp, seconds late)
    slow: list[list[Any]] = []  # calls late: (stamp, late s, seq, root, open gaps, replays)
    notes: dict[str, int] = {}  # the library's log records by name (gaps, replays, retries)

    class Notes(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes[record.getMessage()] = notes.get(record.getMessage(), 0) + 1

    logging.getLogger("floorgate_central").addHandler(Notes(logging.INFO))
    logging.getLogger("floorgate_central").setLevel(logging.INFO)
    # Every floor starts after the consumers: nothing processed yet, seq 0 (so a floor's
    # first events lost with a broker's session are asked for too).
    roots = [f"{FLEET_ROOT}/{gateway_id(n)}" for n in range(args.count)]
    roots += [f"hotel/fleetd/{g}" for g in keys]
    central = fc.Central(
        "127.0.0.1",
        args.port,
        client_id=f"fleet-central-{args.member}",
        keys=keys,
        roots=["hotel/+/+"],
        partition=(args.member, 2),
        history=50,
        resume=dict.fromkeys(roots, 0),
        reconnect_max_s=2.0,
    )
    followed: set[str] = set()
    tasks: list[asyncio.Task[None]] = []

    async def follow(floor: fc.Floor) -> None:
        c = counts.setdefault(floor.root, {"n": 0, "last": 0, "ooo": 0, "gaps": 0})
        with floor.events(past=True) as stream:
            async for e in stream:
                c["n"] += 1
                c.setdefault("first", e.seq)
                if e.seq <= c["last"]:
                    c["ooo"] += 1
                    continue
                if c["last"] and e.seq != c["last"] + 1:
                    c["gaps"] += e.seq - c["last"] - 1
                c["last"] = e.seq
                if e.type == "alarm.raised" and "bench_ts" in e.data:
                    stamp = float(e.data["bench_ts"])
                    latency.append((stamp, time.time() - stamp))
                    if time.time() - stamp > CALL_P99_LIMIT_S:
                        slow.append([round(stamp, 1), round(time.time() - stamp, 1), e.seq,
                                     floor.root, len(floor.missing), floor.replays])  # fmt: skip

    async def discover() -> None:
        while True:
            for floor in list(central._by_root.values()):
                if floor.root not in followed:
                    followed.add(floor.root)
                    tasks.append(asyncio.create_task(follow(floor)))
            await asyncio.sleep(0.2)

    async with central:
        await central.wait_connected(timeout_s=30)
        tasks.append(asyncio.create_task(discover()))
        say({"ready": True})
        reader = await lines_in()
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "stats":
                floors = central._by_root
                say(
                    {
                        "events": sum(c["n"] for c in counts.values()),
                        "floors": len(counts),
                        "counts": counts,
                        "missing": {
                            r: [[g.first, g.last] for g in f.missing]
                            for r, f in floors.items()
                            if f.missing
                        },
                        "lost": {
                            r: [[g.first, g.last] for g in f.lost]
                            for r, f in floors.items()
                            if f.lost
                        },
                        "replays": sum(f.replays for f in floors.values()),
                        "notes": notes,
                        "slow": slow[-20:],
                        "latency": latency[-20000:] if cmd.get("latency") else [],
                        **usage(),
                    }
                )
                if cmd.get("latency"):
                    latency.clear()
            elif cmd["cmd"] == "stop":
                break
    for t in tasks:
        t.cancel()


# -- the parent: broker, daemons, workers, consumers, measurements ---------------------------------


class Child:
    """A child process speaking JSON lines on stdin/stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc

    async def ask(self, doc: Mapping[str, Any], timeout_s: float = 120) -> dict[str, Any]:
        """Send a command, return the next line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(doc) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read(timeout_s)

    async def read(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line (TimeoutError, or RuntimeError if the child ended)."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"{self.name} ended (see its log)")
        return dict(json.loads(line))

    async def stop(self) -> None:
        """Ask it to stop; SIGKILL (by PID) if it does not within 20 s."""
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"cmd": "stop"}\n')
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def spawn(name: str, argv: list[str], log: Path) -> Child:
    """This script in another role."""
    out = log.open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out
    )
    out.close()
    return Child(name, proc)


def chunks(n: int, parts: int) -> Iterator[tuple[int, int]]:
    """(first, count) of ``parts`` near-equal slices of range(n)."""
    base, extra = divmod(n, parts)
    first = 0
    for i in range(parts):
        count = base + (1 if i < extra else 0)
        if count:
            yield first, count
        first += count


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (nan if empty)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))]


def proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of another process, from /proc."""

    s = ProcSample.of(pid)
    return s.cpu_s, s.rss_mb


class Fleet:
    """One run at one fleet size."""

    def __init__(self, args: argparse.Namespace, floors: int) -> None:

        self.args = args
        self.n = floors
        self.dir = Path(tempfile.mkdtemp(prefix=f"floorgate-fleet-{floors}-"))
        self.broker = Mosquitto(self.dir / "mosquitto", make_certs(self.dir / "certs"))
        self._sys_interval()
        self.workers: list[Child] = []
        self.consumers: list[Child] = []
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.daemon_dbs: dict[str, Path] = {}
        self.keys: dict[str, str] = {}

    def _sys_interval(self) -> None:
        with self.broker.config.open("a") as f:
            f.write("sys_interval 1\nmax_connections -1\n")

    async def start(self) -> None:
        """Broker, consumers, daemons, then the simulated floors."""
        await asyncio.to_thread(self.broker.start)
        os.environ["FLOORGATE_MQTT_PORT"] = str(self.broker.port)
        os.environ["FLEET_KEY"] = FLEET_KEY.hex()
        os.environ["FLOORGATE_RUN_DIR"] = str(self.dir)  # the bench floor's key file
        (self.dir / "command.key").write_text(FLEET_KEY.hex() + "\n")
        # Each daemon's key first: the consumers start before the daemons (a consumer's
        # new session would miss what a floor published before it subscribed).
        gateways = [f"fleetd-{d}" for d in range(self.args.daemons)]
        self.keys = {gw: secrets.token_hex(32) for gw in gateways}
        keys_file = self.dir / "keys.json"
        keys_file.write_text(json.dumps({g: bytes.fromhex(k).hex() for g, k in self.keys.items()}))
        for m in range(2):
            argv = ["--role", "consumer", "--member", str(m), "--port", str(self.broker.port),
                    "--keys", str(keys_file), "--count", str(self.n)]  # fmt: skip
            c = await spawn(f"consumer-{m}", argv, self.dir / f"consumer-{m}.log")
            await c.read(60)
            self.consumers.append(c)
        for gw in gateways:
            await self.start_daemon(gw)
        for first, count in chunks(self.n, self.args.workers):
            wdir = self.dir / f"w{first}"
            wdir.mkdir()
            argv = ["--role", "worker", "--first", str(first), "--count", str(count),
                    "--dir", str(wdir), "--seed", str(self.args.seed),
                    "--events-per-room-hour", str(self.args.events_per_room_hour),
                    "--jitter", str(self.args.jitter)]  # fmt: skip
            self.workers.append(await spawn(f"worker-{first}", argv, self.dir / f"w{first}.log"))
        for w in self.workers:
            await w.read(600)

    async def start_daemon(self, gw: str) -> None:
        """A complete gateway on floorsim: the demo floor as ``gw``."""
        run = self.dir / gw
        run.mkdir()
        (run / "command.key").write_text(self.keys[gw] + "\n")
        text = DEMO.read_text().replace(DEMO_RUN_DIR, str(run))
        text = text.replace("${FLOORGATE_MQTT_PORT:-1883}", str(self.broker.port))
        text = text.replace("${FLOORGATE_MODBUS_PORT:-15020}", str(free_port()))
        data = tomllib.loads(text)
        data["gateway"]["id"] = gw
        data["mqtt"]["root"] = f"hotel/fleetd/{gw}"
        path = run / "floor.toml"
        path.write_text(tomli_w.dumps(data))
        self.daemon_dbs[f"hotel/fleetd/{gw}"] = run / "state" / "floorgate.db"
        for argv, name in (
            ([str(BIN / "floorsim"), "--config", str(path), "--log-level", "warning"], "floorsim"),
            ([sys.executable, "-m", "gateway.daemon", "--config", str(path)], "floorgated"),
        ):
            log = (run / f"{name}.log").open("ab")
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
            self.daemons.append(proc)
            log.close()
            if name == "floorsim":
                deadline = time.monotonic() + 30
                live = run / "floorsim.sock"
                while not socket_is_live(live) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)

    async def stats(
        self, latency: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every worker's and consumer's figures."""
        ws = [await w.ask({"cmd": "stats"}) for w in self.workers]
        cs = [await c.ask({"cmd": "stats", "latency": latency}) for c in self.consumers]
        return ws, cs

    async def restart(self, persistence: bool) -> dict[str, Any]:
        """Restart the broker; per floor, the time until it is back with its state out."""
        for w in self.workers:
            await w.ask({"cmd": "watch"})
        self.broker.persistence = persistence
        await asyncio.to_thread(self.broker.stop)
        self.broker._write_config()
        self._sys_interval()
        began = time.time()
        await asyncio.to_thread(self.broker.start)
        started = time.time()
        back: dict[str, float | None] = {}
        publishes = events = 0
        for w in self.workers:
            answer = await w.read(RECONNECT_WAIT_S + 30)
            back.update(answer["reconnected"])
            publishes += answer["publishes"]
            events += answer["events"]
        done = time.time()
        delays = {r: (t - started if t is not None else None) for r, t in back.items()}
        ok = [v for v in delays.values() if v is not None]
        slowest = max(delays.items(), key=lambda kv: kv[1] if kv[1] is not None else 1e9)
        return {
            "persistence": persistence, "down_s": started - began, "floors": len(delays),
            "back": len(ok), "p50_s": pct(ok, 0.5), "max_s": max(ok, default=float("nan")),
            "slowest": slowest, "never": [r for r, v in delays.items() if v is None][:5],
            "publishes": publishes, "events": events, "window_s": done - started,
        }  # fmt: skip

    async def close(self) -> None:
        """Stop everything this run started (by PID) and remove its directory."""
        for c in [*self.workers, *self.consumers]:
            await c.stop()
        for p in self.daemons:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.broker.stop()
        if not os.environ.get("FLOORGATE_FLEET_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


def stored_last(db: Path) -> int:
    """The highest event seq a daemon stored."""

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        row = c.execute("SELECT max(seq) FROM events").fetchone()
    return int(row[0] or 0)


async def run_once(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """One fleet of ``n`` floors: measure, print, return the verdict."""
    fleet = Fleet(args, n)
    t_setup = time.monotonic()
    print(
        f"\n=== {n} simulated floors in {args.workers} worker processes + {args.daemons} "
        f"daemons on floorsim; 2 consumers; Mosquitto :{fleet.broker.port}",
        flush=True,
    )
    try:
        await fleet.start()
        print(f"  all floors connected in {time.monotonic() - t_setup:.1f} s (setup)", flush=True)
        total = n + args.daemons
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            _, cs = await fleet.stats()
            if sum(c["floors"] for c in cs) >= total:
                break
            await asyncio.sleep(1)
        # Start-up over (each consumer took every floor's retained state and asked each of
        # its floors for what it missed): the steady window starts after a warm-up.
        await asyncio.sleep(args.warmup)
        ws0, cs0 = await fleet.stats(latency=True)
        mono0, wall0 = time.monotonic(), time.time()
        bpid = fleet.broker.process.pid if fleet.broker.process else 0
        b0 = proc_usage(bpid)
        await asyncio.sleep(args.seconds)
        ws1, cs1 = await fleet.stats(latency=True)
        b1 = proc_usage(bpid)
        secs = time.monotonic() - mono0
        produced = sum(w["produced"] for w in ws1) - sum(w["produced"] for w in ws0)
        received = sum(c["events"] for c in cs1) - sum(c["events"] for c in cs0)
        # Calls made in the window (one made before it and delivered late is the start-up's).
        lat = [late for c in cs1 for stamp, late in c["latency"] if stamp >= wall0]
        w_cpu = sum(w1["cpu_s"] - w0["cpu_s"] for w0, w1 in zip(ws0, ws1, strict=True))
        w_rss = sum(w["rss_mb"] for w in ws1)
        c_cpu = [c1["cpu_s"] - c0["cpu_s"] for c0, c1 in zip(cs0, cs1, strict=True)]
        lag = max(0, produced - received)
        c_rss = ", ".join(f"{c['rss_mb']:.0f} MB" for c in cs1)
        print(
            f"  steady {secs:.0f} s: produced {produced / secs:.0f} events/s (simulated floors), "
            f"received {received / secs:.0f} events/s at the consumers (daemons' included)"
        )
        print(
            f"  call event -> consumer: p50 {1000 * pct(lat, 0.5):.0f} ms, p99 "
            f"{1000 * pct(lat, 0.99):.0f} ms, max {1000 * max(lat, default=float('nan')):.0f} ms "
            f"(n={len(lat)}, {sum(x > CALL_P99_LIMIT_S for x in lat)} over "
            f"{CALL_P99_LIMIT_S:.0f} s; target p99 <= {CALL_P99_LIMIT_S * 1000:.0f} ms)"
        )
        print(
            f"  per simulated floor: CPU {100 * w_cpu / secs / n:.3f} % of one core, RSS "
            f"{w_rss / n:.2f} MB (workers: {100 * w_cpu / secs:.0f} % CPU, {w_rss:.0f} MB in all)"
        )
        print(
            f"  consumers: CPU {', '.join(f'{100 * c / secs:.0f} %' for c in c_cpu)} of one core; "
            f"RSS {c_rss}; broker CPU "
            f"{100 * (b1[0] - b0[0]) / secs:.0f} %, RSS {b1[1]:.0f} MB; "
            f"load avg {os.getloadavg()[0]:.2f} (2 cores, shared)"
        )
        restarts = []
        if not args.no_restarts:
            for persistence in (True, False):
                r = await fleet.restart(persistence)
                restarts.append(r)
                slow_root, slow_s = r["slowest"]
                print(
                    f"  broker restart, persistence {'on' if persistence else 'off'}: "
                    f"{r['back']}/{r['floors']} floors back with their state out; p50 "
                    f"{r['p50_s']:.1f} s, slowest {slow_root} "
                    f"{'never' if slow_s is None else f'{slow_s:.1f} s'} (target <= "
                    f"{RECONNECT_TARGET_S:.0f} s); the floors published {r['publishes']} "
                    f"times from the broker's stop until all were back "
                    f"({r['window_s']:.0f} s), {r['events']} of them new events: "
                    f"{(r['publishes'] - r['events']) / max(n, 1):.1f} per floor to reconnect",
                    flush=True,
                )
        # The end: producing paused, every outbox drained, then the accounting.
        final_w = [await w.ask({"cmd": "pause"}, 300) for w in fleet.workers]
        expected = {r: s for w in final_w for r, s in w["last_seq"].items()}
        for root, db in fleet.daemon_dbs.items():
            with contextlib.suppress(Exception):
                expected[root] = stored_last(db)
        deadline = time.monotonic() + 120
        while True:
            _, cs = await fleet.stats()
            got = {r: c for x in cs for r, c in x["counts"].items()}
            behind = {r: s - got.get(r, {"last": 0})["last"] for r, s in expected.items()}
            if not any(v > 0 for v in behind.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        lost = sum(max(0, v) for v in behind.values())
        ooo = sum(c["ooo"] for c in got.values())
        unfilled = sum(c["gaps"] for c in got.values())
        missing = {r: m for x in cs for r, m in x["missing"].items()}
        gone = {r: m for x in cs for r, m in x["lost"].items()}
        short = {r: expected[r] - got.get(r, {"n": 0})["n"] for r in expected}
        short = {r: v for r, v in short.items() if v > 0}
        replays = sum(x["replays"] for x in cs)
        print(
            f"  accounting: {len(expected)} floors, {sum(expected.values())} events stored; "
            f"lost {lost + sum(short.values())} (behind at the end {lost}, never received "
            f"{sum(short.values())} on {len(short)} floors "
            f"{ {r: (v, got.get(r, {}).get('first')) for r, v in list(short.items())[:5]} }), "
            f"out of order {ooo}, gaps marked "
            f"{unfilled}, still missing {sum(len(v) for v in missing.values())} ranges, "
            f"reported lost {gone or 'none'}; replays asked {replays}",
            flush=True,
        )
        p99 = pct(lat, 0.99)
        notes: dict[str, int] = {}
        for x in cs:
            for k, v in x["notes"].items():
                notes[k] = notes.get(k, 0) + v
        print(f"  the consumers' log, whole run: {notes or 'nothing'}")
        for x in cs:
            for stamp, late, seq, root, gaps, asked in x["slow"]:
                print(f"    late call: {root} seq {seq} at +{stamp - wall0:.0f} s of the window, "
                      f"{late:.1f} s late; open gaps {gaps}, replays asked {asked}")  # fmt: skip
        reasons = []
        if lost or short or ooo:
            reasons.append("events lost or out of order")
        if not p99 <= CALL_P99_LIMIT_S:
            reasons.append(f"call p99 {p99:.2f} s")
        if received < 0.95 * produced:
            reasons.append(f"consumers behind ({lag} events in {secs:.0f} s)")
        for r in restarts:
            if r["back"] < r["floors"] or not r["max_s"] <= RECONNECT_TARGET_S:
                reasons.append(f"restart (persistence {r['persistence']}): {r['max_s']:.0f} s")
        return {
            "floors": n, "fits": not reasons, "why": reasons, "lost": lost + sum(short.values()),
            "out_of_order": ooo, "events": sum(expected.values()),
            "restarts_back": [[r["back"], r["floors"]] for r in restarts],
            "cpu": 100 * w_cpu / secs, "consumers_cpu": c_cpu,
            "broker_cpu": 100 * (b1[0] - b0[0]) / secs,
        }  # fmt: skip
    finally:
        await fleet.close()


async def parent_main(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every fleet size asked; the verdicts."""
    _, hard = raise_nofile()
    print(
        f"RLIMIT_NOFILE soft raised to the hard limit, {hard}; Mosquitto inherits it "
        f"and needs one descriptor per connection, max_connections -1 (unlimited) here; "
        f"each worker opens 1 socket + 3 SQLite files per floor",
        flush=True,
    )
    sizes = [int(x) for x in args.ladder.split(",")] if args.ladder else [args.floors]
    verdicts = []
    for n in sizes:
        v = await run_once(args, n)
        verdicts.append(v)
        print(
            f"  => {n} floors: {'FITS' if v['fits'] else 'does not fit: ' + '; '.join(v['why'])}",
            flush=True,
        )
        if not v["fits"]:
            break
    fitting = [v["floors"] for v in verdicts if v["fits"]]
    print(
        f"\nlargest fleet that fits on this machine: {max(fitting) if fitting else 'none'} "
        f"floors (of {sizes}); bound: {verdicts[-1]['why'] or 'not reached'}"
    )
    print("FLEET RESULT " + json.dumps(verdicts), flush=True)
    return verdicts


def main() -> None:
    """Parse arguments and run the parent or a child role."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["parent", "worker", "consumer"], default="parent")
    p.add_argument("--floors", type=int, default=1000)
    p.add_argument("--ladder", default="", help="fleet sizes to try in turn, e.g. 200,500,1000")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--daemons", type=int, default=3)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=30.0, help="seconds before the window")
    p.add_argument("--events-per-room-hour", type=float, default=sum(MIX.values()))
    p.add_argument("--jitter", type=float, default=5.0, help="[mqtt] reconnect_jitter_s")
    p.add_argument("--no-restarts", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    # children
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--dir", default="")
    p.add_argument("--member", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--keys", default="")
    args = p.parse_args()
    if args.role == "worker":
        asyncio.run(worker_main(args))
    elif args.role == "consumer":
        asyncio.run(consumer_main(args))
    else:
        verdicts = asyncio.run(parent_main(args))
        sys.exit(0 if verdicts and verdicts[0]["fits"] else 1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
