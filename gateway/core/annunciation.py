"""Local annunciation: the lamps and the sounder that the open calls demand (devices.md).

Pure: a function from the floor's annunciators and the open calls to the desired state
of every output, and the diff between two such states as device effects. The rules:

- FG-RIO-1 room: ``dome_lamp`` and ``reassure_lamp`` on while a call of the room is open.
- FG-CALLPANEL-1 room: ``LAMP ON`` while a call of the room is unacknowledged, ``FLASH``
  once every open call of the room is acknowledged, ``OFF`` when none is open.
- FG-FLOORPANEL-1: ``floor_call_lamp`` on while any call is open; ``floor_sounder`` on
  while any call demands it (the alarm core decides which: see ``CallDemand.sounding``).
  Troubles (technical alarms) never use those two: ``trouble_lamp`` on while any
  technical alarm is open, ``trouble_buzzer`` on while any is open and not acknowledged.

Every write goes at ``PollClass.EMERGENCY`` and is verified by read-back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from drivers.ids import DeviceRef
from drivers.panelproto import LampState
from drivers.profile import PollClass
from gateway.core.effects import SetPanelLamp, WritePoint

__all__ = [
    "FLOORPANEL", "ROOM_LAMPS", "Annunciators", "CallDemand", "Output", "OutputKey", "Outputs",
    "Troubles", "changes", "desired", "outputs_of",
]  # fmt: skip

FLOORPANEL = DeviceRef(None, "floorpanel")  # the floor panel (devices.md FG-FLOORPANEL-1)
ROOM_LAMPS = ("dome_lamp", "reassure_lamp")  # FG-RIO-1 coils 4 and 5
FLOOR_CALL_LAMP = "floor_call_lamp"
FLOOR_SOUNDER = "floor_sounder"
TROUBLE_LAMP = "trouble_lamp"  # devices.md v1.1: FG-FLOORPANEL-1 coil 2
TROUBLE_BUZZER = "trouble_buzzer"  # coil 3

Output = WritePoint | SetPanelLamp
OutputKey = tuple[DeviceRef | str, str, str]  # (device or "panel:<bus>", point or room, kind)
Outputs = dict[OutputKey, Output]


class Annunciators(Protocol):
    """Where a floor's call lamps are: FG-RIO-1 rooms, call-panel rooms, the floor panel."""

    @property
    def rio_rooms(self) -> frozenset[str]:
        """Rooms whose call points are on an FG-RIO-1."""
        ...

    @property
    def panel_rooms(self) -> Mapping[str, str]:
        """Rooms whose call points are on a call panel: room -> panel bus."""
        ...

    @property
    def has_floorpanel(self) -> bool:
        """Whether the floor has an FG-FLOORPANEL-1."""
        ...


@dataclass(frozen=True, slots=True)
class CallDemand:
    """An open call as annunciation sees it."""

    room: str
    bus: str | None  # the call panel it came from; None: the room's FG-RIO-1
    acknowledged: bool
    sounding: bool  # the call wants the floor sounder on


@dataclass(frozen=True, slots=True)
class Troubles:
    """The floor's open technical alarms as the trouble lamp and buzzer see them."""

    open: bool = False  # any technical alarm is open: the trouble lamp
    unacknowledged: bool = False  # any of them is not acknowledged: the trouble buzzer


def desired(
    annunciators: Annunciators, calls: Iterable[CallDemand], troubles: Troubles | None = None
) -> Outputs:
    """Every output's desired state, configured outputs first (rooms sorted), then extras.

    A call from a room the layout does not list (a panel naming an unknown room) still
    lights its lamp: a call is never left unannounced for want of configuration.
    """
    calls = list(calls)
    rio_rooms = set(annunciators.rio_rooms) | {c.room for c in calls if c.bus is None}
    panel_rooms = {(bus, room) for room, bus in annunciators.panel_rooms.items()}
    panel_rooms |= {(c.bus, c.room) for c in calls if c.bus is not None}
    out: Outputs = {}
    for room in sorted(rio_rooms):
        lit = any(c.bus is None and c.room == room for c in calls)
        for point in ROOM_LAMPS:
            rio = DeviceRef.of(room, "rio")
            out[(rio, point, "coil")] = _coil(rio, point, lit)
    for bus, room in sorted(panel_rooms):
        mine = [c for c in calls if c.bus == bus and c.room == room]
        if not mine:
            state = LampState.OFF
        elif all(c.acknowledged for c in mine):
            state = LampState.FLASH
        else:
            state = LampState.ON
        out[(f"panel:{bus}", room, "lamp")] = SetPanelLamp(bus, room, state)
    if annunciators.has_floorpanel:
        out[(FLOORPANEL, FLOOR_CALL_LAMP, "coil")] = _coil(FLOORPANEL, FLOOR_CALL_LAMP, bool(calls))
        sounding = any(c.sounding for c in calls)
        out[(FLOORPANEL, FLOOR_SOUNDER, "coil")] = _coil(FLOORPANEL, FLOOR_SOUNDER, sounding)
        troubles = troubles or Troubles()
        out[(FLOORPANEL, TROUBLE_LAMP, "coil")] = _coil(FLOORPANEL, TROUBLE_LAMP, troubles.open)
        buzzing = troubles.open and troubles.unacknowledged
        out[(FLOORPANEL, TROUBLE_BUZZER, "coil")] = _coil(FLOORPANEL, TROUBLE_BUZZER, buzzing)
    return out


def changes(before: Outputs, after: Outputs) -> list[Output]:
    """The effects that take the outputs from ``before`` to ``after``, in ``after``'s order.

    An output present only in ``before`` (an unlisted room whose call ended) is switched
    off rather than forgotten.
    """
    effects = [effect for key, effect in after.items() if before.get(key) != effect]
    gone = [_off(effect) for key, effect in before.items() if key not in after]
    return effects + [effect for effect in gone if effect is not None]


def outputs_of(outputs: Outputs, device: DeviceRef | str) -> list[Output]:
    """The outputs of one device (a room I/O, the floor panel) or of ``panel:<bus>``."""
    return [effect for key, effect in outputs.items() if key[0] == device]


def _coil(device: DeviceRef, point: str, on: bool) -> WritePoint:
    return WritePoint(device, point, on, priority=PollClass.EMERGENCY)


def _off(effect: Output) -> Output | None:
    if isinstance(effect, WritePoint):
        return replace(effect, value=False) if effect.value else None
    return replace(effect, state=LampState.OFF) if effect.state is not LampState.OFF else None
