"""The payloads of mqtt-api.md as typed, frozen values, parsed from the wire.

Parsing checks the keys this library reads and keeps the whole document in ``raw``, so
fields added by later versions of the contract are neither lost nor refused. A payload
that does not parse raises ``ValueError`` (the client logs and drops it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from floorgate_central.signing import parse_ts

__all__ = [
    "Alarm",
    "AlarmCleared",
    "Change",
    "Climate",
    "Event",
    "FloorStatus",
    "Inventory",
    "InventoryRoom",
    "Reply",
    "RoomState",
    "SeqRange",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SeqRange:
    """Event ``seq`` numbers ``first`` to ``last`` inclusive."""

    first: int
    last: int

    def __len__(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class FloorStatus:
    """``{root}/status``: whether the gateway is online, its version, when it started."""

    gateway: str
    online: bool
    version: str
    started_at: datetime
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> FloorStatus:
        """From the decoded JSON payload."""
        return cls(
            gateway=_get(doc, "gateway", str),
            online=_get(doc, "online", bool),
            version=_get(doc, "version", str),
            started_at=parse_ts(doc.get("started_at")),
            raw=doc,
        )


@dataclass(frozen=True, slots=True)
class InventoryRoom:
    """One room of the inventory: its devices as (role, profile), its call panel's bus."""

    room: str
    devices: tuple[tuple[str, str], ...]
    callpanel: str | None


@dataclass(frozen=True, slots=True)
class Inventory:
    """``{root}/inventory``: what the floor is made of (its floor file, without secrets)."""

    gateway: str
    version: str
    config_sha256: str
    rooms: tuple[InventoryRoom, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Inventory:
        """From the decoded JSON payload."""
        rooms = []
        for room in _get(doc, "rooms", list):
            if not isinstance(room, dict):
                raise ValueError(f"rooms: expected objects, got {room!r}")  # noqa: TRY004
            devices = tuple(
                (_get(d, "role", str), _get(d, "profile", str))
                for d in _get(room, "devices", list)
                if isinstance(d, dict)
            )
            rooms.append(
                InventoryRoom(_get(room, "room", str), devices, _opt(room, "callpanel", str))
            )
        return cls(
            gateway=_get(doc, "gateway", str),
            version=_get(doc, "version", str),
            config_sha256=_get(doc, "config_sha256", str),
            rooms=tuple(rooms),
            raw=doc,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One event of ``{root}/events``; ``gap``: seqs found missing just before it, if any."""

    gateway: str
    seq: int
    id: str
    ts: datetime
    type: str
    room: str | None
    data: Mapping[str, Any]
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    gap: SeqRange | None = None

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Event:
        """From the decoded JSON payload (``room`` absent for a floor-level event)."""
        seq = _get(doc, "seq", int)
        if seq < 1:
            raise ValueError(f"seq {seq} < 1")
        return cls(
            gateway=_get(doc, "gateway", str),
            seq=seq,
            id=_get(doc, "id", str),
            ts=parse_ts(doc.get("ts")),
            type=_get(doc, "type", str),
            room=_opt(doc, "room", str),
            data=_get(doc, "data", dict),
            raw=doc,
        )


@dataclass(frozen=True, slots=True)
class Climate:
    """A room's thermostat values; None where the gateway does not know them."""

    temp_c: float | None
    setpoint_c: float | None
    mode: str | None
    fan: str | None
    power: bool | None


@dataclass(frozen=True, slots=True)
class RoomState:
    """``{root}/rooms/{room}/state``: one room's complete snapshot (None = unknown)."""

    room: str
    ts: datetime
    occupancy: str
    stay_id: str | None
    door: str | None
    deadbolt: bool | None
    lock_battery: int | None
    climate: Climate | None
    lights: Mapping[str, bool | None] | None
    keycard: bool | None
    dnd: bool | None
    mur: bool | None
    window_open: bool | None
    call: str
    devices: Mapping[str, str]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> RoomState:
        """From the decoded JSON payload."""
        climate = _opt(doc, "climate", dict)
        return cls(
            room=_get(doc, "room", str),
            ts=parse_ts(doc.get("ts")),
            occupancy=_get(doc, "occupancy", str),
            stay_id=_opt(doc, "stay_id", str),
            door=_opt(doc, "door", str),
            deadbolt=_opt(doc, "deadbolt", bool),
            lock_battery=_opt(doc, "lock_battery", int),
            climate=None
            if climate is None
            else Climate(
                temp_c=_opt_number(climate, "temp_c"),
                setpoint_c=_opt_number(climate, "setpoint_c"),
                mode=_opt(climate, "mode", str),
                fan=_opt(climate, "fan", str),
                power=_opt(climate, "power", bool),
            ),
            lights=_opt(doc, "lights", dict),
            keycard=_opt(doc, "keycard", bool),
            dnd=_opt(doc, "dnd", bool),
            mur=_opt(doc, "mur", bool),
            window_open=_opt(doc, "window_open", bool),
            call=_get(doc, "call", str),
            devices=_get(doc, "devices", dict),
            raw=doc,
        )


@dataclass(frozen=True, slots=True)
class Alarm:
    """An open alarm, from ``{root}/alarms/{alarm_id}`` (retained while open)."""

    alarm_id: str
    room: str | None
    kind: str
    point: str
    state: str
    level: int
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Alarm:
        """From the decoded JSON payload (also the ``data`` of an ``alarm.*`` event)."""
        return cls(
            alarm_id=_get(doc, "alarm_id", str),
            room=_opt(doc, "room", str),
            kind=_get(doc, "kind", str),
            point=_get(doc, "point", str),
            state=_get(doc, "state", str),
            level=_get(doc, "level", int),
            raised_at=parse_ts(doc.get("raised_at")),
            acknowledged_at=_opt_ts(doc, "acknowledged_at"),
            acknowledged_by=_opt(doc, "acknowledged_by", str),
            resolved_at=_opt_ts(doc, "resolved_at"),
            resolved_by=_opt(doc, "resolved_by", str),
            raw=doc,
        )


@dataclass(frozen=True, slots=True)
class AlarmCleared:
    """The retained topic of ``alarm_id`` was cleared: the alarm is resolved."""

    alarm_id: str


Change = FloorStatus | RoomState | Alarm | AlarmCleared
"""A change of a floor's retained state, as ``Floor.changes()`` yields them."""


@dataclass(frozen=True, slots=True)
class Reply:
    """``{root}/reply``: ``ok`` with ``result``, or a refusal with ``code`` and ``message``."""

    id: str
    ok: bool
    result: Mapping[str, Any]
    code: str | None
    message: str | None
    duplicate: bool
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def pending(self) -> list[str]:
        """Devices the command must still change when they answer again (``1203/lock``)."""
        value = self.result.get("pending", [])
        return [str(v) for v in value] if isinstance(value, list) else []

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Reply:
        """From the decoded JSON payload."""
        ok = _get(doc, "ok", bool)
        error = {} if ok else _get(doc, "error", dict)
        return cls(
            id=_get(doc, "id", str),
            ok=ok,
            result=_opt(doc, "result", dict) or {},
            code=None if ok else _get(error, "code", str),
            message=None if ok else _get(error, "message", str),
            duplicate=_opt(doc, "duplicate", bool) or False,
            raw=doc,
        )


def _get(doc: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = doc.get(key)
    # bool is an int in Python, never in JSON's sense
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def _opt(doc: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    return None if doc.get(key) is None else _get(doc, key, kind)


def _opt_number(doc: Mapping[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{key}: expected a number, got {value!r}")


def _opt_ts(doc: Mapping[str, Any], key: str) -> datetime | None:
    return None if doc.get(key) is None else parse_ts(doc[key])
