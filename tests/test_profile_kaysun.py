"""The Kaysun KC-FCD2-M profile: its register map as data, served by floorsim as a
thermostat, and the energy policy's setpoints fitted to its whole degrees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from drivers.codec import decode, encode
from drivers.profile import Table
from floorsim.devices import Thermostat, make_device
from floorsim.journal import Journal, ManualClock
from gateway.config.load import load_floor, load_profile, shipped_profiles_dir
from tests.conftest import demo_floor_dict
from tests.grms_harness import RoomDriver


def test_the_map_of_the_manual() -> None:
    prof = load_profile(shipped_profiles_dir() / "kaysun-kc-fcd2-m.toml")
    by_role = prof.by_role()
    assert {r: (p.table, p.address) for r, p in by_role.items()} == {
        "room_temp": (Table.HOLDING, 2),
        "power": (Table.HOLDING, 3),
        "setpoint": (Table.HOLDING, 4),
        "mode": (Table.HOLDING, 5),
        "fan_speed": (Table.HOLDING, 6),
    }
    assert (prof.serial.baud, prof.serial.parity) == (9600, "N")
    assert encode(by_role["setpoint"], 24.0) == [24]
    assert decode(by_role["mode"], [0]) == "fan_only"
    assert decode(by_role["fan_speed"], [4]) == "auto"
    assert decode(by_role["room_temp"], [0xFFFE]) == -2


def test_floorsim_serves_it_as_a_thermostat() -> None:
    clock = ManualClock(0.0)
    prof = load_profile(shipped_profiles_dir() / "kaysun-kc-fcd2-m.toml")
    dev = make_device(
        prof, name="x/tstat", room="x", bus="b", unit=1, clock=clock, journal=Journal()
    )
    assert isinstance(dev, Thermostat)
    dev.write(Table.HOLDING, 4, [27], multiple=False)
    assert dev.get("setpoint") == 27
    assert dev.read(Table.HOLDING, 2, 5)[1:3] == [1, 27]  # power on, the setpoint written


def test_the_policy_fits_its_setpoints_to_whole_degrees(
    write_floor: Callable[..., Path],
) -> None:
    data = demo_floor_dict()
    data["room"][0]["devices"][0]["profile"] = "kaysun-kc-fcd2-m"
    data["bus"][0]["baud"] = 9600
    config, _ = load_floor(write_floor(data))
    room = RoomDriver(config.layout())
    assert room.mode == "unsold"
    start = {
        (w.point, w.value)  # type: ignore[attr-defined]
        for w in room.initial
        if getattr(w, "device", None) is not None
        and w.device.role == "tstat"  # type: ignore[attr-defined]
        and w.device.room == "1201"  # type: ignore[attr-defined]
    }
    assert ("setpoint", 27.0) in start  # 26.7 rounded toward saving
    room.see("tstat", "mode", "heat")
    room.checkin()
    room.take()
    room.checkout()
    room.later(600)
    assert room.writes("tstat")["setpoint"] == 17.0  # 15.6 is below what it accepts
