"""What floorctl asks and what the daemon answers: the control protocol's typed results.

Each subcommand's answer is a frozen dataclass. ``to_json()`` gives its stable keys (the
field names; the ``--json`` output and the wire format); ``from_json()`` is the client's
parser: it checks every type, ignores keys it does not know (a newer daemon may add
some) and raises ValueError on anything else. The daemon answers through ``FloorView``,
which the floor engine implements on its real objects.

Wire protocol, one request per connection: the client sends one line
``{"v":1,"cmd":CMD,"args":{...}}``; the daemon answers one line
``{"v":1,"ok":true,"result":{...}}`` or ``{"v":1,"ok":false,"error":{"code","message"}}``.
Streaming commands first send ``{"v":1,"stream":"event"|"progress","data":{...}}`` lines:
``scan`` then ends with its reply; ``events`` with ``follow`` runs until the client
hangs up.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Self

__all__ = [
    "CHANGING_COMMANDS",
    "COMMANDS",
    "MAX_REQUEST_BYTES",
    "PROTOCOL_VERSION",
    "AlarmRow",
    "AlarmTable",
    "AlarmUpdate",
    "AuditCheck",
    "AuditLog",
    "AuditRow",
    "BusHealth",
    "ConfigHistory",
    "ConfigHistoryRow",
    "ConfigView",
    "DeviceRow",
    "DeviceTable",
    "EnergyDay",
    "EnergyLedger",
    "EventLog",
    "EventRow",
    "FloorMap",
    "FloorView",
    "HealthReasonRow",
    "HealthView",
    "LampCheck",
    "LampTest",
    "LockRow",
    "LockTable",
    "MqttLink",
    "OutboxInfo",
    "Result",
    "RoomDetail",
    "RoomRow",
    "RoomTable",
    "ScanHit",
    "ScanProgress",
    "ScanResult",
    "Status",
]

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 16 * 1024  # a request is a command name and a few short arguments
READ_COMMANDS = frozenset(
    {
        "status",
        "floor",
        "rooms",
        "room",
        "devices",
        "alarms",
        "events",
        "outbox",
        "health",
        "config.show",
        "config.history",
        "energy",
        "locks",
        "audit",
        "audit.verify",
    }
)
# Requests that change something (or load a bus): admin group, audited.
CHANGING_COMMANDS = frozenset({"alarms.ack", "alarms.resolve", "scan", "lamps.test"})
COMMANDS = READ_COMMANDS | CHANGING_COMMANDS

JsonObject = dict[str, Any]


class _Json:
    """JSON conversion for the frozen dataclasses below (keys: the field names, in order)."""

    __slots__ = ()

    def to_json(self) -> JsonObject:
        """This value as a JSON object with stable keys."""
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """Parse ``to_json()`` output; ValueError naming the place if malformed."""
        where = cls.__name__
        if not isinstance(doc, Mapping):
            # one error type for every malformed reply: the client reports them alike
            raise ValueError(f"{where}: expected an object, got {type(doc).__name__}")  # noqa: TRY004
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in doc:
                kwargs[f.name] = _load(hints[f.name], doc[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}: missing {f.name!r}")
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class MqttLink(_Json):
    """The upstream link and the outbox behind it."""

    connected: bool
    since: str | None  # when the link last went up or down (RFC 3339), None if never
    reconnects: int
    outbox_depth: int  # events not yet acknowledged by the broker
    oldest_undelivered_ts: str | None
    in_flight: int
    shed: int  # low-value events dropped at the disk cap


@dataclass(frozen=True, slots=True)
class BusHealth(_Json):
    """One bus: its transaction rate, error rate and offline devices."""

    name: str
    kind: str  # modbus-rtu | modbus-tcp | callpanel
    tx_per_s: float
    error_rate: float  # failed / attempted transactions, 0..1, over the recent window
    offline: tuple[str, ...] = ()  # device names, e.g. "1203/lock"


@dataclass(frozen=True, slots=True)
class Status(_Json):
    """``floorctl status``: the gateway at a glance."""

    gateway: str
    version: str
    started_at: str
    uptime_s: float
    mqtt: MqttLink
    buses: tuple[BusHealth, ...]
    open_alarms: int


@dataclass(frozen=True, slots=True)
class RoomRow(_Json):
    """One room in the floor map and the rooms table (None: not known, e.g. device offline)."""

    room: str
    occupancy: str | None  # vacant | occupied
    stay_id: str | None
    door: str | None  # open | closed
    dnd: bool | None
    mur: bool | None
    call: str  # idle | active | acknowledged
    offline: tuple[str, ...] = ()  # roles of the room's devices that are offline
    keycard: bool | None = None
    window_open: bool | None = None
    temp_c: float | None = None
    setpoint_c: float | None = None
    stale: tuple[str, ...] = ()  # fields whose value is not current (mqtt.md ``stale``)

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> RoomRow:
        """The row of an mqtt.md room snapshot (the retained room state)."""
        climate = snapshot.get("climate") or {}
        devices = snapshot.get("devices") or {}
        if not isinstance(climate, Mapping) or not isinstance(devices, Mapping):
            raise TypeError("room snapshot: climate and devices must be objects")
        flat = {
            **snapshot,
            "offline": sorted(str(role) for role, health in devices.items() if health != "online"),
            "temp_c": climate.get("temp_c"),
            "setpoint_c": climate.get("setpoint_c"),
        }
        return cls.from_json(flat)


@dataclass(frozen=True, slots=True)
class DeviceRow(_Json):
    """One device's health: how it answers lately and why it is offline."""

    name: str  # "1203/lock", "floorpanel"
    room: str | None
    role: str
    bus: str
    unit: int
    profile: str
    online: bool
    success_rate: float | None  # answered / polled, 0..1, over the recent window
    latency_ms: float | None  # median answer time over the recent window
    last_seen_s: float | None  # seconds since the last answer; None if never
    consecutive_failures: int = 0
    reason: str | None = None  # why offline: "timeout", "exception 4", "bus gone"…


@dataclass(frozen=True, slots=True)
class AlarmRow(_Json):
    """An alarm: the mqtt.md alarm snapshot's fields (without ``schema``)."""

    alarm_id: str
    room: str | None
    kind: str  # call | technical
    point: str
    state: str  # active | acknowledged | resolved
    level: int
    raised_at: str
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    resolved_at: str | None = None
    resolved_by: str | None = None

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> AlarmRow:
        """The row of an mqtt.md alarm snapshot (``schema`` and other extra keys ignored)."""
        return cls.from_json(snapshot)


class StoredEventLike(Protocol):
    """Anything shaped like gateway.adapters.schema.StoredEvent."""

    @property
    def seq(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def ts(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def room(self) -> str | None: ...
    @property
    def data(self) -> Mapping[str, object]: ...


@dataclass(frozen=True, slots=True)
class EventRow(_Json):
    """One event of the outbox (mqtt.md "Events", without ``schema`` and ``gateway``)."""

    seq: int
    id: str
    ts: str
    type: str
    room: str | None
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stored(cls, event: StoredEventLike) -> EventRow:
        """The row of a stored event (gateway.adapters.schema.StoredEvent)."""
        return cls(event.seq, event.id, event.ts, event.type, event.room, dict(event.data))


@dataclass(frozen=True, slots=True)
class RoomDetail(_Json):
    """``floorctl room ROOM``: the room snapshot, its devices, open alarms, recent events."""

    room: str
    snapshot: Mapping[str, Any]  # the mqtt.md room snapshot
    devices: tuple[DeviceRow, ...]
    alarms: tuple[AlarmRow, ...]
    events: tuple[EventRow, ...]  # most recent last


@dataclass(frozen=True, slots=True)
class OutboxInfo(_Json):
    """``floorctl outbox``: what waits for the broker and what is kept."""

    depth: int  # undelivered events
    oldest_undelivered_seq: int | None
    oldest_undelivered_ts: str | None
    last_delivered_seq: int | None
    delivered_kept: int  # delivered events still stored (what `floorctl events` can show)
    shed: int  # low-value events dropped at the disk cap
    refused: int = 0  # publishes the broker refused (PUBACK reason >= 0x80) since the start


@dataclass(frozen=True, slots=True)
class EnergyDay(_Json):
    """One room's savings-ledger totals for one local day (the ``energy.daily`` data)."""

    room: str
    date: str  # the local day, YYYY-MM-DD
    seconds: Mapping[str, Any]  # energy mode -> seconds in it
    hvac_run_s: int
    lights_on_absent_s: int
    setback_degree_hours: float
    energy_kwh: float | None  # None: the room has no meter
    today: bool = False  # the day under way: totals so far


@dataclass(frozen=True, slots=True)
class EnergyLedger(_Json):
    """``floorctl energy``: the savings ledger of the last ``days`` local days."""

    timezone: str
    days: int
    rows: tuple[EnergyDay, ...]  # by room (floor-file order), then day


@dataclass(frozen=True, slots=True)
class ScanProgress(_Json):
    """How far a bus scan is: ``done`` of ``total`` unit ids probed, ``found`` answered."""

    done: int
    total: int
    found: int = 0


@dataclass(frozen=True, slots=True)
class ScanHit(_Json):
    """A unit id that answered: which register tables, which profiles it is consistent with."""

    unit: int
    tables: tuple[str, ...]  # "coils", "discrete_inputs", "holding", "input"
    profiles: tuple[str, ...]  # profiles whose every read succeeded at this unit
    configured: str | None = None  # the device the floor file puts there, if any


@dataclass(frozen=True, slots=True)
class FloorMap(_Json):
    """``floorctl floor``: every room, in floor-file order."""

    rooms: tuple[RoomRow, ...]


@dataclass(frozen=True, slots=True)
class RoomTable(_Json):
    """``floorctl rooms``: every room, in floor-file order."""

    rooms: tuple[RoomRow, ...]


@dataclass(frozen=True, slots=True)
class DeviceTable(_Json):
    """``floorctl devices``: every device's health."""

    devices: tuple[DeviceRow, ...]


@dataclass(frozen=True, slots=True)
class AlarmTable(_Json):
    """``floorctl alarms``: the open (active or acknowledged) alarms."""

    alarms: tuple[AlarmRow, ...]


@dataclass(frozen=True, slots=True)
class AlarmUpdate(_Json):
    """``floorctl alarms ack|resolve``: the alarm after the change."""

    action: Literal["ack", "resolve"]
    alarm: AlarmRow


@dataclass(frozen=True, slots=True)
class EventLog(_Json):
    """``floorctl events``: events in seq order."""

    events: tuple[EventRow, ...]


@dataclass(frozen=True, slots=True)
class LockRow(_Json):
    """One lock: its slots by kind, pending work, staff keys left out, battery, lockdown."""

    room: str
    online: bool
    guest: int  # slots holding a guest's token now (as last read)
    staff: int  # staff slots holding a staff key now (as last read)
    free: int  # empty slots
    pending: int  # slots still to be written (offline, or not yet done)
    staff_keys: tuple[str, ...]  # key ids due in this lock now
    overflow: tuple[str, ...]  # key ids due here that its staff slots cannot hold
    battery: int | None  # percent; None when unknown or stale
    battery_level: str | None  # ok | low | critical
    battery_stale: bool  # not read for 24 h (or not since the daemon started)


@dataclass(frozen=True, slots=True)
class LockTable(_Json):
    """``floorctl locks``: every lock, the staff slots, and whether the floor is in lockdown."""

    locks: tuple[LockRow, ...]
    staff_slots: int
    lockdown: bool
    lockdown_by: str | None = None
    lockdown_since: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRow(_Json):
    """One audit row: who did what, and its place in the hash chain."""

    seq: int
    ts: str
    actor: str
    action: str
    room: str | None
    detail: Mapping[str, Any]
    hash: str | None


@dataclass(frozen=True, slots=True)
class AuditLog(_Json):
    """``floorctl audit``: audit rows in sequence order."""

    rows: tuple[AuditRow, ...]


@dataclass(frozen=True, slots=True)
class AuditCheck(_Json):
    """``floorctl audit verify``: the whole chain checked; the first row that does not match."""

    ok: bool
    rows: int
    unchained: int  # rows from before the chain existed (not checked)
    first_bad: int | None  # sequence number of the first row that does not match
    problem: str | None


@dataclass(frozen=True, slots=True)
class ScanResult(_Json):
    """``floorctl scan BUS``: the unit ids that answered, of ``probed`` tried."""

    bus: str
    probed: int
    hits: tuple[ScanHit, ...]


@dataclass(frozen=True, slots=True)
class LampCheck(_Json):
    """One lamp of a lamp test: whether its write read back (lit, then as the calls want)."""

    point: str  # dome_lamp | reassure_lamp
    lit: bool  # the ON write read back
    restored: bool  # the write back to what the open calls want read back


@dataclass(frozen=True, slots=True)
class LampTest(_Json):
    """``floorctl lamps test ROOM``: the room's lamps lit for ``held_s`` and read back."""

    room: str
    held_s: float
    lamps: tuple[LampCheck, ...]

    @property
    def ok(self) -> bool:
        """Every lamp lit and came back."""
        return all(lamp.lit and lamp.restored for lamp in self.lamps)


@dataclass(frozen=True, slots=True)
class HealthReasonRow(_Json):
    """One reason the floor is not ok; ``critical``: it withholds the systemd watchdog."""

    code: str  # gateway.core.health.REASON_CODES
    level: str  # degraded | failed
    message: str
    critical: bool = False


@dataclass(frozen=True, slots=True)
class HealthView(_Json):
    """``floorctl health``: ok, degraded or failed, with every reason."""

    level: str  # ok | degraded | failed
    reasons: tuple[HealthReasonRow, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigView(_Json):
    """``floorctl config show``: the floor file running, and remote configuration's state."""

    sha256: str
    source: str  # local (the --config file) | remote (applied with apply_config)
    path: str  # the local floor file
    summary: str  # --check's one-line summary
    last_good: str  # sha256 of the file a rollback returns to
    pending_sha256: str | None  # a file being confirmed
    pending_until: str | None  # when its window ends (RFC 3339)
    text: str  # the floor file's text


@dataclass(frozen=True, slots=True)
class ConfigHistoryRow(_Json):
    """One step of remote configuration: applying, applied, rolled_back, refused, local."""

    ts: str
    action: str
    sha256: str
    reason: str | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigHistory(_Json):
    """``floorctl config history``: the newest steps, oldest first."""

    entries: tuple[ConfigHistoryRow, ...]


Result = (
    Status
    | FloorMap
    | RoomTable
    | RoomDetail
    | DeviceTable
    | AlarmTable
    | AlarmUpdate
    | EventLog
    | OutboxInfo
    | ScanResult
    | HealthView
    | ConfigView
    | ConfigHistory
    | EnergyLedger
    | LockTable
    | AuditLog
    | AuditCheck
    | LampTest
)


class FloorView(Protocol):
    """What the control socket asks of the floor; the engine implements it on its objects.

    Refusals raise gateway.model.errors.ViewRefused(code, message), with an mqtt.md code where
    one fits (``conflict``) or ``not_found``; an unknown room or bus raises KeyError.
    """

    def status(self) -> Status:
        """The gateway at a glance."""
        ...

    def floor_map(self) -> list[RoomRow]:
        """Every room, in floor-file order, for the map."""
        ...

    def rooms(self) -> list[RoomRow]:
        """Every room, in floor-file order, for the table."""
        ...

    async def room(self, room: str) -> RoomDetail:
        """Everything about one room; KeyError for a room not on this floor."""
        ...

    def devices(self) -> list[DeviceRow]:
        """Every device's health, in floor-file order."""
        ...

    def alarms(self) -> list[AlarmRow]:
        """The open alarms (active or acknowledged), oldest first."""
        ...

    async def ack_alarm(self, alarm_id: str, by: str, actor: str) -> AlarmRow:
        """Acknowledge for ``by`` (the name typed); ``actor`` is the OS user who asked."""
        ...

    async def resolve_alarm(self, alarm_id: str, by: str, actor: str) -> AlarmRow:
        """Resolve (mqtt.md: a bathroom call is refused with ``conflict``)."""
        ...

    async def events(self, since_seq: int | None, room: str | None, limit: int) -> list[EventRow]:
        """Stored events in seq order, at most ``limit``, only ``room``'s if given.

        ``since_seq`` given: the first events with ``seq > since_seq``; None: the last
        ``limit`` events.
        """
        ...

    def wait_events(self) -> Awaitable[None]:
        """Resolves once events are appended after this call (for ``events --follow``)."""
        ...

    async def outbox(self) -> OutboxInfo:
        """The outbox's depth and what it keeps."""
        ...

    async def energy(self, room: str | None, days: int) -> EnergyLedger:
        """The savings ledger of the last ``days`` local days (today's so far included), of
        one room or every room; KeyError for a room not on this floor."""
        ...

    async def scan(self, bus: str, progress: Callable[[ScanProgress], None]) -> list[ScanHit]:
        """Probe unit ids 1-247 on ``bus`` between normal work; KeyError for an unknown bus."""
        ...

    def health(self) -> HealthView:
        """The floor's health now (gateway.core.health)."""
        ...

    def config_show(self) -> ConfigView:
        """The floor file running and remote configuration's state."""
        ...

    async def config_history(self, limit: int) -> ConfigHistory:
        """The newest ``limit`` steps of remote configuration, oldest first."""
        ...

    def locks(self) -> LockTable:
        """Every lock's slots, staff keys, pending writes and battery."""
        ...

    async def audit_log(self, since: str | None, limit: int) -> AuditLog:
        """The last ``limit`` audit rows (at or after ``since``, RFC 3339, if given)."""
        ...

    async def audit_verify(self) -> AuditCheck:
        """Check the audit log's whole hash chain."""
        ...

    async def lamp_test(self, room: str) -> LampTest:
        """Light the room's dome and reassure lamps, then restore them; what read back."""
        ...


def _dump(value: object) -> object:
    if isinstance(value, _Json):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _load(tp: Any, value: object, where: str) -> Any:
    """``value`` checked (and converted) against the field type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):  # only ``X | None`` is used here
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _load(inner, value, where)
    if origin is tuple and isinstance(value, list):
        return tuple(_load(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Literal and value in args:
        return value
    if origin is Mapping and isinstance(value, dict):
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, _Json):
        return tp.from_json(value)
    # bool is an int to Python, never to us
    if tp in (str, bool, int) and type(value) is tp:
        return value
    if tp is float and type(value) in (int, float):
        return float(value)  # type: ignore[arg-type]
    raise ValueError(f"{where}: unexpected value {value!r}")
