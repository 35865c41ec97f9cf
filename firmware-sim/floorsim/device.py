"""The base of every simulated Modbus device: a profile-shaped register map.

``SimDevice`` serves any profile as is (the floor panel: coils only); subclasses add the
behaviour of their kind of device, keyed by the roles the profile maps (devices.py,
lock.py). Methods called by the bus servers raise ``ModbusError``; control methods raise
``ValueError`` for impossible requests.
"""

from __future__ import annotations

from typing import Any

from drivers.codec import Value, element_address, encode
from drivers.profile import Profile, Table
from floorsim.journal import Event, Journal, SimClock, Stamp
from floorsim.regmap import Element, RegisterMap

__all__ = ["SimDevice"]


class SimDevice:
    """A profile-shaped Modbus device; subclasses add the behaviour of their kind."""

    def __init__(
        self,
        profile: Profile,
        *,
        name: str,
        room: str | None,
        bus: str,
        unit: int,
        clock: SimClock,
        journal: Journal,
    ) -> None:
        self.profile = profile
        self.name = name
        self.room = room
        self.bus = bus
        self.unit = unit
        self.clock = clock
        self.journal = journal
        self.regs = RegisterMap(profile)
        for p in profile.point:  # a settable enum register starts at a name it can hold
            if p.enum and 0 not in p.enum_map and "w" in p.access:
                for i in range(p.count):
                    self.regs.put(p.name, next(iter(p.enum_map.values())), i)

    @property
    def kind(self) -> str:
        """What the device is to the floor."""
        return self.profile.device

    # -- bus side (called by the Modbus servers) -------------------------------------------

    def read(self, table: Table, address: int, count: int) -> list[int]:
        """Raw cells for a read request (ModbusError 02 if unmapped)."""
        self.tick()
        return self.regs.read(table, address, count)

    def write(self, table: Table, address: int, values: list[int], *, multiple: bool) -> None:
        """Apply a master's write (FC 5/6: multiple=False; FC 15/16: True)."""
        self.tick()
        elements = self.regs.plan_write(table, address, values)
        before = {el: self.regs.get(el.point.name, el.index) for el in elements}
        self.regs.store(table, address, values)
        stamp = Stamp.now()
        for el in elements:
            whole = (
                multiple
                and address <= el.address
                and el.address + el.width <= address + len(values)
            )
            self.on_write(el, before[el], whole=whole, stamp=stamp)

    def master_write(self, role: str, value: Value, index: int = 0) -> None:
        """Write ``role[index]`` as a bus master would: encoded, checked, then acted on
        (in-process users such as benches; ModbusError as the bus would answer)."""
        p = self.regs.point(role)
        self.write(p.table, element_address(p, index), encode(p, value, index), multiple=True)

    def on_write(self, el: Element, old: Value, *, whole: bool, stamp: Stamp) -> None:
        """Behaviour after the master wrote ``el`` (the default journals the change)."""
        new = self.regs.get(el.point.name, el.index)
        self.journal.record(
            "write", self.name, room=self.room, stamp=stamp, point=el.label(), old=old, value=new
        )

    def tick(self) -> None:
        """Bring time-driven state up to date (called before every access)."""

    # -- control side ----------------------------------------------------------------------

    def get(self, role: str, index: int = 0) -> Value:
        """Decoded value of a role."""
        self.tick()
        return self.regs.get(role, index)

    def set_input(self, role: str, value: Value, index: int = 0) -> Stamp:
        """Set a physical input (a discrete input or input register) as the world would."""
        self.tick()
        if not self.regs.has(role):
            raise ValueError(f"{self.name} ({self.profile.name}) has no point {role!r}")
        old = self.regs.get(role, index)
        try:
            self.regs.put(role, value, index)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        return self._event("input", point=role, old=old, value=self.regs.get(role, index)).stamp

    def snapshot(self) -> dict[str, Any]:
        """Every point of the device, decoded."""
        self.tick()
        return self.regs.snapshot()

    def power_cycle(self) -> Stamp:
        """A power loss and return: coils drop out; slots, logs and counters survive."""
        for el in self.regs.elements():
            if el.point.table is Table.COIL:
                self.regs.put(el.point.name, False, el.index)
        return self._event("power_cycle").stamp

    def _event(self, kind: str, **detail: Any) -> Event:
        return self.journal.record(kind, self.name, room=self.room, **detail)

    def _int(self, role: str, index: int = 0) -> int:
        """A count-like role as an int (0 when absent or undecodable)."""
        if not self.regs.has(role):
            return 0
        value = self.regs.get(role, index)
        return value if isinstance(value, int) else 0
