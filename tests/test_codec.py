"""drivers.codec: raw Modbus words/bits <-> engineering values, per data type."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codec import decode, element_address, encode
from drivers.profile import Point
from gateway.config.load import load_profile, shipped_profiles_dir


def pt(**kw: Any) -> Point:
    base: dict[str, Any] = {"name": "p", "table": "holding", "address": 10}
    base.update(kw)
    return Point.model_validate(base)


def shipped(profile: str, name: str) -> Point:
    prof = load_profile(shipped_profiles_dir() / f"{profile}.toml")
    return next(p for p in prof.point if p.name == name)


# -- the shipped profiles, as devices.md states them ----------------------------------------


def test_tstat_temperatures_are_tenths() -> None:
    room_temp = shipped("fg-tstat-1", "room_temp")
    assert decode(room_temp, [235]) == 23.5
    assert decode(room_temp, [0xFFFF - 49]) == -5.0  # int16 two's complement
    assert encode(room_temp, -5.0) == [0xFFCE]
    setpoint = shipped("fg-tstat-1", "setpoint")
    assert encode(setpoint, 21.5) == [215]
    assert encode(setpoint, 5) == [50]
    assert encode(setpoint, 35) == [350]


@pytest.mark.parametrize("value", [4.9, 35.1, -1])
def test_setpoint_outside_min_max_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="setpoint"):
        encode(shipped("fg-tstat-1", "setpoint"), value)


def test_enum_round_trip_and_unknowns() -> None:
    mode = shipped("fg-tstat-1", "mode")
    assert [decode(mode, [r]) for r in range(4)] == ["auto", "cool", "heat", "fan_only"]
    assert encode(mode, "heat") == [2]
    assert encode(mode, 3) == [3]  # a known raw value is accepted as such
    with pytest.raises(ValueError, match="enum"):
        decode(mode, [7])
    with pytest.raises(ValueError, match="not one of"):
        encode(mode, "dry")


def test_bitfield() -> None:
    status = shipped("fg-tstat-1", "status")
    assert decode(status, [0b10]) == {"sensor_fault": False, "frost_protection": True}
    assert encode(status, {"sensor_fault": True}) == [1]
    with pytest.raises(ValueError, match="unknown bits"):
        encode(status, {"smoke": True})


def test_bits_and_bool_registers() -> None:
    door = shipped("fg-lock-1", "door_open")
    assert decode(door, [1]) is True
    assert encode(door, False) == [0]
    with pytest.raises(ValueError):
        encode(door, 2)
    power = shipped("fg-tstat-1", "power")  # a BOOL role in a u16: int, caller interprets
    assert decode(power, [1]) == 1
    assert encode(power, True) == [1]


def test_lock_slots_are_u64_big_endian_and_indexed() -> None:
    slot = shipped("fg-lock-1", "slot")
    assert element_address(slot, 0) == 100
    assert element_address(slot, 31) == 224
    token = 0x0123_4567_89AB_CDEF
    assert encode(slot, token, 5) == [0x0123, 0x4567, 0x89AB, 0xCDEF]
    assert decode(slot, [0x0123, 0x4567, 0x89AB, 0xCDEF], 5) == token
    with pytest.raises(IndexError):
        element_address(slot, 32)
    log_result = shipped("fg-lock-1", "log_result")
    assert element_address(log_result, 3) == 11 + 18
    assert decode(log_result, [3], 3) == "denied_deadbolt"


def test_siemens_rdf302_scaling_and_no_value() -> None:
    room_temp = shipped("siemens-rdf302", "room_temp")
    assert decode(room_temp, [1151]) == 23.02  # raw = °C x 50
    assert decode(room_temp, [0xFFFF]) is None
    assert encode(room_temp, None) == [0xFFFF]
    assert encode(room_temp, 21.5) == [1075]
    setpoint = shipped("siemens-rdf302", "setpoint")
    assert encode(setpoint, 22.0) == [1100]
    fan = shipped("siemens-rdf302", "fan_speed")
    assert decode(fan, [66]) == "medium"


def test_word_order_little() -> None:
    p = pt(type="u32", word_order="little")
    assert encode(p, 0x0001_0002) == [0x0002, 0x0001]
    assert decode(p, [0x0002, 0x0001]) == 0x0001_0002


def test_offset_and_signed_32() -> None:
    p = pt(type="i32", scale=0.5, offset=-10.0)
    assert encode(p, -10.0) == [0, 0]
    assert encode(p, -10.5) == [0xFFFF, 0xFFFF]
    assert decode(p, [0xFFFF, 0xFFFF]) == -10.5


def test_raw_range_is_enforced() -> None:
    with pytest.raises(ValueError, match="range"):
        encode(pt(type="u16"), 65536)
    with pytest.raises(ValueError, match="range"):
        encode(pt(type="i16"), -32769)
    with pytest.raises(ValueError, match="range"):
        encode(pt(type="u16", scale=0.1), 6553.6)
    with pytest.raises(ValueError, match="integer"):
        encode(pt(type="u16"), 1.5)
    with pytest.raises(ValueError, match="number"):
        encode(pt(type="u16"), "12")
    with pytest.raises(ValueError, match="no value"):
        encode(pt(type="u16", no_value=[0xFFFF]), 0xFFFF)
    with pytest.raises(ValueError, match="sentinel"):
        encode(pt(type="u16"), None)


def test_signed_sentinel_given_unsigned() -> None:
    p = pt(type="i16", scale=0.1, no_value=[0x8000])
    assert decode(p, [0x8000]) is None
    assert decode(p, [0x8001]) == -3276.7


def test_short_raw_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 4"):
        decode(pt(type="u64"), [1, 2])


# -- round trips ---------------------------------------------------------------------------

_TYPES = {
    "u16": (0, 0xFFFF),
    "i16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFF_FFFF),
    "i32": (-0x8000_0000, 0x7FFF_FFFF),
    "u64": (0, 0xFFFF_FFFF_FFFF_FFFF),
}


@pytest.mark.parametrize("type_", list(_TYPES))
@pytest.mark.parametrize("order", ["big", "little"])
@given(data=st.data())
def test_integer_round_trip(type_: str, order: str, data: st.DataObject) -> None:
    lo, hi = _TYPES[type_]
    p = pt(type=type_, word_order=order, count=4)
    value = data.draw(st.integers(lo, hi))
    index = data.draw(st.integers(0, 3))
    words = encode(p, value, index)
    assert len(words) == p.type.width
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(p, words, index) == value


@pytest.mark.parametrize(("type_", "scale"), [("i16", 0.1), ("u16", 0.02), ("i32", 0.001)])
@given(data=st.data())
def test_scaled_round_trip(type_: str, scale: float, data: st.DataObject) -> None:
    lo, hi = _TYPES[type_]
    p = pt(type=type_, scale=scale)
    raw = data.draw(st.integers(lo, hi))
    value = decode(p, encode(p, raw * scale))
    assert isinstance(value, float)
    assert encode(p, value) == encode(p, raw * scale)
    assert abs(value - raw * scale) < scale / 2


@given(st.integers(0, 0xFFFF))
def test_every_raw_word_decodes_and_reencodes(raw: int) -> None:
    p = pt(type="i16", scale=0.1)
    value = decode(p, [raw])
    assert encode(p, value) == [raw]
