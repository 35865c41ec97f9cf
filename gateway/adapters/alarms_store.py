"""Alarms in SQLite: save (upsert) and load, for ``Store.write`` / ``Store.read``.

Synchronous functions on the caller's ``sqlite3.Connection`` (schema migration 1's
``alarms`` table): ``save_alarm`` belongs in the transaction that appends the alarm's
event. ``level_due_at`` holds ``Alarm.next_due_at``; the ``data`` JSON holds what the
table has no column for (``source``, ``latched``, ``faults``). Times are ``format_ts``
text (milliseconds, the core's precision), so a saved alarm loads back equal.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from gateway.core.alarms import Alarm, AlarmKind, AlarmState
from gateway.model.errors import StoreError
from gateway.model.time import format_ts

__all__ = ["load_alarm", "load_open_alarms", "save_alarm"]

_COLUMNS = (
    "alarm_id, room, kind, point, state, level, raised_at, acknowledged_at, acknowledged_by,"
    " resolved_at, resolved_by, level_due_at, data"
)


def save_alarm(conn: sqlite3.Connection, alarm: Alarm) -> None:
    """Insert or replace the row of ``alarm`` (keyed by ``alarm_id``)."""
    data = {"source": alarm.source, "latched": alarm.latched, "faults": list(alarm.faults)}
    conn.execute(
        f"INSERT INTO alarms ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        " ON CONFLICT (alarm_id) DO UPDATE SET room = excluded.room, kind = excluded.kind,"
        " point = excluded.point, state = excluded.state, level = excluded.level,"
        " raised_at = excluded.raised_at, acknowledged_at = excluded.acknowledged_at,"
        " acknowledged_by = excluded.acknowledged_by, resolved_at = excluded.resolved_at,"
        " resolved_by = excluded.resolved_by, level_due_at = excluded.level_due_at,"
        " data = excluded.data",
        (
            alarm.alarm_id,
            alarm.room,
            str(alarm.kind),
            alarm.point,
            str(alarm.state),
            alarm.level,
            format_ts(alarm.raised_at),
            _ts(alarm.acknowledged_at),
            alarm.acknowledged_by,
            _ts(alarm.resolved_at),
            alarm.resolved_by,
            _ts(alarm.next_due_at),
            json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        ),
    )


def load_open_alarms(conn: sqlite3.Connection) -> list[Alarm]:
    """Every alarm not resolved, oldest first (what ``Alarms.restore`` takes)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM alarms WHERE resolved_at IS NULL"  # noqa: S608
        " ORDER BY raised_at, alarm_id"
    )
    return [_alarm(row) for row in rows]


def load_alarm(conn: sqlite3.Connection, alarm_id: str) -> Alarm | None:
    """The alarm with this id, open or resolved; None if there is none."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM alarms WHERE alarm_id = ?",  # noqa: S608
        (alarm_id,),
    ).fetchone()
    return None if row is None else _alarm(row)


def _alarm(row: tuple[object, ...]) -> Alarm:
    (alarm_id, room, kind, point, state, level, raised_at, acked_at, acked_by,
     resolved_at, resolved_by, due_at, data) = row  # fmt: skip
    try:
        extra = _extra(data)
        return Alarm(
            alarm_id=str(alarm_id),
            room=None if room is None else str(room),
            kind=AlarmKind(str(kind)),
            point=str(point),
            state=AlarmState(str(state)),
            level=int(str(level)),
            raised_at=_parse(raised_at),
            acknowledged_at=_opt(acked_at),
            acknowledged_by=None if acked_by is None else str(acked_by),
            resolved_at=_opt(resolved_at),
            resolved_by=None if resolved_by is None else str(resolved_by),
            next_due_at=_opt(due_at),
            source=None if extra.get("source") is None else str(extra["source"]),
            latched=bool(extra.get("latched", False)),
            faults=_faults(extra.get("faults", [])),
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"alarm row {alarm_id!r} is unreadable: {exc}") from exc


def _extra(data: object) -> dict[str, object]:
    value = json.loads(str(data)) if data is not None else {}
    if not isinstance(value, dict):
        raise TypeError("data is not a JSON object")
    return value


def _faults(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError("data.faults is not a list")
    return tuple(str(p) for p in value)


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else format_ts(dt)


def _parse(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"timestamp {text!r} is not text")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return dt


def _opt(text: object) -> datetime | None:
    return None if text is None else _parse(text)
