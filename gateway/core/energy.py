"""The energy policy of one room, pure (operations.md, Energy): which mode, and what it asks.

| rental, presence | mode | thermostat | lights |
|---|---|---|---|
| sold, present or null | comfort | the stay's comfort setpoint, keypad free | as left |
| sold, absent | away | comfort moved ``away_setback_c`` toward saving | off later |
| unsold | unsold | ``unsold_cool_c`` / ``unsold_heat_c``, keypad locked | off |
| unsold, a stay starts soon | precondition | the coming stay's comfort setpoint | as left |
| window open long enough | window | power off (restored on close) | as left |

(away: at once, lights off after ``lights_off_absent_s``; precondition: within
``precondition_min`` of the stay's start; window: after ``window_delay_s``.)

Precedence, highest first: ``window``; a ``set_energy`` hold (comfort while sold); a
``manual`` override (``set_climate``, until the next change of rental or presence); then
the table. After a checkout the room keeps its mode until it is absent, at most
``unsold_after_s``. "Toward saving": the room counts as cooling while its temperature is at
or above the comfort setpoint, else as heating (thermostat mode cool or fan only: cooling;
heat: heating; unknown temperature: cooling).

The defaults meet IECC 2021 C403.7.4 / ASHRAE 90.1 §6.4.3.3.5: an absent guest's room is
set back ≥ 2 °C well within 30 min, an unsold room reaches 80 °F / 60 °F within 20 min,
and no room is pre-conditioned more than 60 min ahead (``state.CODE_LIMITS``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from gateway.core.kinds.base import EnergyMode
from gateway.core.state import EnergySettings

__all__ = [
    "Facts",
    "Mode",
    "RoomEnergy",
    "choose",
    "is_cooling",
    "target",
]


class Mode(enum.StrEnum):
    """A room's energy mode (room state ``energy.mode``)."""

    COMFORT = "comfort"
    AWAY = "away"
    UNSOLD = "unsold"
    PRECONDITION = "precondition"
    WINDOW = "window"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the mode of a room is chosen from, at one instant."""

    sold: bool
    presence: bool | None
    hold: bool  # set_energy hold for the current stay
    manual: bool  # a set_climate override not yet ended by a change of rental or presence
    window: bool  # the window open longer than window_delay_s
    precondition: bool  # unsold, and a stay starts within precondition_min
    leaving: bool  # checked out less than unsold_after_s ago and not yet absent


@dataclass(slots=True)
class RoomEnergy:
    """One room's energy state: its mode and since when, and what may change it."""

    mode: Mode | None = None
    since: datetime | None = None
    reason: str = "start"
    hold_stay: str | None = None  # set_energy hold, for this stay
    manual: bool = False
    window_since: datetime | None = None
    unsold_due: datetime | None = None  # checked out: unsold by then at the latest
    lights_off_due: datetime | None = None  # away: the lights go off then
    setpoint_c: float | None = None  # what the mode wrote (None: the mode writes none)
    auto_held: bool = False  # an auto thermostat held to cool or heat while set back


def choose(facts: Facts, current: Mode | None) -> Mode:
    """The mode the table, the overrides and the precedence give."""
    if facts.window:
        return Mode.WINDOW
    if facts.sold:
        if facts.hold:
            return Mode.COMFORT
        if facts.manual:
            return Mode.MANUAL
        return Mode.AWAY if facts.presence is False else Mode.COMFORT
    if facts.precondition:
        return Mode.PRECONDITION
    if facts.manual:
        return Mode.MANUAL
    if facts.leaving and current in (Mode.COMFORT, Mode.AWAY, Mode.MANUAL):
        return current
    return Mode.UNSOLD


def is_cooling(comfort_c: float, temp_c: float | None, tstat_mode: object) -> bool:
    """The room counts as cooling (else heating) for "toward saving"."""
    if tstat_mode in ("cool", "fan_only"):
        return True
    if tstat_mode == "heat":
        return False
    return temp_c is None or temp_c >= comfort_c


def target(
    mode: Mode,
    settings: EnergySettings,
    comfort_c: float,
    cooling: bool,
    *,
    lights_off: bool,
    auto: bool,
) -> EnergyMode:
    """What a mode asks of the room's devices (``lights_off``: an away room's delay is over;
    ``auto``: the thermostat runs in auto, or did until a set-back held it to one way)."""
    held = ("cool" if cooling else "heat") if auto else None
    restored = "auto" if auto else None
    match mode:
        case Mode.COMFORT:
            return EnergyMode(mode, comfort_c, True, False, tstat_mode=restored)
        case Mode.AWAY:
            step = settings.away_setback_c if cooling else -settings.away_setback_c
            return EnergyMode(mode, comfort_c + step, True, lights_off=lights_off, tstat_mode=held)
        case Mode.UNSOLD:
            unsold = settings.unsold_cool_c if cooling else settings.unsold_heat_c
            return EnergyMode(mode, unsold, True, True, lights_off=True, tstat_mode=held)
        case Mode.PRECONDITION:
            return EnergyMode(mode, comfort_c, power=True, tstat_mode=restored)
        case Mode.WINDOW:
            return EnergyMode(mode, power=False)
        case Mode.MANUAL:
            return EnergyMode(mode)
