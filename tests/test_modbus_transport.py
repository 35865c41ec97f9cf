"""The pymodbus transport against floorsim over real Modbus TCP and RTU on a pty.

Each failure mode maps to its own exception: timeout, exception code, corrupted frame,
bus gone — never None.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.errors import BusGoneError, BusTimeoutError, FrameError, ModbusExceptionError
from drivers.lines import RtuBus, TcpBus
from drivers.modbus import ModbusTransport
from drivers.profile import Table
from floorsim.sim import FloorSim
from gateway.config.floor import FloorConfig
from tests.conftest import FLOORS
from tests.test_floorsim_support import load, running

pytestmark = pytest.mark.integration

# floorsim answers in the test's own event loop: the floor's 150 ms is too short a wait on
# a loaded machine (a live device timed out). The timeouts expected here cost 1 s each.
SLACK = {"timeout_ms": 1000}


@pytest.fixture
def floor(run_dir: Path) -> FloorConfig:
    return load(FLOORS / "demo.toml")


@pytest.fixture
async def sim(floor: FloorConfig) -> AsyncIterator[FloorSim]:
    async with running(floor) as s:
        yield s


@pytest.fixture
async def tcp(floor: FloorConfig, sim: FloorSim) -> AsyncIterator[ModbusTransport]:
    host, port = sim.tcp_address("lan")
    bus = floor.bus("lan")
    assert isinstance(bus, TcpBus)
    t = ModbusTransport.tcp(bus.model_copy(update={"host": host, "port": port, **SLACK}))
    yield t
    await t.close()


@pytest.fixture
async def rtu(floor: FloorConfig, sim: FloorSim) -> AsyncIterator[ModbusTransport]:
    bus = floor.bus("rs485-a")
    assert isinstance(bus, RtuBus)
    t = ModbusTransport.rtu(bus.model_copy(update=SLACK))
    yield t
    await t.close()


async def test_tcp_read_counters_after_a_press(tcp: ModbusTransport, sim: FloorSim) -> None:
    assert await tcp.read(3, Table.INPUT, 0, 3) == [0, 0, 0]  # 1203/rio counters
    sim.press("1203", "bath", ms=50)
    assert (await tcp.read(3, Table.INPUT, 0, 3))[0] == 1
    bits = await tcp.read(3, Table.DISCRETE, 0, 7)
    assert len(bits) == 7


async def test_rtu_write_and_read_back(rtu: ModbusTransport) -> None:
    await rtu.write(1, Table.HOLDING, 2, [215])  # 1201/tstat setpoint 21.5 °C (FC6)
    assert await rtu.read(1, Table.HOLDING, 2, 1) == [215]
    slot = [0x0123, 0x4567, 0x89AB, 0xCDEF]
    await rtu.write(2, Table.HOLDING, 100, slot)  # 1201/lock slot 0 (FC16)
    assert await rtu.read(2, Table.HOLDING, 100, 4) == slot
    await rtu.write(3, Table.COIL, 4, [1])  # 1201/rio dome lamp (FC5)
    assert (await rtu.read(3, Table.COIL, 0, 6))[4] == 1


async def test_exception_codes(rtu: ModbusTransport) -> None:
    with pytest.raises(ModbusExceptionError) as info:
        await rtu.read(1, Table.HOLDING, 500, 1)  # unmapped
    assert info.value.code == 2
    with pytest.raises(ModbusExceptionError) as info:
        await rtu.write(1, Table.HOLDING, 2, [999])  # setpoint 99.9 °C: out of range
    assert info.value.code == 3
    assert await rtu.read(1, Table.HOLDING, 2, 1)  # the line is still usable


async def test_silent_and_absent_devices_time_out(rtu: ModbusTransport, sim: FloorSim) -> None:
    with pytest.raises(BusTimeoutError):
        await rtu.read(99, Table.INPUT, 0, 1)  # nobody at unit 99: ignored, as on a real bus
    sim.set_fault("1201/rio", "silent")
    with pytest.raises(BusTimeoutError):
        await rtu.read(3, Table.INPUT, 0, 3)
    assert await rtu.read(1, Table.INPUT, 0, 1) is not None  # others still answer
    sim.clear_fault("1201/rio")
    assert len(await rtu.read(3, Table.INPUT, 0, 3)) == 3


async def test_corrupted_crc_is_a_frame_error(rtu: ModbusTransport, sim: FloorSim) -> None:
    sim.set_fault("1201/tstat", "corrupt", 2)
    for _ in range(2):
        with pytest.raises(FrameError):
            await rtu.read(1, Table.INPUT, 0, 4)
    assert len(await rtu.read(1, Table.INPUT, 0, 4)) == 4


async def test_bus_gone(floor: FloorConfig, run_dir: Path) -> None:
    bus = floor.bus("rs485-a")
    assert isinstance(bus, RtuBus)
    t = ModbusTransport.rtu(bus)  # floorsim is not running: no port
    try:
        with pytest.raises(BusGoneError):
            await t.read(1, Table.INPUT, 0, 1)
    finally:
        await t.close()
    await t.close()  # idempotent
    with pytest.raises(BusGoneError):
        await t.read(1, Table.INPUT, 0, 1)
