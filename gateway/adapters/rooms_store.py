"""Guest-room management on disk: each room's housekeeping status and hold, the ledger.

Called inside the committer's transaction (``save_*``) and at start or by the control
socket's readers (``load_*``). The ledger keeps one row per room and local day; rows
older than the retention are purged when a day's final row is written.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from datetime import date, timedelta

__all__ = [
    "load_latest_days",
    "load_ledger",
    "load_room_status",
    "save_ledger",
    "save_room_status",
]


def save_room_status(
    conn: sqlite3.Connection, room: str, housekeeping: str | None, hold_stay: str | None
) -> None:
    """A room's housekeeping status and set_energy hold, replacing what was saved."""
    conn.execute(
        "INSERT INTO room_status (room, housekeeping, hold_stay, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (room) DO UPDATE SET housekeeping = excluded.housekeeping,"
        " hold_stay = excluded.hold_stay, updated_at = excluded.updated_at",
        (room, housekeeping, hold_stay, time.time()),
    )


def load_room_status(conn: sqlite3.Connection) -> dict[str, tuple[str | None, str | None]]:
    """Per room: (housekeeping status, the stay a hold is for)."""
    rows = conn.execute("SELECT room, housekeeping, hold_stay FROM room_status")
    return {str(room): (hk, hold) for room, hk, hold in rows}


def save_ledger(
    conn: sqlite3.Connection,
    rows: Iterable[tuple[str, Mapping[str, object]]],
    keep_days: int | None = None,
) -> None:
    """Upsert day rows ``(room, data)`` (``data["date"]`` the day); purge old days."""
    newest: str | None = None
    for room, data in rows:
        day = str(data["date"])
        newest = max(newest or day, day)
        conn.execute(
            "INSERT INTO energy_ledger (room, day, data) VALUES (?, ?, ?)"
            " ON CONFLICT (room, day) DO UPDATE SET data = excluded.data",
            (room, day, json.dumps(data, sort_keys=True)),
        )
    if keep_days is not None and newest is not None:
        cut = date.fromisoformat(newest) - timedelta(days=keep_days)
        conn.execute("DELETE FROM energy_ledger WHERE day < ?", (cut.isoformat(),))


def load_latest_days(conn: sqlite3.Connection) -> dict[str, dict[str, object]]:
    """Per room, its newest day row (today's running totals, after a restart)."""
    rows = conn.execute(
        "SELECT l.room, l.data FROM energy_ledger l"
        " JOIN (SELECT room, MAX(day) AS day FROM energy_ledger GROUP BY room) m"
        " ON l.room = m.room AND l.day = m.day"
    )
    out: dict[str, dict[str, object]] = {}
    for room, data in rows:
        try:
            doc = json.loads(data)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            out[str(room)] = doc
    return out


def load_ledger(
    conn: sqlite3.Connection, since: date, room: str | None = None
) -> list[tuple[str, dict[str, object]]]:
    """Day rows from ``since`` on (one room's, or every room's), by room then day."""
    query = "SELECT room, data FROM energy_ledger WHERE day >= ?"
    args: list[object] = [since.isoformat()]
    if room is not None:
        query += " AND room = ?"
        args.append(room)
    out: list[tuple[str, dict[str, object]]] = []
    for r, data in conn.execute(query + " ORDER BY room, day", args):
        doc = json.loads(data)
        if isinstance(doc, dict):
            out.append((str(r), doc))
    return out
