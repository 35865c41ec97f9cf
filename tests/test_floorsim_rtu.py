"""floorsim over Modbus RTU on pseudo-terminals, driven by a real pymodbus client.

The demo floor: rs485-a at 19200 8N1 holds room 1201 (tstat 1, lock 2, rio 3), 1202
(4, 5, 6), the tstats/locks of panel rooms 1205-1206 (7..10) and the floor panel (40).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from floorsim.modbus import rtu_frame
from floorsim.sim import FloorSim
from tests.conftest import demo_floor_dict
from tests.test_floorsim_support import load, rtu_client, running
from tests.waiting import until

TSTAT, LOCK, RIO, FLOORPANEL = 1, 2, 3, 40


@pytest.fixture
async def sim(write_floor: Callable[..., Path]) -> AsyncIterator[FloorSim]:
    async with running(load(write_floor())) as s:
        yield s


@pytest.fixture
async def rtu(sim: FloorSim) -> AsyncIterator[AsyncModbusSerialClient]:
    async with rtu_client(sim.port("rs485-a")) as client:
        yield client


def bus_counter(sim: FloorSim, key: str, bus: str = "rs485-a") -> int:
    counters: dict[str, int] = sim.status()["buses"][bus]["counters"]
    return counters.get(key, 0)


async def test_reads_follow_the_profiles(rtu: AsyncModbusSerialClient) -> None:
    r = await rtu.read_holding_registers(0, count=7, device_id=TSTAT)
    assert r.registers == [1, 0, 220, 0, 180, 260, 0]  # on, auto, 22.0, auto, 18.0, 26.0
    r = await rtu.read_input_registers(0, count=2, device_id=LOCK)
    assert r.registers == [100, 0]  # battery, log_head
    r = await rtu.read_holding_registers(1, count=1, device_id=LOCK)
    assert r.registers == [32]  # slot_count
    r = await rtu.read_coils(0, count=6, device_id=RIO)
    assert r.bits[:6] == [False] * 6


async def test_exceptions_02_and_03(rtu: AsyncModbusSerialClient) -> None:
    r = await rtu.read_holding_registers(7, count=1, device_id=TSTAT)
    assert r.isError()
    assert r.exception_code == 2
    r = await rtu.read_input_registers(0, count=11, device_id=LOCK)  # input 2..9 unmapped
    assert r.isError()
    assert r.exception_code == 2
    r = await rtu.write_register(2, 351, device_id=TSTAT)  # setpoint 35.1 °C
    assert r.isError()
    assert r.exception_code == 3
    r = await rtu.write_register(2, 215, device_id=TSTAT)
    assert not r.isError()
    r = await rtu.read_holding_registers(100, count=33, device_id=LOCK)  # > 32 registers
    assert r.isError()
    assert r.exception_code == 3


async def test_wrong_unit_is_ignored_as_on_a_real_bus(
    sim: FloorSim, rtu: AsyncModbusSerialClient
) -> None:
    sent = bus_counter(sim, "replies_sent")
    with pytest.raises(ModbusIOException):
        await rtu.read_holding_registers(0, count=1, device_id=99)
    assert bus_counter(sim, "unknown_unit") == 1
    assert bus_counter(sim, "replies_sent") == sent  # not a byte went back
    r = await rtu.read_holding_registers(0, count=1, device_id=TSTAT)
    assert r.registers == [1]


async def test_a_100ms_press_is_counted_while_nobody_polls(
    sim: FloorSim, rtu: AsyncModbusSerialClient
) -> None:
    result = sim.press("1201", "bath", ms=100)
    assert {"ts", "mono_ns"} <= set(result)
    await until(lambda: sim.get("1201/rio", "call_bath") is False)  # the pull is over
    assert time.monotonic_ns() - result["mono_ns"] >= 100_000_000
    r = await rtu.read_discrete_inputs(0, count=7, device_id=RIO)
    assert r.bits[:7] == [False] * 7
    r = await rtu.read_input_registers(0, count=3, device_id=RIO)
    assert r.registers == [1, 0, 0]  # bath_count, staff_count, bed_count
    sim.staff("1201", ms=0)
    sim.press("1201", "bed", ms=0)
    r = await rtu.read_input_registers(0, count=3, device_id=RIO)
    assert r.registers == [1, 1, 1]


async def test_level_input_is_high_while_pressed(
    sim: FloorSim, rtu: AsyncModbusSerialClient
) -> None:
    sim.press("1201", "bed", ms=5000)
    r = await rtu.read_discrete_inputs(0, count=2, device_id=RIO)
    assert r.bits[:2] == [False, True]
    sim.keycard("1201", True)
    sim.window("1201", True)
    r = await rtu.read_discrete_inputs(0, count=7, device_id=RIO)
    assert r.bits[:7] == [False, True, True, False, False, True, False]


async def test_lock_over_the_bus(sim: FloorSim, rtu: AsyncModbusSerialClient) -> None:
    token = 0x0A0B_0C0D_0E0F_1011
    words = [0x0A0B, 0x0C0D, 0x0E0F, 0x1011]
    r = await rtu.write_registers(100 + 4 * 31, words, device_id=LOCK)  # slot 31, one FC16
    assert not r.isError()
    r = await rtu.read_holding_registers(100 + 4 * 31, count=4, device_id=LOCK)
    assert r.registers == words
    assert sim.present_token("1201", token)["result"] == "granted"
    assert sim.present_token("1201", token ^ 1)["result"] == "denied"
    sim.deadbolt("1201", True)
    assert sim.present_token("1201", token)["result"] == "denied_deadbolt"
    r = await rtu.read_discrete_inputs(0, count=3, device_id=LOCK)
    assert r.bits[:3] == [False, True, False]
    r = await rtu.read_input_registers(1, count=1, device_id=LOCK)
    assert r.registers == [3]  # log_head
    r = await rtu.read_input_registers(10, count=18, device_id=LOCK)  # entries 0..2
    assert r.registers[6:] == [1, 1, *words, 2, 2, 0x0A0B, 0x0C0D, 0x0E0F, 0x1010]
    r = await rtu.read_input_registers(10 + 6 * 3, count=2, device_id=LOCK)
    assert r.registers == [3, 3]  # seq 3 sits at k = 3: denied (deadbolt)


async def test_partial_slot_write_never_matches(
    sim: FloorSim, rtu: AsyncModbusSerialClient
) -> None:
    await rtu.write_registers(100, [0, 0, 0, 77], device_id=LOCK)
    assert sim.present_token("1201", 77)["granted"]
    await rtu.write_register(103, 78, device_id=LOCK)  # FC6 into slot 0
    assert not sim.present_token("1201", 78)["granted"]
    assert sim.slots("1201")[0] == {"slot": 0, "token": 78, "whole": False}


async def test_unlock_pulse_reads_back_zero_and_is_logged(
    sim: FloorSim, rtu: AsyncModbusSerialClient
) -> None:
    r = await rtu.write_register(0, 1, device_id=LOCK)
    assert not r.isError()
    r = await rtu.read_holding_registers(0, count=1, device_id=LOCK)
    assert r.registers == [0]
    r = await rtu.read_input_registers(10 + 6, count=6, device_id=LOCK)
    assert r.registers == [1, 4, 0, 0, 0, 0]  # seq 1, remote unlock, token 0
    r = await rtu.write_register(0, 7, device_id=LOCK)
    assert r.isError()
    assert r.exception_code == 3
    assert [e["kind"] for e in sim.events(kind="remote_unlock")] == ["remote_unlock"]


async def test_log_head_wraps_over_the_bus(sim: FloorSim, rtu: AsyncModbusSerialClient) -> None:
    sim.set_input("1201/lock", "log_head", 65535)
    sim.present_token("1201", 9)
    r = await rtu.read_input_registers(1, count=1, device_id=LOCK)
    assert r.registers == [1]
    r = await rtu.read_input_registers(10 + 6, count=2, device_id=LOCK)
    assert r.registers == [1, 2]


async def test_floor_panel_coils_are_written_and_journaled(
    sim: FloorSim, rtu: AsyncModbusSerialClient
) -> None:
    before = time.monotonic_ns()
    r = await rtu.write_coils(0, [True, True], device_id=FLOORPANEL)
    assert not r.isError()
    assert sim.coils("floorpanel") == {
        "floor_sounder": True,
        "floor_call_lamp": True,
        "trouble_lamp": False,  # v1.1
        "trouble_buzzer": False,
    }
    events = sim.events(kind="write", room=None)
    assert [e["detail"]["point"] for e in events] == ["floor_sounder", "floor_call_lamp"]
    assert all(e["mono_ns"] >= before for e in events)  # (ts is the wall clock: it may step)
    r = await rtu.read_coils(0, count=5, device_id=FLOORPANEL)
    assert r.isError()
    assert r.exception_code == 2
    r = await rtu.write_coil(4, True, device_id=RIO)  # dome lamp
    assert sim.coils("1201/rio")["dome_lamp"] is True


# -- faults -------------------------------------------------------------------------------------


async def test_corrupt_crc_on_the_next_n_responses(
    sim: FloorSim, rtu: AsyncModbusSerialClient
) -> None:
    sim.set_fault("1201/tstat", "corrupt", 2)
    for _ in range(2):
        with pytest.raises(ModbusIOException):
            await rtu.read_holding_registers(0, count=1, device_id=TSTAT)
    r = await rtu.read_holding_registers(0, count=1, device_id=TSTAT)
    assert r.registers == [1]
    assert bus_counter(sim, "corrupted") == 2


async def test_silent_device_and_silent_bus(sim: FloorSim, rtu: AsyncModbusSerialClient) -> None:
    sim.set_fault("rs485-a:2", "silent")
    with pytest.raises(ModbusIOException):
        await rtu.read_holding_registers(1, count=1, device_id=LOCK)
    assert (await rtu.read_holding_registers(0, count=1, device_id=TSTAT)).registers == [1]
    sim.clear_fault("1201/lock")
    assert (await rtu.read_holding_registers(1, count=1, device_id=LOCK)).registers == [32]
    sim.set_fault("rs485-a", "silent")
    with pytest.raises(ModbusIOException):
        await rtu.read_holding_registers(0, count=1, device_id=TSTAT)
    sim.clear_fault("rs485-a", "silent")
    assert (await rtu.read_holding_registers(0, count=1, device_id=TSTAT)).registers == [1]


async def test_exception_fault_answers_every_request(
    sim: FloorSim, rtu: AsyncModbusSerialClient
) -> None:
    sim.set_fault("1201/rio", "exception", 4)
    for call in (
        rtu.read_coils(0, count=1, device_id=RIO),
        rtu.read_input_registers(0, count=1, device_id=RIO),
        rtu.write_coil(0, True, device_id=RIO),
    ):
        r = await call
        assert r.isError()
        assert r.exception_code == 4
    assert sim.coils("1201/rio")["light_entry"] is False  # the write was refused


async def test_slow_answers(sim: FloorSim, rtu: AsyncModbusSerialClient) -> None:
    line = sim.lines["rs485-a"]
    sim.set_fault("1201/tstat", "slow", 150)
    t0 = time.perf_counter()
    r = await rtu.read_holding_registers(0, count=1, device_id=TSTAT)
    slow = time.perf_counter() - t0
    assert r.registers == [1]
    # The shortest possible: the 150 ms on top of the frames' wire time (the request's
    # t3.5 before it is not waited for: the line was idle). 2 ms for clock arithmetic;
    # no upper bound, a loaded machine only adds.
    assert slow >= 0.150 + line.period(8, 7) - line.gap_s - 0.002


async def test_a_port_opened_at_the_wrong_baud_hears_nothing(sim: FloorSim) -> None:
    async with rtu_client(sim.port("rs485-a"), baud=9600) as slow_client:
        with pytest.raises(ModbusIOException):
            await slow_client.read_holding_registers(0, count=1, device_id=TSTAT)
    assert bus_counter(sim, "speed_mismatch") == 1


async def test_rtu_rate_never_exceeds_the_wire(sim: FloorSim, rtu: AsyncModbusSerialClient) -> None:
    """10 holding registers at 19200 8N1: at most the theoretical rate (bench/rtu_rate.py)."""
    line = sim.lines["rs485-a"]
    theory = 1 / line.period(8, 25)  # 33 chars x 10 bits / 19200 + 2 x t3.5 + 5 ms
    await rtu.read_holding_registers(100, count=10, device_id=LOCK)  # line warm
    n = 25
    t0 = time.perf_counter()
    for _ in range(n):
        r = await rtu.read_holding_registers(100, count=10, device_id=LOCK)
        assert len(r.registers) == 10
    elapsed = time.perf_counter() - t0
    # The line was idle at t0: the first request's t3.5 is not waited for. 2 ms for clock
    # arithmetic; no upper bound (how close to the wire rate it gets: bench/rtu_rate.py).
    assert elapsed >= n * line.period(8, 25) - line.gap_s - 0.002, (n / elapsed, theory)


async def test_broadcast_write_and_line_noise(sim: FloorSim) -> None:
    with serial.Serial(str(sim.port("rs485-a")), 19200, timeout=0) as port:
        port.write(rtu_frame(0, bytes([6, 0, 6, 0, 1])))  # unit 0: keypad_lock = 1, everyone
        await until(lambda: sim.get("1202/tstat", "keypad_lock") == 1)
        assert all(sim.get(f"{r}/tstat", "keypad_lock") == 1 for r in ("1201", "1205", "1206"))
        port.write(b"\x00\xff\x13\x37")  # noise: discarded at the 3.5-character silence
        await until(lambda: bus_counter(sim, "noise") == 1)
        port.write(rtu_frame(1, bytes([3, 0, 6, 0, 1])))
        await until(partial(_has_bytes, port, 7))
        assert port.read(7) == rtu_frame(1, bytes([3, 2, 0, 1]))  # and nothing before it
    assert bus_counter(sim, "broadcasts") == 1


# -- a device that is not ours, on an even-parity line ----------------------------------------


def _has_bytes(port: serial.Serial, n: int) -> bool:
    return bool(port.in_waiting >= n)


def rdf302_floor() -> dict[str, Any]:
    floor = demo_floor_dict()
    floor["bus"].append(
        {
            "name": "rs485-e",
            "kind": "modbus-rtu",
            "port": "${FLOORGATE_RUN_DIR}/tty-rs485-e",
            "baud": 19200,
            "parity": "E",
        }
    )
    floor["room"].append(
        {
            "id": "1207",
            "devices": [
                {"role": "tstat", "profile": "siemens-rdf302", "bus": "rs485-e", "unit": 1},
                {"role": "rio", "profile": "fg-rio-1", "bus": "rs485-e", "unit": 2},
            ],
        }
    )
    return floor


async def test_siemens_rdf302_on_even_parity(write_floor: Callable[..., Path]) -> None:
    async with running(load(write_floor(rdf302_floor()))) as sim:
        port = sim.port("rs485-e")
        # A pty carries no parity, and pymodbus cannot open one with parity E (glibc
        # reports EINVAL on its second reconfigure, wire.py): the client says N; the
        # simulator models the parity as 11 bits per character on the line.
        assert sim.lines["rs485-e"].char_s == pytest.approx(11 / 19200)
        async with rtu_client(port, parity="N") as rtu:
            r = await rtu.read_input_registers(1002, count=1, device_id=1)
            assert r.registers == [1050]  # 21.0 °C x 50
            r = await rtu.write_register(102, 1125, device_id=1)  # 22.5 °C
            assert not r.isError()
            r = await rtu.write_register(101, 50, device_id=1)  # fan 0/33/66/100 only
            assert r.isError()
            assert r.exception_code == 3
            r = await rtu.read_holding_registers(103, count=1, device_id=1)
            assert r.isError()
            assert r.exception_code == 2
            assert sim.get("1207/tstat", "setpoint") == 22.5
            sim.sensor_fault("1207", True)
            r = await rtu.read_input_registers(1002, count=1, device_id=1)
            assert r.registers == [0xFFFF]  # the profile's "no value"


async def test_plain_pyserial_opens_a_parity_line_again_and_again(
    write_floor: Callable[..., Path],
) -> None:
    async with running(load(write_floor(rdf302_floor()))) as sim:
        for _ in range(3):  # without floorsim's PARODD trick the second open fails
            with serial.Serial(str(sim.port("rs485-e")), 19200, parity="E", timeout=0) as port:
                port.write(rtu_frame(1, bytes([4, 0x03, 0xEA, 0, 1])))  # unit 1, input 1002
                await until(partial(_has_bytes, port, 7))
                reply = port.read(7)
                assert reply[:5] == bytes([1, 4, 2, 0x04, 0x1A])  # 1050


async def test_thermostat_drift_with_the_time_scale(write_floor: Callable[..., Path]) -> None:
    # x1000: 0.1 °C per 10 s becomes 10 °C per real second.
    async with running(load(write_floor()), time_scale=1000.0) as sim:
        sim.set_room_temp("1201", 20.0)
        async with rtu_client(sim.port("rs485-a")) as rtu:

            async def room_temp() -> int:
                return int(
                    (await rtu.read_input_registers(0, count=1, device_id=TSTAT)).registers[0]
                )

            first = await room_temp()
            assert 200 <= first < 220
            async with __import__("asyncio").timeout(5):
                while (now := await room_temp()) != 220:
                    assert now >= first  # toward the setpoint, never past it
            r = await rtu.read_input_registers(2, count=1, device_id=TSTAT)
            assert r.registers == [0]  # fan stops at the setpoint
            await rtu.write_register(0, 0, device_id=TSTAT)  # power off
            sim.set_outside(25.0)
            sim.set_room_temp("1201", 25.0)
            assert await room_temp() == 250
            sim.clock.time_scale = 100_000.0
            assert await room_temp() == 250  # power off: only toward outside, already there
