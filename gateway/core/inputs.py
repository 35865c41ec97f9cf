"""Everything that may change the floor's state, as values: the inputs of ``decide``.

Observations of the buses, call-panel messages, the passing of time, the MQTT link and the
broker's refusals, signed commands, floorctl actions, what the lock keeper found and read,
and the daemon's own lifecycle. The engine's committer takes them one at a time, in
arrival order, so the order of ``seq`` in the outbox is the order of decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from drivers.ids import DeviceRef, RoomId
from drivers.observations import DriverObservation
from drivers.panelproto import CallCancelled, CallPlaced, LineFault, PanelOffline, PanelOnline
from gateway.core.locksync import LogEntry
from gateway.core.remote_config import Proposal

__all__ = [
    "AccessLogRead",
    "AlarmAction",
    "AuditAction",
    "ClockJumped",
    "CommandRefused",
    "ConfigVerdict",
    "Input",
    "LampChecked",
    "Lifecycle",
    "LinkChanged",
    "LockRepaired",
    "PanelEvent",
    "RunCommand",
    "StorageChanged",
    "Tick",
    "UplinkRefusing",
]

PanelEvent = CallPlaced | CallCancelled | LineFault | PanelOffline | PanelOnline


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: apply whatever fell due (stay boundaries, escalations, door timers)."""


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """The MQTT link to the central system went up or down."""

    up: bool


@dataclass(frozen=True, slots=True)
class UplinkRefusing:
    """The broker began (or stopped) refusing publishes that must be delivered (PUBACK
    reason code >= 0x80): an event at the outbox's head, or a retained state."""

    refusing: bool


@dataclass(frozen=True, slots=True)
class ClockJumped:
    """The wall clock was stepped: every lock is checked against the new time."""

    seconds: float


@dataclass(frozen=True, slots=True)
class RunCommand:
    """A signed, fresh, well-formed command to execute (its reply is the outcome)."""

    id: str
    type: str
    body: BaseModel | Proposal  # the validated body, or what the pipeline made of it
    operator: str | None = None  # who signed it; None: the floor's HMAC key


@dataclass(frozen=True, slots=True)
class CommandRefused:
    """A command refused before a handler ran: ``command.rejected``, the reply recorded or not."""

    id: str
    code: str
    message: str
    recorded: bool  # passed the signature and freshness checks: counts as executed
    by: str | None = None  # the operator who signed it, when the signature was good


@dataclass(frozen=True, slots=True)
class AlarmAction:
    """A technician acknowledges or resolves an alarm from the floor (floorctl)."""

    op: Literal["ack", "resolve"]
    alarm_id: str
    by: str


@dataclass(frozen=True, slots=True)
class AuditAction:
    """A changing control request, recorded in the audit log."""

    actor: str
    action: str
    room: str | None
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LockRepaired:
    """The lock keeper brought a lock's slots in line with what is authorised."""

    room: RoomId
    device: DeviceRef
    added: int
    removed: int
    drift: bool  # what it found differed from our own pending work: report it


@dataclass(frozen=True, slots=True)
class AccessLogRead:
    """New entries of a lock's access log, the entries lost from its ring, the new head."""

    device: DeviceRef
    entries: Sequence[LogEntry]
    gap: int
    last_seen: int | None


@dataclass(frozen=True, slots=True)
class StorageChanged:
    """The committer could not write the database (``failing``), or writes it again."""

    failing: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class LampChecked:
    """A write of a room's dome or reassure lamp read back (``ok``) or did not."""

    device: DeviceRef
    point: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The daemon started or is stopping (``gateway.started`` / ``gateway.stopping``)."""

    event: Literal["gateway.started", "gateway.stopping"]
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConfigVerdict:
    """The confirmation window of a remotely applied file ended: it held, or why not."""

    sha256: str
    problems: Sequence[str] = ()


Input = (
    DriverObservation
    | PanelEvent
    | Tick
    | LinkChanged
    | UplinkRefusing
    | ClockJumped
    | RunCommand
    | CommandRefused
    | AlarmAction
    | AuditAction
    | LockRepaired
    | AccessLogRead
    | StorageChanged
    | LampChecked
    | Lifecycle
    | ConfigVerdict
)
"""Every input of the floor, once: ``decide`` is exhaustive over this union."""
