"""f32 points: IEEE 754 single precision in two registers, both word orders, NaN as no value."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.codec import decode, encode
from drivers.planner import ReadPlanner, wants_for
from drivers.profile import DataType, Point


def pt(**kw: Any) -> Point:
    base: dict[str, Any] = {"name": "p", "table": "input", "address": 10, "type": "f32"}
    base.update(kw)
    return Point.model_validate(base)


def words_of(x: float, order: str = "big") -> list[int]:
    """The two registers of float32 ``x``, independently of the codec."""
    high, low = struct.unpack(">HH", struct.pack(">f", x))
    return [high, low] if order == "big" else [low, high]


def test_f32_is_two_registers_wide() -> None:
    assert DataType.F32.width == 2
    assert pt(count=3).span == (10, 15)
    assert not DataType.F32.signed


@pytest.mark.parametrize("order", ["big", "little"])
def test_word_order_matches_u32(order: str) -> None:
    p = pt(word_order=order)
    u32 = pt(type="u32", word_order=order)
    assert encode(p, 230.5) == encode(u32, 0x4366_8000)  # 230.5 is 0x43668000
    assert decode(p, encode(u32, 0x4366_8000)) == 230.5


def test_big_word_order_is_high_word_first() -> None:
    assert encode(pt(), 230.5) == [0x4366, 0x8000]
    assert encode(pt(word_order="little"), 230.5) == [0x8000, 0x4366]
    assert decode(pt(), [0x4366, 0x8000]) == 230.5
    assert decode(pt(word_order="little"), [0x8000, 0x4366]) == 230.5


def test_decodes_the_shortest_decimal_of_the_float32() -> None:
    assert decode(pt(), words_of(0.1)) == 0.1  # not 0.10000000149011612
    assert decode(pt(), words_of(1234.56)) == 1234.56
    assert decode(pt(), words_of(-3.4028234663852886e38)) == -3.4028235e38
    value = decode(pt(), words_of(50.0))
    assert isinstance(value, float)
    assert value == 50.0


@pytest.mark.parametrize("order", ["big", "little"])
@pytest.mark.parametrize("pattern", [0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFFFF_FFFF])
def test_every_nan_is_no_value(order: str, pattern: int) -> None:
    p = pt(word_order=order)
    words = [pattern >> 16, pattern & 0xFFFF]
    assert decode(p, words if order == "big" else words[::-1]) is None


def test_none_encodes_as_quiet_nan_and_nan_is_refused() -> None:
    assert encode(pt(), None) == [0x7FC0, 0x0000]
    assert encode(pt(word_order="little"), None) == [0x0000, 0x7FC0]
    with pytest.raises(ValueError, match="finite"):
        encode(pt(), math.nan)


@pytest.mark.parametrize("x", [math.inf, -math.inf])
def test_infinity_is_a_decoding_error_and_never_written(x: float) -> None:
    with pytest.raises(ValueError, match="infinity"):
        decode(pt(), words_of(x))
    with pytest.raises(ValueError, match="finite"):
        encode(pt(), x)


def test_values_beyond_float32_are_refused_not_clamped() -> None:
    assert decode(pt(), encode(pt(), 3.4e38)) == 3.4e38
    with pytest.raises(ValueError, match="float32 range"):
        encode(pt(), 3.5e38)
    with pytest.raises(ValueError, match="float32 range"):
        encode(pt(scale=1e-300), 1.0)  # raw 1e300
    with pytest.raises(ValueError, match="float32 range"):
        encode(pt(), 10**400)  # beyond even a double


def test_scale_and_offset_apply_in_decimal() -> None:
    wh = pt(scale=0.001, unit="kWh")  # a register in Wh, shown in kWh
    assert decode(wh, words_of(1234.5)) == 1.2345
    assert encode(wh, 1.2345) == words_of(1234.5)
    shifted = pt(scale=0.1, offset=-40.0)
    assert decode(shifted, words_of(635.0)) == 23.5
    assert encode(shifted, 23.5) == words_of(635.0)


def test_min_max_and_kinds_on_write() -> None:
    p = pt(table="holding", access="rw", min=0.0, max=100.0)
    assert encode(p, 100) == words_of(100.0)
    for bad in (-0.5, 100.5):
        with pytest.raises(ValueError, match="imum"):
            encode(p, bad)
    for wrong in (True, "12", {"a": True}):
        with pytest.raises(ValueError, match="number"):
            encode(p, wrong)


def test_listed_patterns_are_no_value_too() -> None:
    p = pt(no_value=[0xC479_C000])  # -999.0, a device's "not available"
    assert decode(p, [0xC479, 0xC000]) is None
    assert encode(p, None) == [0xC479, 0xC000]
    with pytest.raises(ValueError, match="no value"):
        encode(p, -999.0)
    assert decode(p, words_of(-998.0)) == -998.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"enum": {"0": "off"}}, "enum needs an integer type, not f32"),
        ({"bits": {"a": 0}}, "'bits' goes with type 'bitfield'"),
        ({"table": "coil"}, "type f32 does not fit table coil"),
        ({"no_value": [0x1_0000_0000]}, "outside the raw range of f32"),
        ({"stride": 1, "count": 2}, "stride 1 is smaller than the f32 width 2"),
    ],
)
def test_profile_refuses(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        pt(**changes)


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["big", "little"])
@given(pattern=st.integers(0, 0xFFFF_FFFF))
def test_every_finite_pattern_reencodes_to_itself(order: str, pattern: int) -> None:
    p = pt(word_order=order)
    words = [pattern >> 16, pattern & 0xFFFF]
    words = words if order == "big" else words[::-1]
    exponent = pattern >> 23 & 0xFF
    if exponent == 0xFF:  # infinity or NaN
        return
    assert encode(p, decode(p, words)) == words


@pytest.mark.parametrize("order", ["big", "little"])
@given(x=st.floats(width=32, allow_nan=False, allow_infinity=False), index=st.integers(0, 3))
def test_every_float32_round_trips(order: str, x: float, index: int) -> None:
    p = pt(word_order=order, count=4)
    words = encode(p, x, index)
    assert words == words_of(x, order)
    value = decode(p, words, index)
    assert isinstance(value, float)
    assert struct.pack(">f", value) == struct.pack(">f", x)  # the same float32, shortest text


@given(
    digits=st.integers(-999_999, 999_999),
    exponent=st.integers(-30, 30),
)
def test_six_significant_digits_come_back_exactly(digits: int, exponent: int) -> None:
    x = float(f"{digits}e{exponent}")
    assert decode(pt(), encode(pt(), x)) == x


# -- read planning -------------------------------------------------------------------------


def test_a_float_is_never_split_across_reads() -> None:
    floats = [pt(name=f"f{i}", address=2 * i + 1) for i in range(17)]  # 1-2, 3-4, ... 33-34
    requests = ReadPlanner().plan(wants_for(floats))
    assert [(r.address, r.count) for r in requests] == [(1, 32), (33, 2)]
    for r in requests:
        for want in r.items:
            assert r.address <= want.start
            assert want.end < r.address + r.count
            assert len(r.slice_for(want, list(range(r.count)))) == 2
    after_u16 = [pt(name="a", type="u16", address=0), pt(name="b", address=31)]
    requests = ReadPlanner().plan(wants_for(after_u16))
    assert [(r.address, r.count) for r in requests] == [(0, 1), (31, 2)]  # 0..32 is 33
