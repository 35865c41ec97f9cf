"""Pure value codec for profile points: raw Modbus bits/words <-> engineering values.

Shared by the gateway's drivers and the simulator, so both read a register the same way.
One call handles one *element* of a point (``index`` selects the element of an array
point such as ``slot[i]``):

- ``decode(point, raw, index)``: ``raw`` is the element's words (registers, starting at
  ``element_address(point, index)``) or its single bit (coils, discrete inputs).
- ``encode(point, value, index)``: the words (or the one bit) to write for ``value``.

Values by kind of point:

==========================  ====================================================
bit (coil, discrete input)  ``bool``
enum                        the name (``str``); an unknown raw value is a ValueError
bitfield                    ``dict[str, bool]`` of the named bits
u16/i16/u32/i32/u64         ``int`` when unscaled (scale 1, offset 0), else ``float``
                            (``raw * scale + offset``, rounded to the scale's decimals)
f32                         ``float``: the shortest decimal that is the same float32,
                            then ``* scale + offset`` in decimal arithmetic; any NaN
                            is ``None``; ±infinity is a ValueError
no_value sentinel           ``None`` (decode); ``encode(None)`` writes the first sentinel
                            (a quiet NaN for an f32 without sentinels)
==========================  ====================================================

``word_order`` applies to every multi-register type alike: ``big`` puts the most
significant word in the first register, ``little`` reverses the words; the bytes of a
register are always big-endian. An f32 encodes ``(value - offset) / scale`` rounded to
the nearest float32, and refuses values beyond the float32 range rather than writing
infinity.

A u16 register playing a BOOL role (``power``, ``keypad_lock``) decodes as its ``int``;
the caller interprets it. Every refusal is a ``ValueError`` naming the point and the
offending value; nothing is clamped or turned into ``None`` silently.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from decimal import Decimal

from drivers.profile import DataType, Point

__all__ = ["Value", "decode", "element_address", "encode"]

Value = bool | int | float | str | dict[str, bool] | None

_WORD = 0xFFFF
_QUIET_NAN_F32 = 0x7FC0_0000


def decode(point: Point, raw: Sequence[int], index: int = 0) -> Value:
    """Decode one element of ``point`` from its raw bits/words (see module doc)."""
    _check_index(point, index)
    if point.type is DataType.BIT:
        _check_len(point, raw, 1)
        if raw[0] not in (0, 1):
            raise ValueError(f"{point.name}: raw bit {raw[0]!r} is not 0 or 1")
        return bool(raw[0])
    _check_len(point, raw, point.type.width)
    for w in raw[: point.type.width]:
        if not 0 <= w <= _WORD:
            raise ValueError(f"{point.name}: raw word {w!r} is not a 16-bit value")
    unsigned = _join(raw[: point.type.width], point.word_order)
    if point.no_value and _is_no_value(point, unsigned):
        return None
    if point.type.is_float:
        return _decode_float(point, unsigned)
    number = _to_signed(unsigned, point) if point.type.signed else unsigned
    if point.type is DataType.BITFIELD:
        return {name: bool(number >> bit & 1) for name, bit in (point.bits or {}).items()}
    if point.enum is not None:
        try:
            return point.enum_map[number]
        except KeyError:
            known = ", ".join(f"{k}={v}" for k, v in sorted(point.enum_map.items()))
            raise ValueError(
                f"{point.name}: raw value {number} is not in its enum ({known})"
            ) from None
    if point.scale == 1 and point.offset == 0:
        return number
    return round(number * point.scale + point.offset, _decimals(point))


def encode(point: Point, value: Value, index: int = 0) -> list[int]:
    """The raw bits/words that make one element of ``point`` read back as ``value``.

    ValueError if ``value`` has the wrong kind, is outside the point's min/max or the
    raw range of its type, is not an enum name, or would read back as "no value".
    """
    _check_index(point, index)
    if point.type is DataType.BIT:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return [int(value)]
        raise ValueError(f"{point.name}: a bit takes True/False (or 0/1), not {value!r}")
    if value is None:
        if point.no_value:
            return _split(_unsigned(point.no_value[0], point), point)
        if point.type.is_float:
            return _split(_QUIET_NAN_F32, point)
        raise ValueError(f"{point.name}: has no 'no value' sentinel, cannot encode None")
    if point.type.is_float:
        unsigned = _float_raw(point, value)
    else:
        number = _raw_number(point, value)
        lo, hi = point.raw_range
        if not lo <= number <= hi:
            raise ValueError(
                f"{point.name}: {value!r} needs raw {number}, "
                f"outside the {point.type} range {lo}..{hi}"
            )
        unsigned = _unsigned(number, point)
    if point.no_value and _is_no_value(point, unsigned):
        raise ValueError(f"{point.name}: {value!r} encodes to the 'no value' sentinel")
    return _split(unsigned, point)


def element_address(point: Point, index: int = 0) -> int:
    """Protocol address of element ``index`` of ``point`` (IndexError if out of range)."""
    _check_index(point, index)
    return point.address + index * point.step


# -- helpers -------------------------------------------------------------------------------


def _decode_float(point: Point, unsigned: int) -> float | None:
    """An f32 bit pattern as its engineering value (NaN: None; infinity: ValueError)."""
    packed = unsigned.to_bytes(4, "big")
    (number,) = struct.unpack(">f", packed)
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise ValueError(f"{point.name}: raw {unsigned:#010x} is {number} (float32 infinity)")
    short = _shortest_f32(number, packed)
    if point.scale == 1 and point.offset == 0:
        return float(short)
    value = float(Decimal(short) * Decimal(repr(point.scale)) + Decimal(repr(point.offset)))
    if not math.isfinite(value):
        raise ValueError(f"{point.name}: raw {unsigned:#010x} scales beyond a finite number")
    return value


def _float_raw(point: Point, value: Value) -> int:
    """The f32 bit pattern for ``value`` (min/max and the float32 range checked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{point.name}: expects a number, not {value!r}")  # noqa: TRY004
    _check_number(point, value)
    try:
        number = (value - point.offset) / point.scale
        packed = b"" if math.isinf(number) else struct.pack(">f", number)
    except OverflowError:
        packed = b""
    if not packed:
        raise ValueError(f"{point.name}: {value!r} is outside the float32 range")
    return int.from_bytes(packed, "big")


def _shortest_f32(number: float, packed: bytes) -> str:
    """The shortest decimal text that rounds to the same float32 (9 digits always do)."""
    for digits in range(1, 9):
        text = f"{number:.{digits}g}"
        try:
            if struct.pack(">f", float(text)) == packed:
                return text
        except OverflowError:
            continue
    return f"{number:.9g}"


def _check_number(point: Point, value: int | float) -> None:
    """ValueError if ``value`` is not finite or is outside the point's min/max."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{point.name}: {value!r} is not a finite number")
    if point.min is not None and value < point.min:
        raise ValueError(f"{point.name}: {value!r} is below the minimum {point.min:g}")
    if point.max is not None and value > point.max:
        raise ValueError(f"{point.name}: {value!r} is above the maximum {point.max:g}")


def _raw_number(point: Point, value: Value) -> int:
    """The raw integer for ``value`` (before the raw-range check)."""
    if point.type is DataType.BITFIELD:
        return _bitfield_raw(point, value)
    if point.enum is not None:
        return _enum_raw(point, value)
    if isinstance(value, bool):
        if point.scale != 1 or point.offset != 0:
            raise ValueError(f"{point.name}: a scaled number cannot take {value!r}")
        return int(value)
    if not isinstance(value, int | float):
        raise ValueError(f"{point.name}: expects a number, not {value!r}")  # noqa: TRY004 (one error type for callers)
    _check_number(point, value)
    if point.scale == 1 and point.offset == 0:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{point.name}: an unscaled integer cannot take {value!r}")
        return int(value)
    return round((value - point.offset) / point.scale)


def _enum_raw(point: Point, value: Value) -> int:
    mapping = point.enum_map
    if isinstance(value, str):
        for raw, name in mapping.items():
            if name == value:
                return raw
    elif isinstance(value, int) and not isinstance(value, bool) and value in mapping:
        return value
    names = ", ".join(mapping.values())
    raise ValueError(f"{point.name}: {value!r} is not one of its enum names ({names})")


def _bitfield_raw(point: Point, value: Value) -> int:
    bits = point.bits or {}
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{point.name}: a bitfield takes a dict, not {value!r}")  # noqa: TRY004
    unknown = sorted(set(value) - set(bits))
    if unknown:
        raise ValueError(f"{point.name}: unknown bits {unknown} (known: {', '.join(bits)})")
    return sum(1 << bits[name] for name, on in value.items() if on)


def _is_no_value(point: Point, unsigned: int) -> bool:
    return any(_unsigned(s, point) == unsigned for s in point.no_value)


def _unsigned(number: int, point: Point) -> int:
    """Two's-complement view of ``number`` in the point's width (sentinels may be either)."""
    return number & ((1 << (16 * point.type.width)) - 1)


def _to_signed(unsigned: int, point: Point) -> int:
    bits = 16 * point.type.width
    return unsigned - (1 << bits) if unsigned >> (bits - 1) else unsigned


def _join(words: Sequence[int], word_order: str) -> int:
    ordered = words if word_order == "big" else list(reversed(words))
    out = 0
    for w in ordered:
        out = out << 16 | w
    return out


def _split(unsigned: int, point: Point) -> list[int]:
    width = point.type.width
    words = [(unsigned >> (16 * (width - 1 - i))) & _WORD for i in range(width)]
    return words if point.word_order == "big" else list(reversed(words))


def _decimals(point: Point) -> int:
    """Decimal places that represent every raw*scale+offset exactly (0.02 -> 2)."""
    places = 0
    for x in (point.scale, point.offset):
        exponent = Decimal(repr(x)).as_tuple().exponent
        if isinstance(exponent, int):
            places = max(places, -exponent)
    return places


def _check_index(point: Point, index: int) -> None:
    if not 0 <= index < point.count:
        raise IndexError(f"{point.name}: element {index} outside 0..{point.count - 1}")


def _check_len(point: Point, raw: Sequence[int], want: int) -> None:
    if len(raw) < want:
        raise ValueError(f"{point.name}: needs {want} raw values, got {len(raw)}")
