"""floorsim v1.1: the motion sensor, run_minutes, the explicit fan-coil and outside
temperature, a v1 room I/O without motion, and the scripted guest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.profile import Table
from floorsim.devices import RoomIO, Thermostat, connect_room, make_device, v1_profile
from floorsim.journal import Journal, ManualClock
from floorsim.regmap import ModbusError
from floorsim.sim import FloorSim
from floorsim.thermal import HYSTERESIS_C, LEAK_PER_S, OUTSIDE_C
from gateway.config.load import load_floor, load_profile, shipped_profiles_dir
from tests.waiting import until


def device(profile: str, clock: ManualClock, *, v1: bool = False) -> object:
    prof = load_profile(shipped_profiles_dir() / f"{profile}.toml")
    if v1:
        prof = v1_profile(prof)
    return make_device(
        prof, name=f"x/{prof.device}", room="x", bus="b", unit=1, clock=clock, journal=Journal()
    )


def tstat(clock: ManualClock) -> Thermostat:
    dev = device("fg-tstat-1", clock)
    assert isinstance(dev, Thermostat)
    return dev


def rio(clock: ManualClock, *, v1: bool = False) -> RoomIO:
    dev = device("fg-rio-1", clock, v1=v1)
    assert isinstance(dev, RoomIO)
    return dev


def test_cooling_runs_above_setpoint_plus_half_and_stops_at_setpoint() -> None:
    clock = ManualClock(0.0)
    t = tstat(clock)
    t.write(Table.HOLDING, 1, [1], multiple=False)  # mode cool: the heating fan stops
    t.set_room_temp(22.4)  # within the band: the fan does not start
    assert t.get("fan_state") == 0
    # Outside 30 °C: the room warms until setpoint + 0.5, then the fan starts.
    seconds = 0
    while t.get("fan_state") == 0:
        clock.t += 1
        seconds += 1
        assert seconds < 600
    assert t.room_temp == pytest.approx(22.0 + HYSTERESIS_C, abs=0.01)
    expected = (0.1 / (8 * LEAK_PER_S * 60)) * 60 * 0.9  # about 0.1 °C per 60 s: ~60 s here
    assert seconds > expected * 0.5
    while t.get("fan_state") > 0:
        clock.t += 1
    assert t.room_temp == pytest.approx(22.0, abs=0.02)  # stops at the setpoint


def test_heat_mirrors_cool_and_fan_only_always_runs() -> None:
    clock = ManualClock(0.0)
    t = tstat(clock)
    t.set_outside(10.0)
    t.write(Table.HOLDING, 1, [2], multiple=False)  # heat
    t.set_room_temp(22.0)  # the fan that was heating from 21.0 stops here
    t.set_room_temp(21.6)
    assert t.get("fan_state") == 0  # inside the band below the setpoint
    clock.t += 3600
    # It cycles between 21.5 and 22.0 and never cools.
    assert 21.4 <= t.room_temp <= 22.01
    t.write(Table.HOLDING, 1, [3], multiple=False)  # fan only
    assert t.get("fan_state") > 0
    clock.t += 3600
    assert t.get("fan_state") > 0
    assert t.room_temp < 21.5  # no coil: the room drifts toward the outside


def test_power_off_drifts_toward_outside_and_run_minutes_count() -> None:
    clock = ManualClock(0.0)
    t = tstat(clock)
    t.set_room_temp(10.0)
    t.write(Table.HOLDING, 2, [300], multiple=False)  # 30 °C: heating for 2000 s
    clock.t += 1200
    assert t.get("run_minutes") == 20
    t.write(Table.HOLDING, 0, [0], multiple=False)  # power off
    before = t.room_temp
    clock.t += 60
    assert t.get("fan_state") == 0
    assert t.get("run_minutes") == 20
    drift = t.room_temp - before
    assert drift == pytest.approx((OUTSIDE_C - before) * LEAK_PER_S * 60, rel=0.05)


def test_an_open_window_beats_the_coil() -> None:
    clock = ManualClock(0.0)
    t, r = tstat(clock), rio(clock)
    connect_room([t, r])
    t.write(Table.HOLDING, 1, [1], multiple=False)  # cool at 22
    t.set_room_temp(22.0)
    r.set_input("window_open", True)
    clock.t += 4 * 3600
    assert t.get("fan_state") > 0  # it never reaches the setpoint
    assert t.room_temp > 22.5
    r.set_input("window_open", False)
    clock.t += 3600
    assert t.room_temp == pytest.approx(22.25, abs=0.3)


def test_motion_holds_30_s_and_counts_each_detection() -> None:
    clock = ManualClock(0.0)
    r = rio(clock)
    assert r.read(Table.DISCRETE, 7, 1) == [0]
    r.motion()
    assert r.read(Table.DISCRETE, 7, 1) == [1]
    assert r.read(Table.INPUT, 3, 1) == [1]
    clock.t += 29
    assert r.get("motion") is True
    clock.t += 1
    assert r.get("motion") is False
    r.regs.put("motion_count", 65535)
    r.motion()
    assert r.get("motion_count") == 0  # wrapping 65535 -> 0


def test_an_occupant_is_detected_while_awake() -> None:
    clock = ManualClock(0.0)
    r = rio(clock)
    r.occupant(True)
    clock.t += 300
    count = r.get("motion_count")
    assert isinstance(count, int)
    assert count >= 6
    r.occupant(False)  # asleep
    clock.t += 60
    assert r.get("motion") is False
    assert r.get("motion_count") == count


def test_a_v1_room_io_answers_02_where_motion_would_be() -> None:
    clock = ManualClock(0.0)
    r = rio(clock, v1=True)
    assert not r.has_motion
    for table, address in ((Table.DISCRETE, 7), (Table.INPUT, 3)):
        with pytest.raises(ModbusError) as info:
            r.read(table, address, 1)
        assert info.value.code == 2
    assert r.read(Table.DISCRETE, 0, 7) == [0] * 7  # the v1 inputs are all there
    with pytest.raises(ValueError, match="no motion sensor"):
        r.motion()


async def test_scripted_guest_in_out_and_v1_room(write_floor: Callable[..., Path]) -> None:
    config, _ = load_floor(write_floor())
    sim = FloorSim(config, time_scale=100.0, v1_rio_rooms=["1202"])
    async with sim:
        sim.guest("1201", "in")
        assert sim.get("1201/lock", "door_open") is True
        await until(lambda: sim.get("1201/lock", "door_open") is False)
        assert sim.get("1201/rio", "keycard") is True
        assert sim.get("1201/rio", "motion_count") >= 1
        sim.guest("1201", "out")
        assert sim.get("1201/rio", "keycard") is False
        await until(lambda: sim.get("1201/lock", "door_open") is False)
        sim.guest("1202", "in")  # a v1 module: key card only
        await until(lambda: sim.get("1202/rio", "keycard") is True)
        with pytest.raises(ValueError, match="no motion sensor"):
            sim.motion("1202")
        assert sim.set_outside(12.0)["outside_c"] == 12.0
        assert sim._tstat("1201").outside_c == 12.0
