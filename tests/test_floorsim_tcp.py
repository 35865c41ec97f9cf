"""floorsim over Modbus TCP: one listener per bus serving all its unit ids (demo: 1203-1204)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from floorsim.sim import FloorSim
from tests.test_floorsim_support import free_port, load, running, tcp_client

TSTAT, LOCK, RIO = 4, 5, 6  # room 1204 on the "lan" bus


@pytest.fixture
async def sim(write_floor: Callable[..., Path]) -> AsyncIterator[FloorSim]:
    async with running(load(write_floor())) as s:
        yield s


@pytest.fixture
async def tcp(sim: FloorSim) -> AsyncIterator[AsyncModbusTcpClient]:
    async with tcp_client(sim.tcp_address("lan")) as client:
        yield client


async def test_floor_port_comes_from_the_environment(
    write_floor: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("FLOORGATE_MODBUS_PORT", str(port))
    async with FloorSim(load(write_floor())) as sim:
        assert sim.tcp_address("lan") == ("127.0.0.1", port)
        async with tcp_client(("127.0.0.1", port)) as client:
            r = await client.read_holding_registers(1, count=1, device_id=LOCK)
            assert r.registers == [32]
    with pytest.raises(OSError):  # the listener is gone
        await asyncio.open_connection("127.0.0.1", port)


async def test_room_devices_and_exceptions(sim: FloorSim, tcp: AsyncModbusTcpClient) -> None:
    sim.press("1204", "bath", ms=50)
    r = await tcp.read_input_registers(0, count=3, device_id=RIO)
    assert r.registers == [1, 0, 0]
    r = await tcp.read_holding_registers(0, count=7, device_id=TSTAT)
    assert r.registers == [1, 0, 220, 0, 180, 260, 0]
    r = await tcp.write_register(2, 20, device_id=TSTAT)  # 2.0 °C
    assert r.isError()
    assert r.exception_code == 3
    r = await tcp.read_coils(6, count=1, device_id=RIO)
    assert r.isError()
    assert r.exception_code == 2


async def test_unknown_unit_answers_gateway_target_failed(tcp: AsyncModbusTcpClient) -> None:
    r = await tcp.read_holding_registers(0, count=1, device_id=99)
    assert r.isError()
    assert r.exception_code == 0x0B


async def test_concurrent_connections(sim: FloorSim) -> None:
    async def reader(unit: int) -> list[int]:
        async with tcp_client(sim.tcp_address("lan")) as client:
            out = []
            for _ in range(20):
                r = await client.read_holding_registers(1, count=1, device_id=unit)
                out.append(r.registers[0])
            return out

    results = await asyncio.gather(*(reader(u) for u in (2, 5, 2, 5)))
    assert results == [[32] * 20] * 4


async def test_faults_on_tcp(sim: FloorSim, tcp: AsyncModbusTcpClient) -> None:
    sim.set_fault("1204/tstat", "silent")
    with pytest.raises(ModbusIOException):
        await tcp.read_holding_registers(0, count=1, device_id=TSTAT)
    sim.clear_fault("1204/tstat")
    sim.set_fault("1204/tstat", "corrupt", 1)  # no CRC on TCP: a reply that does not match
    with pytest.raises(ModbusIOException):
        await tcp.read_holding_registers(0, count=1, device_id=TSTAT)
    assert (await tcp.read_holding_registers(0, count=1, device_id=TSTAT)).registers == [1]
    sim.set_fault("lan", "exception", 6)
    r = await tcp.read_holding_registers(0, count=1, device_id=TSTAT)
    assert r.isError()
    assert r.exception_code == 6
    sim.clear_fault("lan")
    sim.set_fault("1204/tstat", "slow", 120)
    t0 = time.perf_counter()
    assert (await tcp.read_holding_registers(0, count=1, device_id=TSTAT)).registers == [1]
    assert time.perf_counter() - t0 >= 0.12 - 0.002  # the answer waited; no upper bound


async def test_a_stuck_coil_and_a_refused_address(sim: FloorSim, tcp: AsyncModbusTcpClient) -> None:
    sim.set_fault("1204/rio", "stuck", 4)  # the dome lamp's coil
    assert not (await tcp.write_coil(4, True, device_id=RIO)).isError()  # acknowledged…
    assert (await tcp.read_coils(4, count=2, device_id=RIO)).bits[:2] == [False, False]  # …not set
    assert not (await tcp.write_coils(4, [True, True], device_id=RIO)).isError()
    assert (await tcp.read_coils(4, count=2, device_id=RIO)).bits[:2] == [False, True]
    sim.clear_fault("1204/rio", "stuck")
    assert not (await tcp.write_coil(4, True, device_id=RIO)).isError()
    assert (await tcp.read_coils(4, count=1, device_id=RIO)).bits[0] is True
    sim.set_fault("1204/tstat", "refuse", 1)
    r = await tcp.read_holding_registers(0, count=2, device_id=TSTAT)
    assert r.isError()
    assert r.exception_code == 2
    assert (await tcp.read_holding_registers(0, count=1, device_id=TSTAT)).registers == [1]
    assert sim.faults.snapshot() == {"lan:4": {"refuse": 1}}
