"""The bus scheduler against floorsim over Modbus TCP and RTU ptys, and against a fake bus.

floorsim runs the demo floor: rs485-a (RTU, 19200 8N1, paced on the wire) holds 1201
(tstat 1, lock 2, rio 3), 1202 (4, 5, 6), the tstats/locks of 1205-1206 and the floor
panel (40); lan (TCP) holds 1203 (1, 2, 3) and 1204 (4, 5, 6). Intervals and timeouts
are shrunk; every wait is on a condition with a bound, and the checks count
transactions and observations rather than time them. The fake bus (at our own seam,
drivers.transport) covers what floorsim cannot be made to do: a map with holes, values
the codec refuses, a bus that comes and goes at will, concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.errors import (
    BusError,
    BusGoneError,
    BusTimeoutError,
    DeviceUnavailableError,
    FrameError,
    ModbusExceptionError,
    WriteFailedError,
)
from drivers.ids import DeviceRef
from drivers.lines import DeviceSpec, RtuBus, TcpBus
from drivers.modbus import ModbusTransport
from drivers.observations import (
    READ_REPORT_S,
    DeviceFault,
    DeviceOffline,
    DeviceOnline,
    DriverObservation,
    PointObserved,
    PointsRead,
)
from drivers.profile import PollClass, Profile, Table
from drivers.scheduler import BusScheduler
from floorsim.sim import FloorSim
from gateway.config.floor import FloorConfig
from gateway.core.kinds import ROLES
from tests.conftest import FLOORS
from tests.test_floorsim_support import load, running
from tests.waiting import until

INTERVALS = {
    PollClass.EMERGENCY: 100,
    PollClass.LOCK: 500,
    PollClass.ROOM: 500,
    PollClass.SLOW: 2000,
}
# The fake bus answers in about a millisecond: poll it fast.
FAST = {
    PollClass.EMERGENCY: 20,
    PollClass.LOCK: 20,
    PollClass.ROOM: 20,
    PollClass.SLOW: 50,
}
# floorsim answers in the test's own event loop: on a loaded machine an answer can be tens
# of ms late, and a spurious timeout shows as a timeout, a CRC error (its late bytes)
# or a device offline. 250 ms: silent devices are still found quickly.
TIMEOUT_MS = 250
PROBE_MAX_S = 0.2
# Every device of rs485-a online: its first slow-class polls wait behind the emergency
# ones, and a loaded machine (floorsim in this process) answers at a fraction of the
# wire rate; a bound for a hang, not a speed.
ONLINE_S = 60.0

dev = DeviceRef.parse  # a device by name, as the bus owner takes it


@dataclass
class Tx:
    """One transaction the scheduler made, as the transport saw it."""

    op: str
    unit: int
    table: Table
    address: int
    count: int
    error: str | None


class Recording:
    """A Transport that records every transaction of the one it wraps."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.log: list[Tx] = []

    @property
    def bus(self) -> str:
        return str(self.inner.bus)

    @property
    def max_in_flight(self) -> int:
        return int(self.inner.max_in_flight)

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        return await self._do("read", unit, table, address, count, fn=self.inner.read)

    async def write(self, unit: int, table: Table, address: int, values: Sequence[int]) -> None:
        await self._do("write", unit, table, address, values, fn=self.inner.write)

    async def close(self) -> None:
        await self.inner.close()

    async def _do(
        self, op: str, unit: int, table: Table, address: int, arg: Any, *, fn: Any
    ) -> Any:
        count = arg if isinstance(arg, int) else len(arg)
        try:
            result = await fn(unit, table, address, arg)
        except BusError as exc:
            self.log.append(Tx(op, unit, table, address, count, type(exc).__name__))
            raise
        self.log.append(Tx(op, unit, table, address, count, None))
        return result

    def to(self, unit: int) -> list[Tx]:
        return [t for t in self.log if t.unit == unit]


@dataclass
class Run:
    """A running scheduler, its transport log and what it observed."""

    sched: BusScheduler
    rec: Recording
    obs: list[DriverObservation] = field(default_factory=list)
    room: str = ""  # the room whose devices a parametrised test uses

    def points(self, device: str, point: str, index: int | None = None) -> list[Any]:
        """Values observed for a point (one element of an array point, with ``index``)."""
        return [
            o.value
            for o in self.obs
            if isinstance(o, PointObserved)
            and str(o.device) == device
            and o.point == point
            and index in (None, o.index)
        ]

    def of(self, kind: type, device: str) -> list[Any]:
        return [o for o in self.obs if isinstance(o, kind) and str(o.device) == device]


@contextlib.asynccontextmanager
async def scheduling(
    transport: Any, devices: Sequence[DeviceSpec], **kwargs: Any
) -> AsyncIterator[Run]:
    """Run a BusScheduler until the block ends; fail if run() ended by itself."""
    rec = Recording(transport)
    run = Run(None, rec)  # type: ignore[arg-type]
    kwargs.setdefault("intervals_ms", INTERVALS)
    kwargs.setdefault("probe_max_s", PROBE_MAX_S)
    run.sched = BusScheduler(rec, devices, on_observation=run.obs.append, **kwargs)
    task = asyncio.create_task(run.sched.run(), name="bus-under-test")
    try:
        yield run
        assert not task.done(), "run() ended by itself"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def floor(run_dir: Path) -> FloorConfig:
    return load(FLOORS / "demo.toml")


@pytest.fixture
async def sim(floor: FloorConfig) -> AsyncIterator[FloorSim]:
    async with running(floor) as s:
        yield s


def rtu_transport(floor: FloorConfig) -> ModbusTransport:
    bus = floor.bus("rs485-a")
    assert isinstance(bus, RtuBus)
    return ModbusTransport.rtu(bus.model_copy(update={"timeout_ms": TIMEOUT_MS}))


def tcp_transport(floor: FloorConfig, sim: FloorSim) -> ModbusTransport:
    bus = floor.bus("lan")
    assert isinstance(bus, TcpBus)
    host, port = sim.tcp_address("lan")
    return ModbusTransport.tcp(
        bus.model_copy(update={"host": host, "port": port, "timeout_ms": TIMEOUT_MS})
    )


# (bus, the room whose rio we press, its rio's unit, a transport factory)
BUSES = {
    "rtu": ("rs485-a", "1201", 3, lambda f, s: rtu_transport(f)),
    "tcp": ("lan", "1203", 3, tcp_transport),
}


@pytest.fixture(params=sorted(BUSES))
async def bus_run(request: Any, floor: FloorConfig, sim: FloorSim) -> AsyncIterator[Run]:
    name, _, _, make = BUSES[request.param]
    async with scheduling(make(floor, sim), floor.devices(name)) as run:
        run.room = BUSES[request.param][1]
        yield run


async def test_every_device_comes_online_with_its_values(bus_run: Run, floor: FloorConfig) -> None:
    devices = floor.devices(bus_run.sched.bus)
    await until(lambda: all(bus_run.sched.online(dev(d.name)) for d in devices), timeout=ONLINE_S)
    for d in devices:
        first = bus_run.obs.index(bus_run.of(DeviceOnline, d.name)[0])
        values = [
            o for o in bus_run.obs if isinstance(o, PointObserved) and str(o.device) == d.name
        ]
        assert values, d.name
        assert all(bus_run.obs.index(v) > first for v in values)  # online before its values
    rio = f"{bus_run.room}/rio"
    await until(lambda: len(bus_run.rec.to(3)) > 10)
    assert bus_run.points(rio, "bath_count") == [0]  # changes only: no repeats
    tstat = next(d.name for d in devices if d.role == "tstat")
    await until(lambda: bus_run.points(tstat, "sensor_fault"))
    assert bus_run.points(tstat, "sensor_fault") == [False]  # a bit-field member, by role
    assert not [o for o in bus_run.obs if isinstance(o, DeviceOffline | DeviceFault)]


async def test_a_press_shorter_than_the_poll_interval_is_counted(
    bus_run: Run, sim: FloorSim
) -> None:
    room = bus_run.room
    await until(lambda: bus_run.points(f"{room}/rio", "bath_count"))
    sim.press(room, "bath", ms=5)  # 5 ms: no poll sees the pull cord itself
    await until(lambda: bus_run.points(f"{room}/rio", "bath_count") == [0, 1])
    sim.press(room, "bath", ms=5)
    sim.press(room, "bath", ms=5)
    await until(lambda: bus_run.points(f"{room}/rio", "bath_count")[-1] == 3)


async def test_writes_are_verified_by_reading_back(bus_run: Run, sim: FloorSim) -> None:
    room = bus_run.room
    await until(lambda: bus_run.sched.online(dev(f"{room}/lock")))
    token = 0x0123456789ABCDEF
    await bus_run.sched.write(dev(f"{room}/lock"), "slot", token, index=5)
    assert sim.slots(room)[5]["token"] == token
    # The read-back is observed. Not necessarily last: on TCP, reads of the other slots
    # (and a poll sent before the write) may be answered after it.
    assert token in bus_run.points(f"{room}/lock", "slot", index=5)
    await bus_run.sched.write(dev(f"{room}/tstat"), "setpoint", 21.5, priority=PollClass.SLOW)
    assert sim.get(f"{room}/tstat", "setpoint") == 21.5
    await bus_run.sched.write(dev(f"{room}/rio"), "dome_lamp", True, priority=PollClass.EMERGENCY)
    assert sim.coils(f"{room}/rio")["dome_lamp"] is True
    assert True in bus_run.points(f"{room}/rio", "dome_lamp")
    # Each write was followed by a read of exactly what it wrote (no poll reads these).
    log = bus_run.rec.log
    writes = [(i, t) for i, t in enumerate(log) if t.op == "write"]
    assert [(t.table, t.address, t.count) for _, t in writes] == [
        (Table.HOLDING, 120, 4),
        (Table.HOLDING, 2, 1),
        (Table.COIL, 4, 1),
    ]
    for i, w in writes:
        assert any(
            (t.op, t.unit, t.table, t.address, t.count)
            == ("read", w.unit, w.table, w.address, w.count)
            for t in log[i + 1 :]
        )
    before = len(bus_run.obs)
    await bus_run.sched.write(dev(f"{room}/tstat"), "setpoint", 21.5)  # unchanged: no observation
    assert not [
        o for o in bus_run.obs[before:] if isinstance(o, PointObserved) and o.point == "setpoint"
    ]
    with pytest.raises(ValueError):
        await bus_run.sched.write(dev(f"{room}/tstat"), "setpoint", 99.0)  # codec: above max
    with pytest.raises(ValueError):
        await bus_run.sched.write(dev(f"{room}/lock"), "door_open", True)  # read-only role


async def test_on_demand_read_of_the_access_log_and_all_slots(bus_run: Run, sim: FloorSim) -> None:
    room = bus_run.room
    lock = f"{room}/lock"
    await until(lambda: bus_run.sched.online(dev(lock)))
    await bus_run.sched.write(dev(lock), "slot", 0xC0FFEE, index=0)
    sim.present_token(room, 0xC0FFEE)
    await until(lambda: bus_run.points(lock, "log_head")[-1:] == [1])
    got = await bus_run.sched.read(
        dev(lock),
        [("log_seq", 1), ("log_result", 1), ("log_token", 1)],
        priority=PollClass.LOCK,
    )
    assert got == {("log_seq", 1): 1, ("log_result", 1): "granted", ("log_token", 1): 0xC0FFEE}
    assert bus_run.points(lock, "log_result") == ["granted"]  # emitted as observed too
    n = len(bus_run.rec.log)
    slots = await bus_run.sched.read(dev(lock), [("slot", i) for i in range(32)])
    assert slots[("slot", 0)] == 0xC0FFEE
    assert sum(1 for t in bus_run.rec.log[n:] if t.unit == 2 and t.address >= 100) == 4


async def test_silent_device_goes_offline_is_probed_and_comes_back(
    bus_run: Run, sim: FloorSim
) -> None:
    room = bus_run.room
    rio = f"{room}/rio"
    await until(lambda: bus_run.points(rio, "bath_count") and bus_run.points(rio, "window_open"))
    sim.set_fault(rio, "silent")
    await until(lambda: bus_run.of(DeviceOffline, rio))
    assert bus_run.of(DeviceOffline, rio)[0].reason == "timeout"
    summary, stats = bus_run.sched.summary(), bus_run.sched.stats()
    assert summary.offline == (rio,) == tuple(d.name for d in stats.devices if d.state == "offline")
    assert (summary.bus, summary.devices, summary.gone) == (stats.bus, len(stats.devices), False)
    to_rio = bus_run.rec.to(3)
    last_ok = max(i for i, t in enumerate(to_rio) if t.error is None)
    assert [t.error for t in to_rio[last_ok + 1 :][:3]] == ["BusTimeoutError"] * 3
    with pytest.raises(DeviceUnavailableError):  # at once, without using the bus
        await bus_run.sched.write(dev(rio), "dome_lamp", True)
    with pytest.raises(DeviceUnavailableError):
        await bus_run.sched.read(dev(rio), [("bath_count", 0)])
    offline_at = len(bus_run.rec.to(3))
    # (On TCP up to 3 polls may still have been in flight: they end first.)
    await until(lambda: len(bus_run.rec.to(3)) >= offline_at + 6)
    probes = bus_run.rec.to(3)[-3:]
    # Only the probe (one register) reaches it: no polls of its three groups.
    assert all((t.table, t.address, t.count) == (Table.INPUT, 0, 1) for t in probes)
    sim.press(room, "bath", ms=5)  # while it is silent: counted by the device
    sim.clear_fault(rio)
    await until(lambda: bus_run.sched.online(dev(rio)))
    # Every polled point is observed again after coming back, the missed press included.
    await until(lambda: bus_run.points(rio, "window_open") == [False, False])
    await until(lambda: bus_run.points(rio, "bath_count") == [0, 1])
    stats = {d.name: d for d in bus_run.sched.stats().devices}[rio]
    assert stats.online
    assert stats.reason == "timeout"
    assert stats.success_rate is not None
    assert stats.success_rate < 1


async def test_emergency_polls_go_on_while_a_device_is_dead(
    floor: FloorConfig, sim: FloorSim
) -> None:
    """Between two polls of a live rio's counters the dead device gets one timeout at most."""
    devices = floor.devices("rs485-a")
    async with scheduling(rtu_transport(floor), devices, probe_max_s=1.0) as run:
        await until(lambda: run.sched.online(dev("1202/rio")))
        sim.set_fault("1202/rio", "silent")
        await until(lambda: run.of(DeviceOffline, "1202/rio"))
        start = len(run.rec.log)

        def live_polls() -> list[Tx]:
            return [t for t in run.rec.log[start:] if t.unit == 3 and t.table is Table.INPUT]

        await until(lambda: len(live_polls()) >= 15, timeout=30)
        window = run.rec.log[start:]
        marks = [i for i, t in enumerate(window) if t.unit == 3 and t.table is Table.INPUT]
        for a, b in itertools.pairwise(marks):
            assert sum(1 for t in window[a:b] if t.unit == 6) <= 1
        assert all(t.error is None for t in window if t.unit != 6)
        dead = [t for t in window if t.unit == 6]
        assert dead, "never probed"
        assert len(dead) < len(marks) / 2
        assert run.sched.online(dev("1201/rio"))


async def test_crc_garbage_counts_as_a_failure(floor: FloorConfig, sim: FloorSim) -> None:
    async with scheduling(rtu_transport(floor), floor.devices("rs485-a")) as run:
        await until(lambda: run.sched.online(dev("1201/tstat")))
        sim.set_fault("1201/tstat", "corrupt", 2)  # its next two answers
        outcomes = []
        for _ in range(3):  # (a poll of the tstat may take one of them)
            try:
                await run.sched.read(dev("1201/tstat"), [("room_temp", 0)])
            except FrameError:
                outcomes.append("crc")
            else:
                outcomes.append("ok")
        assert outcomes[-1] == "ok"
        assert "crc" in outcomes
        assert run.sched.stats().errors["crc"] == 2
        assert run.sched.online(dev("1201/tstat"))  # two in a row: not offline
        sim.set_fault("1201/tstat", "corrupt", 1000)
        for _ in range(3):
            with contextlib.suppress(FrameError):
                await run.sched.read(dev("1201/tstat"), [("room_temp", 0)])
        with pytest.raises(DeviceUnavailableError):
            await run.sched.read(dev("1201/tstat"), [("room_temp", 0)])
        assert run.of(DeviceOffline, "1201/tstat")[0].reason == "crc"
        assert [t.error for t in run.rec.to(1)[-3:]] == ["FrameError"] * 3


async def test_exception_codes(floor: FloorConfig, sim: FloorSim) -> None:
    async with scheduling(rtu_transport(floor), floor.devices("rs485-a")) as run:
        await until(lambda: run.sched.online(dev("1201/rio")) and run.sched.online(dev("1202/rio")))
        sim.set_fault("1201/rio", "exception", 4)
        sim.set_fault("1202/rio", "exception", 6)
        await until(lambda: run.of(DeviceOffline, "1201/rio") and run.of(DeviceOffline, "1202/rio"))
        assert run.of(DeviceOffline, "1201/rio")[0].reason == "exception 04"
        assert run.of(DeviceOffline, "1202/rio")[0].reason == "exception 06"
        assert [f.code for f in run.of(DeviceFault, "1201/rio")] == ["exception 04"]  # once
        assert run.of(DeviceFault, "1202/rio") == []  # busy is no device failure
        errors = run.sched.stats().errors
        assert errors["exception 04"] >= 3
        assert errors["exception 06"] >= 3
        sim.clear_fault("1201/rio")
        await until(lambda: run.sched.online(dev("1201/rio")))


async def test_a_write_to_a_failing_device_fails_after_its_attempts(
    floor: FloorConfig, sim: FloorSim
) -> None:
    async with scheduling(rtu_transport(floor), floor.devices("rs485-a"), offline_after=5) as run:
        await until(lambda: run.sched.online(dev("1201/tstat")))
        sim.set_fault("1201/tstat", "silent")
        with pytest.raises(WriteFailedError, match="2 attempts"):
            await run.sched.write(dev("1201/tstat"), "setpoint", 20.0, attempts=2)
        writes = [t for t in run.rec.to(1) if t.op == "write"]
        assert [t.error for t in writes] == ["BusTimeoutError"] * 2
        sim.clear_fault("1201/tstat")
        sim.set_fault("1201/tstat", "exception", 3)  # the device refuses the value: no retry
        with pytest.raises(WriteFailedError, match="exception 03"):
            await run.sched.write(dev("1201/tstat"), "setpoint", 20.0)
        assert len([t for t in run.rec.to(1) if t.op == "write"]) == 3


async def test_scan_finds_units_and_their_profiles(floor: FloorConfig, sim: FloorSim) -> None:
    room = [d for d in floor.devices("rs485-a") if d.room == "1201"]
    async with scheduling(rtu_transport(floor), room) as run:
        seen: list[tuple[int, int]] = []
        hits = await run.sched.scan(
            [1, 2, 3, 40, 41],
            progress=lambda i, n, _found: seen.append((i, n)),
            profiles=floor.profiles.values(),  # every profile the floor loaded
        )
        assert [(h.unit, h.profiles) for h in hits] == [
            (1, ("fg-tstat-1",)),
            (2, ("fg-lock-1",)),
            (3, ("fg-rio-1",)),
            (40, ("fg-floorpanel-1",)),
        ]
        assert hits[2].tables == (Table.COIL, Table.DISCRETE, Table.INPUT)
        assert hits[2].refused == (Table.HOLDING,)
        assert seen == [(i, 5) for i in range(1, 6)]
        assert len(run.rec.to(41)) == 1  # absent: one timeout, not four
        assert run.sched.online(dev("1201/rio"))  # polling went on


async def test_tcp_scan_skips_units_the_gateway_cannot_reach(
    floor: FloorConfig, sim: FloorSim
) -> None:
    async with scheduling(tcp_transport(floor, sim), floor.devices("lan")) as run:
        hits = await run.sched.scan([3, 99])  # floorsim answers 0x0B for unit 99
        assert [(h.unit, h.profiles) for h in hits] == [(3, ("fg-rio-1",))]


async def test_a_vanished_port_pauses_the_bus_and_it_recovers(
    floor: FloorConfig, run_dir: Path
) -> None:
    beats = []
    devices = floor.devices("rs485-a")
    first = FloorSim(floor, tcp_ports={"lan": 0})
    await first.start()
    try:
        transport = rtu_transport(floor)
        async with scheduling(transport, devices, beat=lambda: beats.append(1)) as run:
            await until(
                lambda: all(run.sched.online(dev(d.name)) for d in devices), timeout=ONLINE_S
            )
            await first.stop()  # the port disappears
            await until(lambda: all(run.of(DeviceOffline, d.name) for d in devices))
            assert {o.reason for o in run.obs if isinstance(o, DeviceOffline)} == {"bus gone"}
            async with running(floor):  # back, on a new pty behind the same path
                await until(
                    lambda: all(len(run.of(DeviceOnline, d.name)) == 2 for d in devices),
                    timeout=30,
                )
            n = len(beats)
            await until(lambda: len(beats) > n)
    finally:
        await first.stop()


# -- the fake bus: holes in the map, bad values, a bus that goes away, concurrency ------------


class FakeBus:
    """An in-memory bus: cells per unit; unmapped addresses answer exception 02."""

    def __init__(self, max_in_flight: int = 1) -> None:
        self.bus = "fake"
        self.max_in_flight = max_in_flight
        self.cells: dict[int, dict[tuple[Table, int], int]] = {}
        self.gone = False
        self.in_flight = 0
        self.most_in_flight = 0
        self.reads: list[tuple[int, Table, int, int]] = []
        self.closed = False

    def add(self, unit: int, profile: Profile, skip: Sequence[tuple[Table, int]] = ()) -> None:
        cells = self.cells.setdefault(unit, {})
        for p in profile.point:
            first, last = p.span
            for a in range(first, last + 1):
                if (p.table, a) not in skip:
                    cells[(p.table, a)] = 0

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        self.reads.append((unit, table, address, count))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)  # a transaction takes a little while
            if self.gone:
                raise BusGoneError("port vanished")
            if unit not in self.cells:
                raise BusTimeoutError("no answer")
            cells = self.cells[unit]
            if any((table, a) not in cells for a in range(address, address + count)):
                raise ModbusExceptionError(2)
            return [cells[(table, a)] for a in range(address, address + count)]
        finally:
            self.in_flight -= 1

    async def write(self, unit: int, table: Table, address: int, values: Sequence[int]) -> None:
        await asyncio.sleep(0.001)
        for i, v in enumerate(values):
            self.cells[unit][(table, address + i)] = v

    async def close(self) -> None:
        self.closed = True


def rio_profile(floor: FloorConfig) -> Profile:
    return floor.profiles["fg-rio-1"]


def spec(profile: Profile, unit: int, room: str = "1201") -> DeviceSpec:
    roles = frozenset(ROLES[profile.device])
    return DeviceSpec(room, profile.device, "fake", unit, profile, roles)


async def test_a_merged_read_refused_is_split_and_remembered(floor: FloorConfig) -> None:
    bus = FakeBus()
    profile = rio_profile(floor)
    bus.add(3, profile, skip=[(Table.INPUT, 1)])  # no staff_count at input 1: a hole in the map
    # Give the hole's point a different role set: bath (0) and bed (2) count, staff is absent.
    patched = profile.model_copy(
        update={"point": [p for p in profile.point if p.role != "staff_count"]}
    )
    async with scheduling(bus, [spec(patched, 3)], intervals_ms=FAST) as run:
        await until(lambda: run.points("1201/rio", "bed_count") == [0])
        counters = lambda: [r for r in bus.reads if r[1] is Table.INPUT and r[2] < 3]  # noqa: E731
        await until(lambda: len(counters()) >= 5)
        assert counters()[0] == (3, Table.INPUT, 0, 3)  # merged across the hole: refused
        # Split at once, and never merged across the hole again.
        assert counters()[1:5] == [(3, Table.INPUT, 0, 1), (3, Table.INPUT, 2, 1)] * 2
        assert run.sched.online(dev("1201/rio"))
        assert run.sched.stats().errors == {"exception 02": 1}


async def test_an_optional_point_a_v1_device_lacks_is_absent_not_a_failure(
    floor: FloorConfig,
) -> None:
    bus = FakeBus()
    profile = rio_profile(floor)  # v1.1: motion at discrete 7, motion_count at input 3
    bus.add(3, profile, skip=[(Table.DISCRETE, 7), (Table.INPUT, 3)])  # a v1 FG-RIO-1
    async with scheduling(bus, [spec(profile, 3)], intervals_ms=FAST) as run:
        await until(lambda: run.points("1201/rio", "keycard") == [False])
        await until(lambda: len(bus.reads) >= 30)
        assert run.sched.online(dev("1201/rio"))
        assert not run.of(DeviceOffline, "1201/rio")
        refused = [r for r in bus.reads if r[1:3] in ((Table.DISCRETE, 7), (Table.INPUT, 3))]
        assert len(refused) <= 2  # each asked alone once, then never again
        assert not run.points("1201/rio", "motion_count")


async def test_a_value_the_codec_refuses_is_a_fault_not_a_crash(floor: FloorConfig) -> None:
    bus = FakeBus()
    tstat = floor.profiles["fg-tstat-1"]
    bus.add(1, tstat)
    bus.cells[1][(Table.HOLDING, 1)] = 9  # mode 9: not in the enum
    async with scheduling(bus, [spec(tstat, 1)], intervals_ms=FAST) as run:
        await until(lambda: run.of(DeviceFault, "1201/tstat"))
        assert [f.code for f in run.of(DeviceFault, "1201/tstat")] == ["bad value mode"]
        await until(lambda: run.points("1201/tstat", "fan_speed") == ["auto"])
        await until(lambda: sum(1 for r in bus.reads if r[1] is Table.HOLDING) >= 3)
        assert len(run.of(DeviceFault, "1201/tstat")) == 1  # once, not every poll
        assert run.sched.online(dev("1201/tstat"))
        bus.cells[1][(Table.HOLDING, 1)] = 2
        await until(lambda: run.points("1201/tstat", "mode") == ["heat"])
        bus.cells[1][(Table.HOLDING, 1)] = 9
        with pytest.raises(ValueError, match="did not decode"):
            await run.sched.read(dev("1201/tstat"), [("mode", 0)])


async def test_tcp_concurrency_is_bounded(floor: FloorConfig) -> None:
    bus = FakeBus(max_in_flight=3)
    rio = rio_profile(floor)
    for unit in range(1, 13):
        bus.add(unit, rio)
    devices = [spec(rio, u, room=str(1200 + u)) for u in range(1, 13)]
    async with scheduling(bus, devices, intervals_ms=FAST) as run:
        await until(lambda: all(run.sched.online(dev(d.name)) for d in devices))
        await until(lambda: len(bus.reads) > 100)
        assert bus.most_in_flight == 3
    assert bus.closed  # run() closes the transport on its way out


async def test_bus_gone_on_a_fake_bus_and_requests_on_the_way_out(floor: FloorConfig) -> None:
    bus = FakeBus()
    rio = rio_profile(floor)
    bus.add(3, rio)
    async with scheduling(bus, [spec(rio, 3)], offline_after=2, intervals_ms=FAST) as run:
        await until(lambda: run.sched.online(dev("1201/rio")))
        bus.gone = True
        await until(lambda: run.of(DeviceOffline, "1201/rio"))
        assert run.of(DeviceOffline, "1201/rio")[0].reason == "bus gone"
        n = len(bus.reads)
        bus.gone = False
        await until(lambda: run.sched.online(dev("1201/rio")))
        assert bus.reads[n] == (3, Table.INPUT, 0, 1)  # back on the first probe
    # A request still queued when run() ends fails (it does not hang its caller).
    gone = FakeBus()
    gone.add(3, rio)
    gone.gone = True
    sched = BusScheduler(gone, [spec(rio, 3)], on_observation=lambda o: None, probe_max_s=5)
    task = asyncio.create_task(sched.run())
    await until(lambda: sched.stats().errors.get("bus gone"))  # the bus pauses
    write = asyncio.create_task(sched.write(dev("1201/rio"), "dome_lamp", True))
    await asyncio.sleep(0)  # let it queue
    assert not write.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with pytest.raises(BusGoneError, match="stopped"):
        await write


class AnswerOnCue(FakeBus):
    """Waits for an answer with asyncio.wait_for, as pymodbus does; after ``hold()`` the
    next read waits until the test gives its answer (``answer``)."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.answer: asyncio.Future[None] | None = None

    def hold(self) -> None:
        self.holding = True

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        if self.holding:
            self.holding = False
            self.answer = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.answer, timeout=30)
        return await super().read(unit, table, address, count)


async def test_an_answer_arriving_with_the_stop_does_not_keep_the_bus_running() -> None:
    # On Python 3.11 asyncio.wait_for returns the answer and drops a cancel that lands in
    # the same loop iteration (CPython gh-86296): the bus polled on past a daemon's stop.
    bus = AnswerOnCue()
    sched = BusScheduler(bus, [], on_observation=lambda o: None)
    task = asyncio.create_task(sched.run())
    try:
        bus.hold()
        scan = asyncio.ensure_future(sched.scan([3]))
        await until(lambda: bus.answer is not None)
        assert bus.answer is not None
        bus.answer.set_result(None)  # the answer comes in...
        task.cancel()  # ...as the bus is stopped
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, "the bus kept running after it was cancelled"
        assert task.cancelled()
    finally:
        task.cancel()
        for t in asyncio.all_tasks():  # a worker that lost its cancel ignores run()'s next
            if t.get_name().startswith(f"bus[{bus.bus}]#"):
                t.cancel()
        with contextlib.suppress(asyncio.CancelledError, BusGoneError):
            await task
            await scan


async def test_a_request_given_up_as_its_turn_comes_fails_only_with_cancellation() -> None:
    sched = BusScheduler(FakeBus(), [], on_observation=lambda o: None)
    task = asyncio.create_task(sched.run())
    try:
        scan = asyncio.ensure_future(sched.scan([3]))
        await asyncio.sleep(0)  # one turn: the scan queues its step and wakes the idle worker
        # Given up before it resumes: the worker (first in line) finds the step abandoned
        # and drops it; the caller then must not look for it (it raised KeyError).
        scan.cancel()
        with pytest.raises(asyncio.CancelledError):
            await scan
        assert not task.done()
        assert await sched.scan([3]) == []  # the bus serves on
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_constructor_checks(floor: FloorConfig) -> None:
    rio = rio_profile(floor)
    with pytest.raises(ValueError, match="twice"):
        BusScheduler(FakeBus(), [spec(rio, 3), spec(rio, 3)], on_observation=print)
    sched = BusScheduler(FakeBus(), [spec(rio, 3)], on_observation=print)
    with pytest.raises(KeyError):
        sched.online(dev("9999/rio"))
    stats = sched.stats()
    assert (stats.bus, stats.kind, stats.transactions, stats.tx_per_s) == (
        "fake",
        "modbus-rtu",
        0,
        0.0,
    )
    assert stats.devices[0].state == "unknown"


async def test_reads_are_reported_per_device_coalesced(bus_run: Run) -> None:
    rio = f"{bus_run.room}/rio"
    await until(lambda: len(bus_run.of(PointsRead, rio)) >= 3, timeout=ONLINE_S)
    reports = bus_run.of(PointsRead, rio)
    online = bus_run.obs.index(bus_run.of(DeviceOnline, rio)[0])
    assert bus_run.obs.index(reports[0]) > online  # the first reads at once, after online
    assert "bath_count" in {p for r in reports for p in r.points}
    gaps = [b.at - a.at for a, b in itertools.pairwise(reports)]
    assert min(gaps) >= READ_REPORT_S  # at most one report a second per device


async def test_a_bus_sends_its_devices_read_reports_together(bus_run: Run) -> None:
    """After a device's first report, the bus reports its devices back to back (the same
    moment, nothing between them), so the committer takes them in one batch, not one a
    device."""
    rio = f"{bus_run.room}/rio"
    await until(lambda: len(bus_run.of(PointsRead, rio)) >= 5, timeout=ONLINE_S)
    first_of: dict[str, int] = {}
    for i, o in enumerate(bus_run.obs):
        if isinstance(o, PointsRead):
            first_of.setdefault(str(o.device), i)
    settled = max(first_of.values()) + 1
    flushes: dict[float, list[int]] = {}
    for i, o in enumerate(bus_run.obs[settled:], start=settled):
        if isinstance(o, PointsRead):
            flushes.setdefault(o.at, []).append(i)
    assert max(len(at) for at in flushes.values()) >= 3, flushes  # one moment, many devices
    for at in flushes.values():
        assert at == list(range(at[0], at[0] + len(at)))  # back to back
    gaps = [b - a for a, b in itertools.pairwise(sorted(flushes))]
    assert min(gaps) >= READ_REPORT_S  # the bus reports at most every READ_REPORT_S
