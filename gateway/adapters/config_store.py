"""Remote configuration in the store: the record, the files applied remotely, the history.

Synchronous helpers on the caller's ``sqlite3.Connection``, run inside ``Store.write`` /
``Store.read`` like those of ``schema``. The record (gateway.core.remote_config) is one
JSON row; files are kept by sha256 while the record names them, and the newest
``KEEP_FILES`` besides; the history keeps its newest ``KEEP_HISTORY`` lines.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.core.remote_config import ConfigEntry, ConfigRecord, Pending
from gateway.model.time import format_ts, parse_ts

__all__ = [
    "KEEP_FILES",
    "KEEP_HISTORY",
    "HistoryRow",
    "history",
    "load_record",
    "load_text",
    "save",
    "save_record",
]

KEEP_FILES = 10
KEEP_HISTORY = 100


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One stored line of the configuration history."""

    id: int
    ts: str
    action: str
    sha256: str
    reason: str | None
    by: str | None


def load_record(conn: sqlite3.Connection) -> ConfigRecord:
    """The stored record (the local file, nothing pending, if none)."""
    row = conn.execute("SELECT record FROM config_state WHERE id = 1").fetchone()
    return ConfigRecord() if row is None else _record(json.loads(row[0]))


def save_record(conn: sqlite3.Connection, record: ConfigRecord) -> None:
    """Replace the stored record."""
    conn.execute(
        "INSERT INTO config_state (id, record) VALUES (1, ?)"
        " ON CONFLICT (id) DO UPDATE SET record = excluded.record",
        (json.dumps(_record_doc(record), separators=(",", ":")),),
    )


def save(
    conn: sqlite3.Connection,
    record: ConfigRecord,
    text: tuple[str, str] | None,
    entry: ConfigEntry | None,
    now: datetime,
) -> None:
    """Write the record, a file's text and a history line (one transaction: the caller's)."""
    if text is not None:
        sha, body = text
        conn.execute(
            "INSERT OR IGNORE INTO config_files (sha256, text, stored_at) VALUES (?, ?, ?)",
            (sha, body, format_ts(now)),
        )
    save_record(conn, record)
    if entry is not None:
        conn.execute(
            "INSERT INTO config_history (ts, action, sha256, reason, by) VALUES (?, ?, ?, ?, ?)",
            (format_ts(now), entry.action, entry.sha256, entry.reason, entry.by),
        )
    _purge(conn, record)


def load_text(conn: sqlite3.Connection, sha256: str) -> str | None:
    """A stored floor file's text, or None."""
    row = conn.execute("SELECT text FROM config_files WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else str(row[0])


def history(conn: sqlite3.Connection, limit: int) -> list[HistoryRow]:
    """The newest ``limit`` history lines, oldest first."""
    rows = conn.execute(
        "SELECT id, ts, action, sha256, reason, by FROM config_history ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [HistoryRow(*row) for row in reversed(rows)]


def _purge(conn: sqlite3.Connection, record: ConfigRecord) -> None:
    named = [s for s in (record.active, record.last_good) if s is not None]
    if record.pending is not None:
        named.append(record.pending.sha256)
    marks = ",".join("?" * len(named)) or "NULL"
    conn.execute(
        f"DELETE FROM config_files WHERE sha256 NOT IN ({marks}) AND sha256 NOT IN"  # noqa: S608 -- placeholders only
        " (SELECT sha256 FROM config_files ORDER BY stored_at DESC, rowid DESC LIMIT ?)",
        (*named, KEEP_FILES),
    )
    conn.execute(
        "DELETE FROM config_history WHERE id <="
        " (SELECT id FROM config_history ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (KEEP_HISTORY,),
    )


def _record_doc(record: ConfigRecord) -> dict[str, Any]:
    pending = record.pending
    return {
        "active": record.active,
        "last_good": record.last_good,
        "base": record.base,
        "pending": None
        if pending is None
        else {
            "sha256": pending.sha256,
            "confirm_s": pending.confirm_s,
            "offline_before": pending.offline_before,
            "phase": pending.phase,
            "deadline": None if pending.deadline is None else format_ts(pending.deadline),
            "by": pending.by,
            "failure": pending.failure,
        },
    }


def _record(doc: dict[str, Any]) -> ConfigRecord:
    p = doc.get("pending")
    pending = None
    if p is not None:
        pending = Pending(
            sha256=p["sha256"],
            confirm_s=int(p["confirm_s"]),
            offline_before=int(p["offline_before"]),
            phase=p["phase"],
            deadline=None if p.get("deadline") is None else parse_ts(p["deadline"]),
            by=p.get("by") or "central",
            failure=p.get("failure"),
        )
    return ConfigRecord(doc.get("active"), doc.get("last_good"), doc.get("base"), pending)
