"""A device's four Modbus tables, shaped by its profile: only mapped addresses exist.

Every address a profile point occupies is a cell holding its raw value (a 16-bit word,
or 0/1 for the bit tables). Reads and writes name protocol addresses; behaviour code
names roles and goes through ``drivers.codec``, so a device built from any profile (the
reference hardware or ``siemens-rdf302``) is read and written exactly as the gateway
decodes it.

devices.md: "A read of an unmapped address answers Modbus exception 02 (illegal data
address); a write of an out-of-range value answers exception 03 (illegal data value)."
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from drivers.codec import Value, decode, element_address, encode
from drivers.profile import DataType, Point, Profile, Table
from gateway.core.kinds import ROLES
from gateway.core.kinds.base import ValueKind

__all__ = [
    "DEVICE_FAILURE",
    "ILLEGAL_DATA_ADDRESS",
    "ILLEGAL_DATA_VALUE",
    "ILLEGAL_FUNCTION",
    "Element",
    "ModbusError",
    "RegisterMap",
    "acceptable",
]

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
DEVICE_FAILURE = 0x04


class ModbusError(Exception):
    """A request the device refuses; ``code`` is the Modbus exception code it answers."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True, eq=False)
class Element:
    """One element of a point: ``point[index]``, occupying ``address .. address+width-1``."""

    point: Point
    index: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return (self.point.name, self.index) == (other.point.name, other.index)

    def __hash__(self) -> int:
        # Point holds lists (no_value), so it is not hashable; its name is unique.
        return hash((self.point.name, self.index))

    @property
    def address(self) -> int:
        """First protocol address of the element."""
        return element_address(self.point, self.index)

    @property
    def width(self) -> int:
        """Cells the element occupies."""
        return self.point.type.width

    def label(self) -> str:
        """``role`` or ``role[i]`` (the point name when it plays no role)."""
        name = self.point.role or self.point.name
        return f"{name}[{self.index}]" if self.point.count > 1 else name


class RegisterMap:
    """Raw cells of the four tables, with role-level access through the codec."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._cells: dict[Table, dict[int, int]] = {t: {} for t in Table}
        self._owner: dict[tuple[Table, int], Element] = {}
        self._points: dict[str, Point] = {}
        self._bit_roles: dict[str, tuple[Point, int]] = {}
        for p in profile.point:
            self._points[p.name] = p
            if p.role is not None:
                self._points[p.role] = p
            for bit_name, bit in (p.bits or {}).items():
                self._bit_roles[bit_name] = (p, bit)
            for i in range(p.count):
                el = Element(p, i)
                for a in range(el.address, el.address + el.width):
                    self._cells[p.table][a] = 0
                    self._owner[(p.table, a)] = el

    # -- protocol side -------------------------------------------------------------------

    def read(self, table: Table, address: int, count: int) -> list[int]:
        """Raw cells ``address .. address+count-1``; ModbusError(02) if any is unmapped."""
        cells = self._cells[table]
        try:
            return [cells[a] for a in range(address, address + count)]
        except KeyError as exc:
            raise ModbusError(
                ILLEGAL_DATA_ADDRESS, f"{table} {exc.args[0]} is not mapped"
            ) from None

    def plan_write(self, table: Table, address: int, values: list[int]) -> list[Element]:
        """Check a master's write; the elements it touches. ModbusError 02 or 03 if refused.

        02: an address is unmapped or belongs to a point the master may not write.
        03: a touched element would hold a value its point does not accept.
        """
        touched: dict[Element, None] = {}
        for a in range(address, address + len(values)):
            el = self._owner.get((table, a))
            if el is None:
                raise ModbusError(ILLEGAL_DATA_ADDRESS, f"{table} {a} is not mapped")
            if "w" not in el.point.access:
                raise ModbusError(ILLEGAL_DATA_ADDRESS, f"{table} {a} ({el.label()}) is read-only")
            touched[el] = None
        for el in touched:
            words = [
                values[a - address] if address <= a < address + len(values) else self.raw(table, a)
                for a in range(el.address, el.address + el.width)
            ]
            problem = acceptable(el.point, words, el.index, self.profile.device)
            if problem:
                raise ModbusError(ILLEGAL_DATA_VALUE, problem)
        return list(touched)

    def store(self, table: Table, address: int, values: list[int]) -> None:
        """Store raw cells (the caller has checked them with plan_write)."""
        cells = self._cells[table]
        for i, v in enumerate(values):
            cells[address + i] = v

    def raw(self, table: Table, address: int) -> int:
        """One raw cell (KeyError if unmapped)."""
        return self._cells[table][address]

    # -- behaviour side (by role or point name) ------------------------------------------

    def has(self, role: str) -> bool:
        """True if the profile maps this role, point name or bit-field member."""
        return role in self._points or role in self._bit_roles

    def point(self, role: str) -> Point:
        """The point playing ``role`` (or named so); KeyError if none."""
        return self._points[role]

    def get(self, role: str, index: int = 0) -> Value:
        """Decoded value of ``role[index]`` (a bit-field member decodes to bool)."""
        if role in self._bit_roles:
            p, bit = self._bit_roles[role]
            return bool(self.raw(p.table, p.address) >> bit & 1)
        p = self._points[role]
        a = element_address(p, index)
        return decode(p, [self.raw(p.table, x) for x in range(a, a + p.type.width)], index)

    def put(self, role: str, value: Value, index: int = 0) -> None:
        """Set ``role[index]`` as the device itself would (no access check)."""
        if role in self._bit_roles:
            p, bit = self._bit_roles[role]
            old = self.raw(p.table, p.address)
            self._cells[p.table][p.address] = old | (1 << bit) if value else old & ~(1 << bit)
            return
        p = self._points[role]
        self.store(p.table, element_address(p, index), encode(p, value, index))

    def elements(self) -> Iterator[Element]:
        """Every element of every point, in profile order."""
        for p in self.profile.point:
            for i in range(p.count):
                yield Element(p, i)

    def snapshot(self) -> dict[str, Value | list[Value]]:
        """Every point decoded (arrays as lists); undecodable raw shown as ``raw:N``."""
        out: dict[str, Value | list[Value]] = {}
        for p in self.profile.point:
            values = [self._safe_get(p, i) for i in range(p.count)]
            out[p.role or p.name] = values if p.count > 1 else values[0]
        return out

    def _safe_get(self, p: Point, index: int) -> Value:
        a = element_address(p, index)
        words = [self.raw(p.table, x) for x in range(a, a + p.type.width)]
        try:
            return decode(p, words, index)
        except ValueError:
            return f"raw:{words}"


def acceptable(point: Point, words: list[int], index: int, kind: str) -> str | None:
    """Why a ``kind`` device refuses ``words`` for ``point[index]`` (None if it accepts)."""
    try:
        value = decode(point, words, index)
        if value is not None and point.type not in (DataType.BIT, DataType.BITFIELD):
            encode(point, value, index)  # the min/max check lives in encode
    except ValueError as exc:
        return str(exc)
    spec = ROLES.get(kind, {}).get(point.role) if point.role else None
    if spec is not None and spec.kind is ValueKind.BOOL and value not in (0, 1):
        return f"{value!r} is not 0 or 1"
    return None
