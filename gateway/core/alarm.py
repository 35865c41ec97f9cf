"""The alarm as a value: its points, kinds and states, the alarm record and the alarm
layout (what the alarm core needs of the floor file). The behaviour is gateway.core.alarms."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from gateway.model.time import format_ts

__all__ = [
    "BATH", "BED", "CALLPANEL_OFFLINE", "CALL_POINT_FAULT", "CALL_POINT_UNREACHABLE",
    "LAMP_FAULT", "LOCK_TAMPER", "NO_ACTIVITY", "OTHER", "STORAGE", "UPLINK_REFUSED",
    "UPLINK_REFUSED_AFTER", "Alarm", "AlarmKind", "AlarmLayout", "AlarmState", "Refusal",
]  # fmt: skip

# mqtt.md "Alarms": call points, and technical alarm points (their causes).
BATH, BED, OTHER = "bath", "bed", "other"
CALLPANEL_OFFLINE = "callpanel_offline"
CALL_POINT_UNREACHABLE = "call_point_unreachable"
CALL_POINT_FAULT = "call_point_fault"
LOCK_TAMPER = "lock_tamper"
LAMP_FAULT = "lamp_fault"
STORAGE = "storage"
NO_ACTIVITY = "no_activity"  # the point of a wellbeing alarm
UPLINK_REFUSED = "uplink_refused"
UPLINK_REFUSED_AFTER = timedelta(seconds=30)  # mqtt.md v2: refused for longer than 30 s


class AlarmState(enum.StrEnum):
    """The alarm lifecycle: active -> acknowledged -> resolved (acknowledged may re-activate)."""

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlarmKind(enum.StrEnum):
    """A guest call or a technical alarm."""

    CALL = "call"
    TECHNICAL = "technical"
    WELLBEING = "wellbeing"


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm; ``next_due_at`` is its next escalation, repeat or acknowledgement timeout."""

    alarm_id: str
    room: str | None
    kind: AlarmKind
    point: str
    state: AlarmState
    level: int
    raised_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    next_due_at: datetime | None = None
    source: str | None = None  # the call panel bus, for alarms that came from a panel
    latched: bool = False  # raised while the link was down: sounder on until acknowledged
    faults: tuple[str, ...] = ()  # call_point_fault: the faulty call points, sorted

    @property
    def is_open(self) -> bool:
        """Active or acknowledged."""
        return self.state is not AlarmState.RESOLVED

    def snapshot(self) -> dict[str, object]:
        """The alarm payload of mqtt.md "Alarms" (retained topic and ``alarm.*`` data)."""
        return {
            "schema": 1,
            "alarm_id": self.alarm_id,
            "room": self.room,
            "kind": str(self.kind),
            "point": self.point,
            "state": str(self.state),
            "level": self.level,
            "raised_at": format_ts(self.raised_at),
            "acknowledged_at": _opt_ts(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": _opt_ts(self.resolved_at),
            "resolved_by": self.resolved_by,
        }


@dataclass(frozen=True, slots=True)
class Refusal:
    """A command refused with nothing changed (mqtt.md reply ``error``)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class AlarmLayout:
    """What the alarm core needs of the floor file."""

    rio_rooms: frozenset[str]
    panel_rooms: Mapping[str, str]  # room -> call panel bus
    has_floorpanel: bool
    escalation: tuple[tuple[int, str], ...]  # (after_s, notify) per level
    repeat_s: int = 60
    ack_timeout_s: int = 300

    def __post_init__(self) -> None:
        """ValueError unless level 0 is at 0 s, delays increase, and periods are positive."""
        delays = [after for after, _ in self.escalation]
        if not delays or delays[0] != 0:
            raise ValueError("the first escalation level must have after_s = 0")
        if any(b <= a for a, b in itertools.pairwise(delays)):
            raise ValueError(f"escalation delays must increase: {delays}")
        if self.repeat_s <= 0 or self.ack_timeout_s <= 0:
            raise ValueError("repeat_s and ack_timeout_s must be positive")
        object.__setattr__(self, "panel_rooms", MappingProxyType(dict(self.panel_rooms)))


def _opt_ts(dt: datetime | None) -> str | None:
    return None if dt is None else format_ts(dt)
