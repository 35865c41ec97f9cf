"""Effects as values: what the pure core asks the adapters to do (STYLE.md).

Core functions take ``(state, input, now)`` and return effects; the floor engine persists
and carries them out in order. Persisting effects (an event, an audit row, a saved alarm
or stay) of one decision go into one SQLite transaction; device effects run after the
commit, so nothing is announced that is not on disk. Each core module adds its own
``Save…`` effects for its state; the shared ones are here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from drivers.observations import PointValue
from drivers.panelproto import LampState
from drivers.profile import PollClass

__all__ = ["Audit", "Emit", "SetPanelLamp", "WritePoint"]


@dataclass(frozen=True, slots=True)
class Emit:
    """Append an event to the outbox (mqtt.md "Events"); ``room`` None for floor events."""

    type: str
    room: str | None = None
    data: Mapping[str, object] = field(default_factory=dict)
    low_value: bool = False  # may be shed when the outbox reaches its disk cap


@dataclass(frozen=True, slots=True)
class Audit:
    """Record who did what (unlock, acknowledgement, drift repair…) in the audit log."""

    actor: str
    action: str
    room: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WritePoint:
    """Write one point (by role) of a device, verified by read-back, at this priority."""

    device: str  # "1203/rio", "floorpanel"
    point: str  # role name, e.g. "dome_lamp", "slot", "setpoint"
    value: PointValue
    index: int = 0
    priority: PollClass = PollClass.LOCK
    verify: bool = True


@dataclass(frozen=True, slots=True)
class SetPanelLamp:
    """Send ``LAMP,<room>,<state>`` to a call panel (devices.md FG-CALLPANEL-1)."""

    bus: str
    room: str
    state: LampState
