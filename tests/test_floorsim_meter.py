"""floorsim's energy meter: energy_kwh counts the room's fan-coil, served as its profile says.

The floor file cannot name a meter yet (the gateway does not know the kind), so these
tests build the room's devices the way FloorSim does (make_device, then connect_room)
and serve them on a real Modbus TCP listener.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Sequence
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.codec import Value, decode, encode
from drivers.profile import Point, Profile, Table
from floorsim.devices import Meter, SimDevice, Thermostat, connect_room, make_device
from floorsim.faults import FaultBook
from floorsim.journal import Journal, SimClock
from floorsim.meter import RUN_W, STANDBY_W
from floorsim.modbus import ModbusBus, TcpServer
from floorsim.regmap import ModbusError
from tests.conftest import REPO
from tests.test_floorsim_support import tcp_client

TSTAT, METER = 4, 7
J_PER_KWH = 3.6e6


class ManualClock(SimClock):
    """Device time that moves only when the test moves it."""

    def __init__(self) -> None:
        super().__init__(1.0)
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def shipped(name: str) -> Profile:
    path = REPO / "config" / "profiles" / f"{name}.toml"
    return Profile.model_validate(tomllib.loads(path.read_text()))


def place(profile: Profile, unit: int, clock: SimClock) -> SimDevice:
    return make_device(
        profile,
        name=f"1204/{profile.device}",
        room="1204",
        bus="lan",
        unit=unit,
        clock=clock,
        journal=Journal(),
    )


def room(clock: SimClock, meter: str | Profile = "eastron-sdm120") -> tuple[Thermostat, Meter]:
    """A room with fg-tstat-1 and a meter, wired as FloorSim wires a room."""
    tstat = place(shipped("fg-tstat-1"), TSTAT, clock)
    m = place(shipped(meter) if isinstance(meter, str) else meter, METER, clock)
    assert isinstance(tstat, Thermostat)
    assert isinstance(m, Meter)
    connect_room([tstat, m])
    return tstat, m


def value(dev: SimDevice, role: str) -> Value:
    """A role decoded from the device's raw registers, as a master would read it."""
    p = dev.profile.by_role()[role]
    return decode(p, dev.read(p.table, p.address, p.type.width))


def kwh(watts: float, seconds: float) -> float:
    return watts * seconds / J_PER_KWH


# -- the device, on a clock the test moves -------------------------------------------------


def test_energy_counts_while_the_fan_runs_and_standby_after_power_off() -> None:
    clock = ManualClock()
    tstat, meter = room(clock)
    tstat.set_room_temp(10.0)
    tstat.write(Table.HOLDING, 2, [300], multiple=False)  # setpoint 30.0 °C: fan at stage 3
    assert tstat.get("fan_state") == 3
    assert value(meter, "power_w") == RUN_W + STANDBY_W
    assert value(meter, "energy_kwh") == 0.0
    clock.t += 360
    expected = kwh(RUN_W + STANDBY_W, 360)
    assert meter.kwh == pytest.approx(expected)
    assert value(meter, "energy_kwh") == pytest.approx(expected, rel=1e-6)  # float32
    tstat.write(Table.HOLDING, 0, [0], multiple=False)  # power off: the fan stops now
    clock.t += 3600  # nobody reads in between
    assert value(meter, "power_w") == STANDBY_W
    expected += kwh(STANDBY_W, 3600)
    assert value(meter, "energy_kwh") == pytest.approx(expected, rel=1e-6)
    assert tstat.get("fan_state") == 0


def test_a_fan_that_stops_at_the_setpoint_stops_counting_then() -> None:
    clock = ManualClock()
    tstat, meter = room(clock)  # 21.0 °C, setpoint 22.0: heating stops at 22.0, after 100 s
    tstat.set_outside(22.0)  # and the room then stays there
    assert tstat.fan_speed > 0
    clock.t += 1000  # read once, long after: the stop is dated when it happened
    assert value(meter, "energy_kwh") == pytest.approx(
        kwh(RUN_W + STANDBY_W, 100) + kwh(STANDBY_W, 900), rel=1e-6
    )
    assert value(meter, "power_w") == STANDBY_W


def test_a_meter_without_a_thermostat_draws_standby() -> None:
    clock = ManualClock()
    meter = place(shipped("eastron-sdm120"), METER, clock)
    assert isinstance(meter, Meter)
    connect_room([meter])
    clock.t += 3600
    assert meter.snapshot() == {
        "energy_kwh": pytest.approx(kwh(STANDBY_W, 3600)),
        "power_w": STANDBY_W,
        "voltage": 0.0,  # points without a role are not simulated
        "current": 0.0,
        "frequency": 0.0,
    }


def test_the_total_can_be_set_and_float32_holds_it() -> None:
    clock = ManualClock()
    _, meter = room(clock)
    meter.set_input("energy_kwh", 100_000.0)
    assert value(meter, "energy_kwh") == 100_000.0
    with pytest.raises(ValueError, match=">= 0"):
        meter.set_input("energy", -1.0)
    meter.set_input("voltage", 231.5)  # any other input, as for every device
    assert meter.get("voltage") == 231.5


def meter_profile(points: Sequence[dict[str, Any]]) -> Profile:
    return Profile.model_validate(
        {"profile": {"name": "acme-m1", "device": "meter"}, "point": points}
    )


def test_any_meter_profile_by_role() -> None:
    prof = meter_profile(
        [
            {"name": "w", "role": "power_w", "table": "holding", "address": 0, "type": "i16"},
            {
                "name": "e",
                "role": "energy_kwh",
                "table": "input",
                "address": 100,
                "type": "u32",
                "word_order": "little",
                "scale": 0.01,
            },
        ]
    )
    clock = ManualClock()
    tstat, meter = room(clock, prof)
    tstat.set_room_temp(0.0)
    tstat.write(Table.HOLDING, 2, [350], multiple=False)
    clock.t += 1800
    assert meter.read(Table.HOLDING, 0, 1) == [805]
    assert meter.read(Table.INPUT, 100, 2) == [40, 0]  # 0.4025 kWh, truncated to 0.01
    meter.set_input("energy_kwh", 12345.678)
    assert meter.read(Table.INPUT, 100, 2) == [1234567 & 0xFFFF, 1234567 >> 16]


def test_a_thermostat_with_float_registers() -> None:
    prof = Profile.model_validate(
        {
            "profile": {"name": "acme-t1", "device": "tstat"},
            "point": [
                {"name": "room_temp", "role": "room_temp", "table": "input", "address": 0,
                 "type": "f32"},
                {"name": "setpoint", "role": "setpoint", "table": "holding", "address": 0,
                 "type": "f32", "word_order": "little", "min": 5.0, "max": 35.0,
                 "access": "rw"},
            ],
        }
    )  # fmt: skip
    dev = place(prof, 1, ManualClock())
    assert isinstance(dev, Thermostat)
    dev.set_room_temp(-5.5)
    assert value(dev, "room_temp") == -5.5
    sp = prof.by_role()["setpoint"]
    dev.write(Table.HOLDING, 0, encode(sp, 23.5), multiple=True)
    assert dev.get("setpoint") == 23.5
    with pytest.raises(ModbusError) as info:
        dev.write(Table.HOLDING, 0, [0, 0x4220], multiple=True)  # 40.0 °C: above max
    assert info.value.code == 3


# -- served over Modbus TCP ----------------------------------------------------------------


async def read_f32(client: AsyncModbusTcpClient, point: Point) -> float:
    r = await client.read_input_registers(point.address, count=2, device_id=METER)
    assert not r.isError(), r
    got = decode(point, r.registers)
    assert isinstance(got, float)
    return got


async def timed_read(
    client: AsyncModbusTcpClient, point: Point, clock: SimClock
) -> tuple[float, float, float]:
    """(device time before, reading, device time after)."""
    before = clock.now()
    got = await read_f32(client, point)
    return before, got, clock.now()


def within(
    joules: float, watts: float, a: tuple[float, float, float], b: tuple[float, float, float]
) -> bool:
    """Energy between reads a and b fits ``watts`` over the time they bracket (float32 aside)."""
    slack = 1e-6 * b[1] * J_PER_KWH
    return watts * (b[0] - a[2]) - slack <= joules <= watts * (b[2] - a[0]) + slack


async def test_meter_served_over_modbus_tcp_follows_the_rooms_thermostat() -> None:
    clock = SimClock(300.0)  # 1 real second = 5 device minutes
    tstat, meter = room(clock)
    bus = ModbusBus("lan", {TSTAT: tstat, METER: meter}, FaultBook(), Journal(), tcp=True)
    server = TcpServer(bus, "127.0.0.1", 0)
    await server.start()
    energy, power = (meter.profile.by_role()[r] for r in ("energy_kwh", "power_w"))
    try:
        async with tcp_client(server.address) as client:
            tstat.set_room_temp(0.0)  # 35 °C away: the fan runs for about 12 real seconds
            assert not (await client.write_register(2, 350, device_id=TSTAT)).isError()
            fan = await client.read_input_registers(2, count=1, device_id=TSTAT)
            assert fan.registers == [3]
            assert await read_f32(client, power) == RUN_W + STANDBY_W

            a = await timed_read(client, energy, clock)
            async with asyncio.timeout(5):
                while (b := await timed_read(client, energy, clock))[1] < a[1] + 0.01:
                    await asyncio.sleep(0.01)
            assert within((b[1] - a[1]) * J_PER_KWH, RUN_W + STANDBY_W, a, b)

            assert not (await client.write_register(0, 0, device_id=TSTAT)).isError()  # off
            fan = await client.read_input_registers(2, count=1, device_id=TSTAT)
            assert fan.registers == [0]
            assert await read_f32(client, power) == STANDBY_W
            c = await timed_read(client, energy, clock)
            async with asyncio.timeout(5):
                while clock.now() < c[2] + 60:  # a device minute with the fan off
                    await asyncio.sleep(0.01)
            d = await timed_read(client, energy, clock)
            assert d[1] > c[1]  # standby still counts ...
            assert within((d[1] - c[1]) * J_PER_KWH, STANDBY_W, c, d)  # ... and only standby
    finally:
        await server.stop()
