"""Effects as values: what a decision of the core asks the engine to write and to do.

``decide(state, input, now)`` returns a list of these; ``Effect`` is their closed union,
and every dispatch over it in the engine ends in ``assert_never``. The engine's
committer writes the persisting ones of one decision in one SQLite transaction — events,
audit rows, saved records — and only then carries out the others: device writes, panel
lamps, retained MQTT state, lock reconciliation. Nothing is announced that is not on disk,
with one exception: the lamps and sounders of the annunciation (``is_safety``) are carried
out at once, before the commit and whether or not it succeeds, so a call is annunciated
on the floor even while the database cannot be written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, assert_never

from drivers.ids import DeviceRef, RoomId
from drivers.observations import PointValue
from drivers.panelproto import LampState
from drivers.profile import PollClass

if TYPE_CHECKING:
    from gateway.core.alarms import Alarm
    from gateway.core.authz import Stay
    from gateway.core.remote_config import ConfigEntry, ConfigRecord
    from gateway.core.staff import Lockdown, StaffKey

__all__ = [
    "Action",
    "Audit",
    "DeviceBack",
    "Effect",
    "Emit",
    "MarkWelcomed",
    "Persisted",
    "ReadAccessLog",
    "ReconcileLock",
    "RecordCommand",
    "Republish",
    "Restart",
    "Retain",
    "SaveAlarm",
    "SaveConfig",
    "SaveCounter",
    "SaveLedger",
    "SaveLockdown",
    "SaveLogHead",
    "SaveRoomStatus",
    "SaveStaffKey",
    "SaveStay",
    "SetPanelLamp",
    "WritePoint",
    "is_safety",
    "split",
]

# -- written in the decision's transaction ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Emit:
    """Append an event to the outbox (MQTT ``{root}/events``); ``room`` None for the floor's."""

    type: str
    room: str | None = None
    data: Mapping[str, object] = field(default_factory=dict)
    low_value: bool = False  # may be shed when the outbox reaches its disk cap


@dataclass(frozen=True, slots=True)
class Audit:
    """Record who did what (an unlock, an acknowledgement, a drift repair…) in the audit log."""

    actor: str
    action: str
    room: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SaveAlarm:
    """Upsert this alarm in the store (same transaction as its event)."""

    alarm: Alarm


@dataclass(frozen=True, slots=True)
class SaveStay:
    """Persist this stay (and replace its stored tokens)."""

    stay: Stay


@dataclass(frozen=True, slots=True)
class SaveStaffKey:
    """Persist a staff key added by command, or its revocation (``key`` None; the hashes of
    the tokens revoked under its id, so a floor-file key of that id stays revoked)."""

    key_id: str
    key: StaffKey | None
    revoked: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SaveLockdown:
    """Persist the floor's lockdown (on or off): it survives restarts and power loss."""

    lockdown: Lockdown


@dataclass(frozen=True, slots=True)
class SaveCounter:
    """Persist the last value seen of a call counter, with the decision it caused."""

    device: DeviceRef
    point: str
    value: int


@dataclass(frozen=True, slots=True)
class SaveLogHead:
    """Persist the last access-log entry read from a lock (with the events it produced)."""

    device: DeviceRef
    head: int | None


@dataclass(frozen=True, slots=True)
class MarkWelcomed:
    """The welcome scene ran for this stay (first door opening): never again for it."""

    room: RoomId
    stay_id: str


@dataclass(frozen=True, slots=True)
class SaveRoomStatus:
    """Persist a room's housekeeping status and its set_energy hold (the stay it holds for)."""

    room: RoomId
    housekeeping: str | None
    hold_stay: str | None


@dataclass(frozen=True, slots=True)
class SaveLedger:
    """Persist rooms' day totals of the savings ledger ``(room, row)``; rows older than
    ``keep_days`` (if given) are purged."""

    rows: tuple[tuple[str, Mapping[str, object]], ...]
    keep_days: int | None = None


@dataclass(frozen=True, slots=True)
class RecordCommand:
    """The command ``id`` was executed at ``at``: its reply, for 24 h of duplicates."""

    id: str
    at: datetime
    reply: bytes


@dataclass(frozen=True, slots=True)
class SaveConfig:
    """Write the remote-configuration record, with a file's text and a history line if any."""

    record: ConfigRecord
    text: tuple[str, str] | None = None  # (sha256, the floor file's text) to keep
    entry: ConfigEntry | None = None


# -- carried out after the commit -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WritePoint:
    """Write one point (by role) of a device, verified by read-back, at this priority."""

    device: DeviceRef
    point: str  # role name, e.g. "dome_lamp", "slot", "setpoint"
    value: PointValue
    index: int = 0
    priority: PollClass = PollClass.LOCK
    verify: bool = True


@dataclass(frozen=True, slots=True)
class SetPanelLamp:
    """Send ``LAMP,<room>,<state>`` to a call panel."""

    bus: str
    room: str
    state: LampState


@dataclass(frozen=True, slots=True)
class Retain:
    """Publish ``payload`` retained at ``{root}/<subtopic>``; None clears it."""

    subtopic: str
    payload: dict[str, object] | None


@dataclass(frozen=True, slots=True)
class ReconcileLock:
    """Bring the room's lock slots to what is authorised now.

    ``change``: the authorisation changed (what differs is our own pending work);
    ``routine``: the same, from a staff schedule turning (nobody waits on it: it yields to
    changes); ``verify``: compare with what is known (what differs is drift, repaired and
    reported). ``read_slots``: read every slot first.
    """

    room: RoomId
    cause: Literal["change", "routine", "verify"]
    read_slots: bool = False


@dataclass(frozen=True, slots=True)
class ReadAccessLog:
    """A lock's log head moved: read its new access-log entries."""

    device: DeviceRef


@dataclass(frozen=True, slots=True)
class DeviceBack:
    """A device answers again: make the writes still pending for it."""

    device: DeviceRef


@dataclass(frozen=True, slots=True)
class Republish:
    """Publish the status, every open alarm and every room state again (``resync``)."""


@dataclass(frozen=True, slots=True)
class Restart:
    """Stop cleanly and start again onto the configuration the record names."""

    reason: str


Persisted = (
    Emit
    | Audit
    | SaveAlarm
    | SaveStay
    | SaveCounter
    | SaveLogHead
    | MarkWelcomed
    | SaveRoomStatus
    | SaveLedger
    | SaveStaffKey
    | SaveLockdown
    | SaveCounter
    | SaveLogHead
    | MarkWelcomed
    | RecordCommand
    | SaveConfig
)
"""Written in the decision's transaction."""
Action = (
    WritePoint
    | SetPanelLamp
    | Retain
    | ReconcileLock
    | ReadAccessLog
    | DeviceBack
    | Republish
    | Restart
)
"""Carried out once the decision is committed."""
Effect = Persisted | Action
"""Every effect of the core, once: the engine's dispatches are exhaustive over this union."""


def split(effects: Iterable[Effect]) -> tuple[list[Persisted], list[Action]]:
    """A decision's effects: what is written, and what is done after, each in order."""
    persisted: list[Persisted] = []
    actions: list[Action] = []
    for effect in effects:
        match effect:
            case (
                Emit()
                | Audit()
                | SaveAlarm()
                | SaveStay()
                | SaveStaffKey()
                | SaveLockdown()
                | SaveCounter()
                | SaveLogHead()
                | MarkWelcomed()
                | SaveRoomStatus()
                | SaveLedger()
                | RecordCommand()
                | SaveConfig()
            ):
                persisted.append(effect)
            case (
                WritePoint()
                | SetPanelLamp()
                | Retain()
                | ReconcileLock()
                | ReadAccessLog()
                | DeviceBack()
                | Republish()
                | Restart()
            ):
                actions.append(effect)
            case _:
                assert_never(effect)
    return persisted, actions


def is_safety(action: Action) -> bool:
    """A lamp or sounder of the annunciation: carried out at once, whatever the commit."""
    if isinstance(action, SetPanelLamp):
        return True
    return isinstance(action, WritePoint) and action.priority is PollClass.EMERGENCY
