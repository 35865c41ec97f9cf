"""floorsim device models, without a bus: tables from profiles, behaviour by role."""

from __future__ import annotations

import pytest

from drivers.profile import Table
from floorsim.devices import Lock, RoomIO, SimDevice, Thermostat, make_device
from floorsim.journal import Journal, ManualClock, SimClock
from floorsim.modbus import handle_pdu
from floorsim.regmap import ModbusError
from gateway.config.load import load_profile, shipped_profiles_dir


def build(profile: str, scale: float = 1.0) -> SimDevice:
    prof = load_profile(shipped_profiles_dir() / f"{profile}.toml")
    return make_device(
        prof,
        name=f"x/{profile}",
        room="x",
        bus="b",
        unit=1,
        clock=SimClock(scale),
        journal=Journal(),
    )


def lock() -> Lock:
    dev = build("fg-lock-1")
    assert isinstance(dev, Lock)
    return dev


def test_unmapped_read_is_02_and_write_checks_are_02_03() -> None:
    dev = build("fg-lock-1")
    assert dev.read(Table.INPUT, 0, 2) == [100, 0]
    with pytest.raises(ModbusError) as info:
        dev.read(Table.INPUT, 0, 3)  # input 2..9 are unmapped
    assert info.value.code == 2
    with pytest.raises(ModbusError) as info:
        dev.write(Table.HOLDING, 1, [40], multiple=False)  # slot_count is read-only
    assert info.value.code == 2
    with pytest.raises(ModbusError) as info:
        dev.write(Table.HOLDING, 0, [2], multiple=False)  # unlock takes 0 or 1
    assert info.value.code == 3


def test_pdu_level_limits() -> None:
    dev = build("fg-lock-1")
    assert handle_pdu(dev, bytes([3, 0, 100, 0, 32]))[:2] == bytes([3, 64])
    assert handle_pdu(dev, bytes([3, 0, 100, 0, 33])) == bytes([0x83, 3])  # > 32 registers
    assert handle_pdu(dev, bytes([2, 0, 0, 0, 65])) == bytes([0x82, 3])  # > 64 bits
    assert handle_pdu(dev, bytes([0x2B, 0x0E, 1, 0])) == bytes([0xAB, 1])  # unknown function
    assert handle_pdu(dev, bytes([5, 0, 0, 0x12, 0x34])) == bytes([0x85, 3])  # not FF00/0000
    assert handle_pdu(dev, bytes([5, 0, 0, 0xFF, 0])) == bytes([0x85, 2])  # no coils at all


def test_tstat_setpoint_range_and_bool_registers() -> None:
    dev = build("fg-tstat-1")
    dev.write(Table.HOLDING, 2, [50], multiple=False)
    dev.write(Table.HOLDING, 2, [350], multiple=False)
    for bad in (49, 351, 0xFFFF):
        with pytest.raises(ModbusError) as info:
            dev.write(Table.HOLDING, 2, [bad], multiple=False)
        assert info.value.code == 3
    with pytest.raises(ModbusError) as info:
        dev.write(Table.HOLDING, 0, [2], multiple=False)  # power: 0 off, 1 on
    assert info.value.code == 3
    with pytest.raises(ModbusError) as info:
        dev.write(Table.HOLDING, 1, [4], multiple=False)  # mode: 0..3
    assert info.value.code == 3
    # A refused FC16 changes nothing, not even its valid part.
    with pytest.raises(ModbusError):
        dev.write(Table.HOLDING, 0, [0, 2, 999], multiple=True)
    assert dev.read(Table.HOLDING, 0, 3) == [1, 0, 350]


def test_thermostat_drifts_toward_setpoint_with_power_on() -> None:
    clock = ManualClock(1000.0)
    dev = make_device(
        load_profile(shipped_profiles_dir() / "fg-tstat-1.toml"),
        name="x/tstat", room="x", bus="b", unit=1, clock=clock, journal=Journal(),
    )  # fmt: skip
    assert isinstance(dev, Thermostat)
    dev.set_room_temp(20.0)  # auto, setpoint 22.0: heating
    clock.t += 10.0
    assert dev.get("room_temp") == pytest.approx(20.1)  # 0.1 °C per 10 s
    dev.master_write("power", 0)
    dev.set_outside(20.1)
    clock.t += 100.0
    assert dev.get("room_temp") == pytest.approx(20.1)  # power off: only toward outside
    assert dev.get("fan_state") == 0


def test_keypad_band_and_lock() -> None:
    dev = build("fg-tstat-1")
    assert isinstance(dev, Thermostat)
    assert dev.keypad(30.0)["setpoint"] == 26.0  # clamped to setpoint_max
    assert dev.keypad(10.0)["setpoint"] == 18.0
    assert dev.keypad(21.5)["setpoint"] == 21.5
    dev.regs.put("keypad_lock", 1)
    result = dev.keypad(24.0)
    assert (result["accepted"], result["setpoint"]) == (False, 21.5)


def test_siemens_rdf302_from_its_profile() -> None:
    dev = build("siemens-rdf302")
    assert isinstance(dev, Thermostat)
    assert dev.read(Table.INPUT, 1002, 1) == [1050]  # 21.0 °C x 50
    assert dev.read(Table.HOLDING, 100, 1) == [1]  # operating_mode starts at a valid name
    dev.write(Table.HOLDING, 102, [1100], multiple=False)  # 22.0 °C
    with pytest.raises(ModbusError) as info:
        dev.write(Table.HOLDING, 101, [50], multiple=False)  # fan: 0/33/66/100 only
    assert info.value.code == 3
    with pytest.raises(ModbusError) as info:
        dev.read(Table.HOLDING, 103, 1)
    assert info.value.code == 2
    dev.set_sensor_fault(True)
    assert dev.read(Table.INPUT, 1002, 1) == [0xFFFF]  # the profile's "no value"
    assert dev.get("room_temp") is None


def test_lock_slots_matching_deadbolt_and_log() -> None:
    dev = lock()
    assert dev.read(Table.HOLDING, 1, 1) == [32]
    token = 0x1122_3344_5566_7788
    dev.write(Table.HOLDING, 100 + 4 * 7, [0x1122, 0x3344, 0x5566, 0x7788], multiple=True)
    assert dev.present(token)["result"] == "granted"
    assert dev.released
    assert dev.present(token + 1)["result"] == "denied"
    assert dev.present(0)["result"] == "denied"  # token 0 never matches an empty slot
    dev.set_input("deadbolt", True)
    assert dev.present(token)["result"] == "denied_deadbolt"
    entries = dev.log_entries()
    assert [(e["seq"], e["result"]) for e in entries] == [
        (4, "denied_deadbolt"),
        (3, "denied"),
        (2, "denied"),
        (1, "granted"),
    ]
    assert dev.read(Table.INPUT, 10 + 6 * 1, 6) == [1, 1, 0x1122, 0x3344, 0x5566, 0x7788]


def test_partially_written_slot_never_matches() -> None:
    dev = lock()
    words = [0, 0, 0, 42]
    dev.write(Table.HOLDING, 100, words, multiple=True)
    dev.write(Table.HOLDING, 103, [42], multiple=False)  # FC6 into a slot
    assert dev.present(42)["result"] == "denied"
    dev.write(Table.HOLDING, 102, [0, 42, 0, 0], multiple=True)  # straddles slots 0 and 1
    assert dev.slots_whole()[:2] == [False, False]
    assert dev.present(42)["result"] == "denied"
    dev.write(Table.HOLDING, 100, words, multiple=True)
    assert dev.present(42)["result"] == "granted"


def test_log_head_wraps_65535_to_1() -> None:
    dev = lock()
    dev.set_input("log_head", 65534)
    assert dev.present(5)["log_seq"] == 65535
    assert dev.present(5)["log_seq"] == 1  # never 0 again
    assert dev.read(Table.INPUT, 10 + 6 * 15, 2) == [65535, 2]  # 65535 mod 16 = 15
    assert dev.read(Table.INPUT, 10 + 6 * 1, 2) == [1, 2]
    assert [e["seq"] for e in dev.log_entries()] == [1, 65535]


def test_remote_unlock_pulse_reads_back_zero() -> None:
    dev = lock()
    dev.write(Table.HOLDING, 0, [1], multiple=False)
    assert dev.read(Table.HOLDING, 0, 1) == [0]
    assert dev.released
    assert dev.log_entries()[0] == {"seq": 1, "result": "remote_unlock", "token": 0}
    dev.write(Table.HOLDING, 0, [0], multiple=False)  # 0 is accepted and does nothing
    assert dev.get("log_head") == 1


def test_counters_count_every_press_and_wrap() -> None:
    dev = build("fg-rio-1")
    assert isinstance(dev, RoomIO)
    dev.set_input("bath_count", 65535)
    dev.press("bath", 0)
    dev.press("bed", 0)
    dev.staff(0)
    assert dev.read(Table.INPUT, 0, 3) == [0, 1, 1]
    assert dev.read(Table.DISCRETE, 0, 7) == [0] * 7  # zero-length presses are over
    with pytest.raises(ValueError, match="call point"):
        dev.press("kitchen", 10)


def test_coil_writes_are_journaled_and_power_cycle_keeps_counters() -> None:
    dev = build("fg-rio-1")
    dev.write(Table.COIL, 4, [1, 1], multiple=True)
    writes = dev.journal.query(kind="write")
    assert [(e.detail["point"], e.detail["value"]) for e in writes] == [
        ("dome_lamp", True),
        ("reassure_lamp", True),
    ]
    assert isinstance(dev, RoomIO)
    dev.press("bath", 0)
    dev.power_cycle()
    assert dev.read(Table.COIL, 0, 6) == [0] * 6
    assert dev.read(Table.INPUT, 0, 1) == [1]
