"""Pydantic models of every MQTT payload (mqtt.md): the wire contract, one class per payload.

Outgoing payloads (status, event envelope, room state, alarm snapshot, reply) and incoming
ones (command envelope and each command body) forbid unknown keys and validate strictly
(no string-to-number coercion, a bool is not a number). Times are RFC 3339 UTC with a ``Z``
and are written with milliseconds. The descriptions are written for the AsyncAPI document
generated from these models. ``COMMAND_BODIES`` maps each command ``type`` to its body.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from gateway.model.time import TS_RE, format_ts, parse_ts

SCHEMA_VERSION = 1
TOKEN_RE = re.compile(r"[0-9a-fA-F]{16}")
MAX_TOKENS = 8


def _token(value: str) -> str:
    if int(value, 16) == 0:
        raise ValueError("a token of all zeros is invalid")
    return value.lower()


def _exactly_one(value: object) -> object:
    # Literal[1] alone would take true and 1.0 (they compare equal to 1).
    if type(value) is not int:
        raise ValueError("must be the integer 1")
    return value


SchemaVersion = Annotated[
    Literal[1], BeforeValidator(_exactly_one), Field(description="Payload schema version")
]


def _unique(tokens: list[str]) -> list[str]:
    # The same key given twice (perhaps in another case) is one key.
    return list(dict.fromkeys(tokens))


Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_ts),
    PlainSerializer(format_ts, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TS_RE.pattern + "$"}),
]
"""An RFC 3339 UTC time with ``Z``."""

Token = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-fA-F]{16}$"),
    AfterValidator(_token),
    Field(description="A credential: 16 hex digits, either case (written lowercase), not all 0"),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=128)]
RoomId = Annotated[str, Field(min_length=1, max_length=32, description="A room on this floor")]
Setpoint = Annotated[
    float, Field(ge=5.0, le=35.0, description="°C; the room's profile may narrow the range")
]
Mode = Literal["auto", "cool", "heat", "fan_only"]  # gateway.core.kinds.tstat.MODES
Fan = Literal["auto", "low", "medium", "high"]  # gateway.core.kinds.tstat.FANS
Circuit = Literal["entry", "main", "bedside", "bath"]
ErrorCode = Literal[
    "unauthenticated", "forbidden", "stale", "invalid", "unknown_room", "conflict", "internal"
]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
MAX_FLOOR_FILE_CHARS = 60_000  # within the 64 KiB command payload, with JSON escaping
EventType = Literal[
    "gateway.started",
    "gateway.stopping",
    "room.checked_in",
    "room.checked_out",
    "room.stay_extended",
    "access.granted",
    "access.denied",
    "access.remote_unlock",
    "door.opened",
    "door.closed",
    "door.held_open",
    "lock.drift_repaired",
    "alarm.raised",
    "alarm.escalated",
    "alarm.acknowledged",
    "alarm.resolved",
    "device.offline",
    "device.online",
    "device.fault",
    "callpanel.offline",
    "callpanel.online",
    "lock.tamper",
    "room.dnd",
    "room.mur",
    "room.keycard",
    "room.window",
    "command.rejected",
    "config.applied",
    "config.rolled_back",
    "config.refused",
    "lock.battery",
    "room.moved",
    "lockdown.changed",
    "audit",
]


class Message(BaseModel):
    """Base of every payload: unknown keys are refused, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)
    omit_when_none: ClassVar[frozenset[str]] = frozenset()
    """Optional keys that are absent from the wire when ``None`` (others are written null)."""

    def to_dict(self) -> dict[str, Any]:
        """The payload as a JSON-ready dict, by alias, optional absent keys left out."""
        data = self.model_dump(mode="json", by_alias=True)
        return {k: v for k, v in data.items() if v is not None or k not in self.omit_when_none}

    def to_json(self) -> bytes:
        """The payload as compact UTF-8 JSON."""
        return dumps(self.to_dict())


def dumps(value: object) -> bytes:
    """Compact UTF-8 JSON, as every payload is written (NaN and Infinity refused)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# -- gateway → central -----------------------------------------------------------------


HealthReasonCode = Literal[
    "loop_stalled",
    "storage",
    "bus_down",
    "call_path",
    "broker_unreachable",
    "uplink_refused",
    "devices_offline",
    "clock_jump",
]
"""Every reason the floor's health may give (gateway.core.health), in the order listed."""


class HealthReason(Message):
    """One reason the floor is not ok (operations.md "Health")."""

    code: HealthReasonCode = Field(description="Stable reason code")
    level: Literal["degraded", "failed"]
    message: str


class HealthDoc(Message):
    """The floor's health: ok, degraded or failed, and every reason."""

    level: Literal["ok", "degraded", "failed"]
    reasons: list[HealthReason] = Field(default_factory=list)


class Status(Message):
    """``{root}/status`` (retained): the gateway is online; the will says the same, offline."""

    schema_: SchemaVersion = Field(default=1, alias="schema")
    gateway: str = Field(description="The gateway id (also its MQTT client id)")
    online: bool
    version: str = Field(description="The gateway software version")
    started_at: Timestamp = Field(description="When this gateway process started")
    health: HealthDoc | None = Field(
        default=None,
        description="v2: the floor's health while online (republished when its level or"
        " reasons change); absent from the offline status",
    )

    omit_when_none: ClassVar[frozenset[str]] = frozenset({"health"})


class EventEnvelope(Message):
    """``{root}/events``: one outbox event, delivered at least once and in ``seq`` order."""

    schema_: SchemaVersion = Field(default=1, alias="schema")
    gateway: str
    seq: int = Field(ge=1, description="Gapless from 1, never reused; a gap means loss")
    id: str = Field(description="Unique event id: the central system drops duplicates by id")
    ts: Timestamp
    type: EventType
    room: str | None = Field(default=None, description="Absent for floor-level events")
    data: dict[str, Any] = Field(default_factory=dict)

    omit_when_none: ClassVar[frozenset[str]] = frozenset({"room"})


class RoomClimate(Message):
    """The thermostat's values; ``null`` where unknown."""

    temp_c: float | None
    setpoint_c: float | None
    mode: Mode | None
    fan: Fan | None
    power: bool | None


class RoomLights(Message):
    """Light circuits, on or off; ``null`` where unknown."""

    entry: bool | None
    main: bool | None
    bedside: bool | None
    bath: bool | None


class RoomMeter(Message):
    """The room's energy meter: cumulative energy and the power now; ``null`` where unknown."""

    energy_kwh: float | None
    power_w: float | None


EnergyModeName = Literal["comfort", "away", "unsold", "precondition", "window", "manual"]


class RoomEnergy(Message):
    """The room's energy mode and since when (``null`` before the first after start)."""

    mode: EnergyModeName | None
    since: Timestamp | None


class RoomState(Message):
    """``{root}/rooms/{room}/state`` (retained): a room snapshot, republished on change."""

    schema_: SchemaVersion = Field(default=1, alias="schema")
    room: RoomId
    ts: Timestamp
    occupancy: Literal["vacant", "occupied"]
    stay_id: str | None
    rental: Literal["sold", "unsold"] = Field(description="sold while a stay is active")
    presence: Literal["present", "absent"] | None = Field(
        description="null when it cannot be told (treated as present)"
    )
    energy: RoomEnergy
    housekeeping: Literal["dirty", "clean", "inspected", "out_of_order"] | None = Field(
        description="null until the PMS sets it or a checkout makes the room dirty"
    )
    service: Literal["in_progress", "idle"] = Field(
        description="in_progress while the staff key is turned at the room and no call is open"
    )
    door: Literal["open", "closed"] | None
    deadbolt: bool | None
    lock_battery: Annotated[int, Field(ge=0, le=100)] | None
    climate: RoomClimate | None = Field(description="null when the room has no thermostat")
    lights: RoomLights | None = Field(description="null when the room has no room I/O")
    keycard: bool | None
    dnd: bool | None
    mur: bool | None
    window_open: bool | None
    meter: RoomMeter | None = Field(
        default=None, description="Present only for a room with an energy meter"
    )
    call: Literal["idle", "active", "acknowledged"]
    devices: dict[str, Literal["online", "offline"]] = Field(
        description="Each of the room's devices by role (tstat, lock, rio, meter), online or"
        " offline"
    )
    observed: dict[str, Timestamp | None] = Field(
        default_factory=dict,
        description="Each device role: when it last answered a read (null: not this run)",
    )
    stale: list[str] = Field(
        default_factory=list,
        description="Fields (dotted paths: climate.temp_c, door, call) whose value is older"
        " than the device's stale limit while it is online: published as last read, not"
        " current",
    )

    omit_when_none: ClassVar[frozenset[str]] = frozenset({"meter"})


AlarmPoint = Literal[
    "bath",
    "bed",
    "other",
    "callpanel_offline",
    "call_point_unreachable",
    "call_point_fault",
    "lock_tamper",
    "uplink_refused",
    "lamp_fault",
    "storage",
    "no_activity",
]


class AlarmSnapshot(Message):
    """``{root}/alarms/{alarm_id}`` (retained while open) and the ``data`` of ``alarm.*``."""

    schema_: SchemaVersion = Field(default=1, alias="schema")
    alarm_id: str
    room: str | None = Field(description="null for a floor-wide alarm (a call panel, storage)")
    kind: Literal["call", "technical", "wellbeing"]
    point: AlarmPoint = Field(description="Call point (bath, bed, other) or technical cause")
    state: Literal["active", "acknowledged", "resolved"]
    level: int = Field(ge=0, description="Escalation level reached; 0 goes with alarm.raised")
    raised_at: Timestamp
    acknowledged_at: Timestamp | None
    acknowledged_by: str | None
    resolved_at: Timestamp | None
    resolved_by: str | None


class InventoryDevice(Message):
    """A device of a room: its role and its profile (no bus, unit or address)."""

    role: str
    profile: str


class InventoryRoom(Message):
    """A room: its devices and the call panel serving it (its bus name, or null)."""

    room: RoomId
    devices: list[InventoryDevice]
    callpanel: str | None


class InventoryLevel(Message):
    """One escalation level: after how long, who is notified."""

    after_s: int = Field(ge=0)
    notify: str


class Inventory(Message):
    """``{root}/inventory`` (retained): what the floor is made of, from its floor file;
    names no bus port, host, key or token."""

    schema_: SchemaVersion = Field(default=1, alias="schema")
    gateway: str
    version: str = Field(description="The gateway software version")
    config_sha256: str = Field(description="SHA-256 (hex) of the floor file's bytes")
    timezone: str = Field(description="The floor's time zone (IANA name)")
    rooms: list[InventoryRoom]
    escalation: list[InventoryLevel]


class ReplyError(Message):
    """Why a command was refused or failed."""

    code: ErrorCode = Field(
        description="The spec's refusal codes; 'internal': the gateway failed to execute the"
        " command, nothing changed and it was not recorded, so it may be sent again"
    )
    message: str


class Reply(Message):
    """``{root}/reply``: the answer to a command with a readable ``id``."""

    schema_: SchemaVersion = Field(default=1, alias="schema")
    id: str
    ok: bool
    result: dict[str, Any] | None = Field(
        default=None, description="Present when ok, e.g. the devices still pending"
    )
    error: ReplyError | None = Field(default=None, description="Present when not ok")
    duplicate: Literal[True] | None = Field(
        default=None,
        description="Present when this is the original reply of an id already executed",
    )
    by: str | None = Field(
        default=None, description="The operator who signed the command (operator signatures)"
    )

    omit_when_none: ClassVar[frozenset[str]] = frozenset({"result", "error", "duplicate", "by"})

    @model_validator(mode="after")
    def _one_outcome(self) -> Self:
        if self.ok != (self.result is not None) or self.ok == (self.error is not None):
            raise ValueError("ok replies carry result, refusals carry error")
        return self


# -- central → gateway -----------------------------------------------------------------


class CommandEnvelope(Message):
    """``{root}/cmd``: a signed command (the floor's HMAC key, or an operator's Ed25519 key)."""

    schema_: SchemaVersion = Field(default=1, alias="schema")
    id: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="Unique command id; executed at most once within 24 h"
    )
    type: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="One of the command types; an unknown type is invalid"
    )
    issued_at: Timestamp = Field(description="Refused as stale if > 300 s old or > 30 s ahead")
    body: dict[str, Any]
    alg: Literal["ed25519"] | None = Field(
        default=None, description="Present (with operator) when an operator signed the command"
    )
    operator: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="The signing operator's id (with alg)"
    )
    sig: Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{64}|[0-9a-f]{128})$")] = Field(
        description="Lowercase hex of the signature over the canonical JSON of the envelope"
        " without sig: HMAC-SHA256 with the floor's key, or Ed25519 with the operator's key"
    )

    omit_when_none: ClassVar[frozenset[str]] = frozenset({"alg", "operator"})


class Preferences(Message):
    """A guest's stored preferences, applied at check-in."""

    setpoint_c: Setpoint | None = None
    scene: Text | None = None
    wellbeing_h: Annotated[int, Field(ge=1, le=48)] | None = Field(
        default=None,
        description="opt-in well-being check: hours without activity in a present room",
    )


class CheckinBody(Message):
    """``checkin``: authorise the tokens from ``valid_from`` until ``valid_until``."""

    room: RoomId
    stay_id: Text
    valid_from: Timestamp
    valid_until: Timestamp
    tokens: Annotated[list[Token], AfterValidator(_unique)] = Field(
        min_length=1, max_length=MAX_TOKENS, description="1 to 8 tokens (duplicates merged)"
    )
    preferences: Preferences | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class CheckoutBody(Message):
    """``checkout``: revoke every token of the stay now; the room becomes vacant."""

    room: RoomId
    stay_id: Text


class ExtendBody(Message):
    """``extend``: move the end of the stay."""

    room: RoomId
    stay_id: Text
    valid_until: Timestamp


class AddTokenBody(Message):
    """``add_token``: issue one more key for the stay."""

    room: RoomId
    stay_id: Text
    token: Token


class RevokeTokenBody(Message):
    """``revoke_token``: revoke one key of the stay (e.g. a lost card)."""

    room: RoomId
    stay_id: Text
    token: Token


class SetClimateBody(Message):
    """``set_climate``: change the thermostat; at least one of the settings."""

    room: RoomId
    setpoint_c: Setpoint | None = None
    mode: Mode | None = None
    fan: Fan | None = None
    power: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if all(v is None for v in (self.setpoint_c, self.mode, self.fan, self.power)):
            raise ValueError("give at least one of setpoint_c, mode, fan, power")
        return self


class SetLightsBody(Message):
    """``set_lights``: switch light circuits."""

    room: RoomId
    circuits: dict[Circuit, bool] = Field(min_length=1, description="circuit → on")


class UnlockBody(Message):
    """``unlock``: remote momentary unlock, audited."""

    room: RoomId
    by: Text
    reason: Annotated[str, StringConstraints(max_length=256)]


class AckAlarmBody(Message):
    """``ack_alarm``: acknowledge an alarm; stops escalation."""

    alarm_id: Text
    by: Text


class ResolveAlarmBody(Message):
    """``resolve_alarm``: resolve a technical alarm or a bedside call."""

    alarm_id: Text
    by: Text


class ResyncBody(Message):
    """``resync``: republish status, every room state and every open alarm."""


class ApplyConfigBody(Message):
    """``apply_config``: check, switch to and confirm a new floor file (operations.md)."""

    floor_toml: Annotated[str, StringConstraints(min_length=1, max_length=MAX_FLOOR_FILE_CHARS)] = (
        Field(description="The whole floor file, as text")
    )
    sha256: Sha256 = Field(description="Lowercase hex SHA-256 of floor_toml as UTF-8")
    confirm_s: Annotated[int, Field(ge=1, le=900)] = Field(
        default=120,
        description="How long the floor must hold on the new file before it is kept: 30..900"
        " (the floor file's [remote_config] confirm_min_s, default 30, is the lower bound)",
    )


Housekeeping = Literal["dirty", "clean", "inspected", "out_of_order"]


class SetHousekeepingBody(Message):
    """``set_housekeeping``: the PMS's housekeeping status of the room."""

    room: RoomId
    status: Housekeeping
    by: Text


class SetEnergyBody(Message):
    """``set_energy``: hold the room in comfort whatever the presence until the stay ends."""

    room: RoomId
    hold: bool


REPLAY_MAX = 10_000  # mqtt.md v2: at most 10 000 events a request


class ReplayBody(Message):
    """``replay``: publish the stored events from ``from_seq`` (to ``to_seq``) again, each its
    original envelope, to ``{root}/replay``; at most 10 000 a request."""

    from_seq: int = Field(ge=1)
    to_seq: int | None = Field(
        default=None,
        ge=1,
        description="Last seq wanted (at most from_seq + 9999); absent: as far as stored,"
        " up to 10 000 events",
    )

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.to_seq is not None:
            if self.to_seq < self.from_seq:
                raise ValueError("to_seq must not be before from_seq")
            if self.to_seq - self.from_seq >= REPLAY_MAX:
                raise ValueError(f"at most {REPLAY_MAX} events a request")
        return self


class SeqRange(Message):
    """A range of ``seq``, both ends included."""

    from_seq: int = Field(ge=1)
    to_seq: int = Field(ge=1)


class ReplayResult(Message):
    """The ``result`` of a ``replay`` reply: what was published again, and what is gone."""

    count: int = Field(ge=0, description="Events published to {root}/replay, in seq order")
    first_seq: int | None = Field(description="seq of the first published (null: none)")
    last_seq: int | None = Field(description="seq of the last published (null: none)")
    missing: list[SeqRange] = Field(
        description="Ranges of the request no longer stored (purged after events_keep_days,"
        " or shed at the disk cap); seqs not yet produced are not missing"
    )


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
LocalTime = Annotated[
    str,
    StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$"),
    Field(description="Local time HH:MM in the floor's time zone"),
]
KeyId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]


class StaffSchedule(Message):
    """When a staff key is due: on ``days``, from ``from``:00 inclusive to ``until``:00
    exclusive, local time; an ``until`` earlier than ``from`` runs past midnight."""

    days: list[Day] = Field(min_length=1, max_length=7)
    from_: LocalTime = Field(alias="from")
    until: LocalTime

    @model_validator(mode="after")
    def _span(self) -> Self:
        if self.from_ == self.until:
            raise ValueError("from and until are the same time (omit the schedule instead)")
        return self


class StaffKeyBody(Message):
    """``staff_key``: add or revoke a staff credential, written into the locks of its zones
    only while its schedule allows."""

    op: Literal["add", "revoke"]
    key_id: KeyId
    token: Token | None = Field(default=None, description="Required to add")
    zones: list[Annotated[str, Field(min_length=1, max_length=32)]] | None = Field(
        default=None,
        min_length=1,
        description='Room ids, or ["floor"] for every room; required to add',
    )
    schedule: StaffSchedule | None = Field(default=None, description="None: always due")
    security: bool = False

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.op == "add" and (self.token is None or self.zones is None):
            raise ValueError("op add needs token and zones")
        return self


class LockdownBody(Message):
    """``lockdown``: on, every lock keeps only security keys and remote unlock is refused,
    across restarts; off, every lock goes back to what is authorised."""

    on: bool
    by: Text
    reason: Annotated[str, StringConstraints(max_length=256)]


class MoveRoomBody(Message):
    """``move_room``: the stay's tokens open ``to`` at once and ``from`` until the grace ends."""

    stay_id: Text
    from_: RoomId = Field(alias="from")
    to: RoomId
    grace_s: Annotated[int, Field(ge=0, le=900)] = 300


COMMAND_BODIES: dict[str, type[Message]] = {
    "checkin": CheckinBody,
    "checkout": CheckoutBody,
    "extend": ExtendBody,
    "add_token": AddTokenBody,
    "revoke_token": RevokeTokenBody,
    "set_climate": SetClimateBody,
    "set_lights": SetLightsBody,
    "unlock": UnlockBody,
    "ack_alarm": AckAlarmBody,
    "resolve_alarm": ResolveAlarmBody,
    "resync": ResyncBody,
    "apply_config": ApplyConfigBody,
    "set_housekeeping": SetHousekeepingBody,
    "set_energy": SetEnergyBody,
    "replay": ReplayBody,
    "move_room": MoveRoomBody,
    "staff_key": StaffKeyBody,
    "lockdown": LockdownBody,
}
"""Each command ``type`` of mqtt.md and the model of its ``body``."""
