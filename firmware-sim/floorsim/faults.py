"""Faults switchable at run time, per Modbus device or per bus, and per call panel.

Modbus faults (``ModbusFaults``), on a device (bus + unit) or a whole bus:

==============  ===============================================================
``silent``      no answer at all (the request still occupies the line)
``corrupt N``   the next N responses go out with a corrupted CRC (RTU) / a wrong
                MBAP transaction id (TCP, which has no CRC): the master must drop them
``exception C`` every request is answered with Modbus exception code C
``slow MS``     the answer starts MS milliseconds later than the 5 ms turnaround
``stuck A``     (a device) a write of coil A is acknowledged but changes nothing:
                the coil reads back as it was (a lamp driver that failed)
``refuse A``    (a device) a read covering address A (any table) is answered with
                exception 02; other reads are answered (a device that answers
                only some reads: its other values stay current)
==============  ===============================================================

A bus fault and a device fault combine: silent if either is, the device's exception
before the bus's, delays add up, the device's corrupt count is used up before the bus's.

Call-panel faults (``PanelFaults``): ``silent`` (the panel's transmitter is cut: no
heartbeats and no frames; its timers keep running, so repeats resume when it ends) and
``garbage MS`` (a garbage line every MS ms, on top of normal traffic). Line faults on a
call point (CUT/SHORT) live in the call panel itself (callpanel.CallPanel.line_fault).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "MODBUS_FAULTS",
    "PANEL_FAULTS",
    "Answering",
    "FaultBook",
    "ModbusFaults",
    "PanelFaults",
]

MODBUS_FAULTS = ("silent", "corrupt", "exception", "slow", "stuck", "refuse")
_ADDRESS_FAULTS = ("stuck", "refuse")  # their value is an address: 0 is one, None is off
PANEL_FAULTS = ("silent", "garbage")


@dataclass(slots=True)
class ModbusFaults:
    """Faults of one device or bus (all off by default)."""

    silent: bool = False
    corrupt: int = 0
    exception: int | None = None
    slow: int = 0
    stuck: int | None = None  # a coil address whose writes change nothing
    refuse: int | None = None  # an address whose reads are answered with exception 02

    def active(self) -> dict[str, Any]:
        """Only the faults that are on."""
        return {
            k: v
            for k, v in asdict(self).items()
            if v is not None and (k in _ADDRESS_FAULTS or v not in (False, 0))
        }


@dataclass(slots=True)
class PanelFaults:
    """Faults of a call panel."""

    silent: bool = False
    garbage: int = 0  # period in ms; 0 = off

    def active(self) -> dict[str, Any]:
        """Only the faults that are on."""
        return {k: v for k, v in asdict(self).items() if v not in (False, 0, None)}


@dataclass(frozen=True, slots=True)
class Answering:
    """How the next answer of a device goes out, faults applied."""

    silent: bool = False
    exception: int | None = None
    delay_s: float = 0.0
    corrupt: bool = False


@dataclass
class FaultBook:
    """Every fault on the floor, keyed by bus name and (bus, unit)."""

    buses: dict[str, ModbusFaults] = field(default_factory=dict)
    devices: dict[tuple[str, int], ModbusFaults] = field(default_factory=dict)
    panels: dict[str, PanelFaults] = field(default_factory=dict)

    def modbus(self, bus: str, unit: int | None) -> ModbusFaults:
        """The (mutable) faults of a bus (unit None) or of one device on it."""
        if unit is None:
            return self.buses.setdefault(bus, ModbusFaults())
        return self.devices.setdefault((bus, unit), ModbusFaults())

    def panel(self, bus: str) -> PanelFaults:
        """The (mutable) faults of a call panel."""
        return self.panels.setdefault(bus, PanelFaults())

    def set_modbus(self, bus: str, unit: int | None, kind: str, value: Any) -> None:
        """Switch a Modbus fault on (or off with its default value)."""
        faults = self.modbus(bus, unit)
        setattr(faults, kind, _coerce(ModbusFaults, kind, value))

    def clear_modbus(self, bus: str, unit: int | None, kind: str | None = None) -> None:
        """Switch one fault (or every fault) of a bus or device off."""
        faults = self.modbus(bus, unit)
        defaults = ModbusFaults()
        for f in fields(ModbusFaults):
            if kind is None or f.name == kind:
                setattr(faults, f.name, getattr(defaults, f.name))

    def set_panel(self, bus: str, kind: str, value: Any) -> None:
        """Switch a panel fault on (or off with its default value)."""
        setattr(self.panel(bus), kind, _coerce(PanelFaults, kind, value))

    def clear_panel(self, bus: str, kind: str | None = None) -> None:
        """Switch one fault (or every fault) of a panel off."""
        faults, defaults = self.panel(bus), PanelFaults()
        for f in fields(PanelFaults):
            if kind is None or f.name == kind:
                setattr(faults, f.name, getattr(defaults, f.name))

    def answering(self, bus: str, unit: int) -> Answering:
        """Combine bus and device faults for the next answer; uses up one corrupt count."""
        b = self.buses.get(bus) or ModbusFaults()
        d = self.devices.get((bus, unit)) or ModbusFaults()
        if b.silent or d.silent:
            return Answering(silent=True)
        corrupt = False
        for f in (d, b):
            if f.corrupt > 0:
                f.corrupt -= 1
                corrupt = True
                break
        exception = d.exception if d.exception is not None else b.exception
        return Answering(exception=exception, delay_s=(b.slow + d.slow) / 1e3, corrupt=corrupt)

    def snapshot(self) -> dict[str, Any]:
        """Every fault that is on, JSON-ready."""
        out: dict[str, Any] = {}
        for name, bf in self.buses.items():
            if bf.active():
                out[name] = bf.active()
        for (name, unit), df in self.devices.items():
            if df.active():
                out[f"{name}:{unit}"] = df.active()
        for name, pf in self.panels.items():
            if pf.active():
                out[name] = pf.active()
        return out


def _coerce(cls: type[ModbusFaults] | type[PanelFaults], kind: str, value: Any) -> Any:
    """Validate a fault value: bool for silent, a non-negative int otherwise."""
    names = {f.name for f in fields(cls)}
    if kind not in names:
        raise ValueError(f"unknown fault {kind!r} (one of {', '.join(sorted(names))})")
    if kind == "silent":
        return True if value is None else bool(value)
    if kind == "exception":
        if value is None:
            raise ValueError("the exception fault needs a code (1..255)")
        code = int(value)
        if not 1 <= code <= 255:
            raise ValueError(f"exception code {code} is outside 1..255")
        return code
    if value is None:
        raise ValueError(f"the {kind} fault needs a number")
    number = int(value)
    if number < 0:
        raise ValueError(f"{kind} {number} is negative")
    return number
