"""Stays, their tokens and each lock's access-log position, in the store.

Synchronous helpers on the caller's ``sqlite3.Connection``, run inside ``Store.write`` /
``Store.read`` like those of ``schema``. Data minimisation: the gateway stores no guest
names; a stay's tokens are deleted the moment it ends (``save_stay`` of a checked-out
stay keeps none, whatever the value holds), and the ended stay's row is kept only until
``purge_stays`` (the audit horizon).
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime

from gateway.core.authz import Stay
from gateway.model.errors import StoreError
from gateway.model.time import format_ts

__all__ = ["load_log_heads", "load_stays", "purge_stays", "save_log_head", "save_stay"]


def save_stay(conn: sqlite3.Connection, stay: Stay) -> None:
    """Insert or update a stay and replace its tokens (none once it is checked out)."""
    conn.execute(
        "INSERT INTO stays (room, stay_id, valid_from, valid_until, checked_out_at,"
        " checkout_reason, generation, preferences, occupied_at, moved_to)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (room, stay_id) DO UPDATE SET"
        " valid_from = excluded.valid_from, valid_until = excluded.valid_until,"
        " checked_out_at = excluded.checked_out_at,"
        " checkout_reason = excluded.checkout_reason, generation = excluded.generation,"
        " preferences = excluded.preferences, occupied_at = excluded.occupied_at,"
        " moved_to = excluded.moved_to",
        (
            stay.room,
            stay.stay_id,
            format_ts(stay.valid_from),
            format_ts(stay.valid_until),
            _ts_or_none(stay.checked_out_at),
            stay.checkout_reason,
            stay.generation,
            json.dumps(dict(stay.preferences), separators=(",", ":"), allow_nan=False),
            _ts_or_none(stay.occupied_at),
            stay.moved_to,
        ),
    )
    conn.execute("DELETE FROM tokens WHERE room = ? AND stay_id = ?", (stay.room, stay.stay_id))
    if stay.checked_out_at is None:
        conn.executemany(
            "INSERT INTO tokens (room, stay_id, token) VALUES (?, ?, ?)",
            [(stay.room, stay.stay_id, token) for token in stay.tokens],
        )


def load_stays(conn: sqlite3.Connection) -> list[Stay]:
    """Every stored stay with its tokens (in the order saved), by room then valid_from."""
    tokens: dict[tuple[str, str], list[str]] = {}
    for room, stay_id, token in conn.execute(
        "SELECT room, stay_id, token FROM tokens ORDER BY rowid"
    ):
        tokens.setdefault((room, stay_id), []).append(token)
    rows = conn.execute(
        "SELECT room, stay_id, valid_from, valid_until, checked_out_at, checkout_reason,"
        " generation, preferences, occupied_at, moved_to FROM stays"
        " ORDER BY room, valid_from, stay_id"
    )
    out = []
    for room, stay_id, vf, vu, out_at, reason, gen, prefs, occ, moved_to in rows:
        if vf is None or vu is None:
            raise StoreError(f"stay {room}/{stay_id} has no valid_from/valid_until")
        preferences = json.loads(prefs) if prefs else {}
        if not isinstance(preferences, dict):
            raise StoreError(f"stay {room}/{stay_id}: preferences are not a JSON object")
        out.append(
            Stay(
                room=room,
                stay_id=stay_id,
                valid_from=_parse(vf),
                valid_until=_parse(vu),
                tokens=tuple(tokens.get((room, stay_id), ())),
                checked_out_at=_parse(out_at) if out_at else None,
                checkout_reason=reason,
                generation=int(gen),
                preferences=preferences,
                occupied_at=_parse(occ) if occ else None,
                moved_to=moved_to,
            )
        )
    return out


def purge_stays(conn: sqlite3.Connection, ended_before: datetime) -> int:
    """Delete stays checked out (or expired) before ``ended_before``; return how many."""
    return conn.execute(
        "DELETE FROM stays WHERE checked_out_at IS NOT NULL AND checked_out_at < ?",
        (format_ts(ended_before),),
    ).rowcount


def save_log_head(conn: sqlite3.Connection, device: str, head: int) -> None:
    """Record the newest access-log seq handled for a lock (``1203/lock``)."""
    conn.execute(
        "INSERT INTO lock_log_heads (device, head) VALUES (?, ?)"
        " ON CONFLICT (device) DO UPDATE SET head = excluded.head",
        (device, head),
    )


def load_log_heads(conn: sqlite3.Connection) -> dict[str, int]:
    """The newest access-log seq handled, per lock device."""
    return {
        device: int(head)
        for device, head in conn.execute("SELECT device, head FROM lock_log_heads")
    }


# The stay whose welcome scene ran, per room, lives in the point cache as the value of a
# pseudo-device ``ROOM/stay``, point ``welcomed`` (that is where it has always been kept).
_WELCOMED = "welcomed"


def save_welcomed(conn: sqlite3.Connection, room: str, stay_id: str) -> None:
    """The welcome scene ran for this stay of the room: never again for it."""
    conn.execute(
        "INSERT INTO point_values (device, point, value, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device, point)"
        " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (f"{room}/stay", _WELCOMED, json.dumps(stay_id), time.time()),
    )


def load_welcomed(conn: sqlite3.Connection) -> dict[str, str]:
    """Per room, the stay whose welcome scene ran."""
    rows = conn.execute("SELECT device, value FROM point_values WHERE point = ?", (_WELCOMED,))
    out: dict[str, str] = {}
    for device, value in rows:
        room, _, role = str(device).rpartition("/")
        if role == "stay" and room:
            out[room] = str(json.loads(value))
    return out


def _ts_or_none(dt: datetime | None) -> str | None:
    return None if dt is None else format_ts(dt)


def _parse(text: str) -> datetime:
    # format_ts writes "…Z"; fromisoformat reads it (3.11) as an aware UTC datetime.
    return datetime.fromisoformat(text)
